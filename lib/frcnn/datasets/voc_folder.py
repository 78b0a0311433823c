"""Any VOCdevkit-style folder: <path>/{Annotations, JPEGImages, ImageSets/Main/<split>.txt}."""
import os

from .imdb import DatasetError, cache_key, cached, file_signature
from .pascal_voc import VOCStyle, xml_class_names


def scan_classes(path, cache_dir):
    """Sorted class names over every XML in <path>/Annotations (all splits, so train and test agree)."""
    ann = os.path.join(path, "Annotations")
    xmls = sorted(os.path.join(ann, f) for f in os.listdir(ann) if f.endswith(".xml"))
    if not xmls:
        raise DatasetError(f"{ann}: no .xml annotation files; add VOC-format annotations")

    def build():
        names = set()
        for x in xmls:
            try:
                names.update(xml_class_names(x))
            except DatasetError:  # unreadable: the data check reports it with the others
                pass
        names.discard("")
        return sorted(names)
    key = cache_key(ann, file_signature(xmls))
    return cached(cache_dir, "classes_" + os.path.basename(os.path.normpath(path)), key, build)


def read_classes_file(path):
    with open(path) as f:
        names = [ln.strip().lower() for ln in f if ln.strip() and not ln.startswith("#")]
    return [n for n in names if n != "__background__"]


class voc_folder(VOCStyle):
    """A VOC-format folder. Classes: `classes` if given, else <path>/classes.txt (one per line) if
    present, else the sorted names found in its annotations. Name: <folder basename>_<split>."""

    keep_empty_images = True

    def __init__(self, path, image_set, cfg, classes=None, use_07_metric=True):
        path = os.path.abspath(os.path.expanduser(path))
        for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
            if not os.path.isdir(os.path.join(path, sub)):
                raise DatasetError(f"{path}: not a VOC-format folder, {sub}/ is missing; expected "
                                   "Annotations/, JPEGImages/ and ImageSets/Main/<split>.txt")
        self.path = path
        if classes is None:
            cfile = os.path.join(path, "classes.txt")
            if os.path.isfile(cfile):
                classes = read_classes_file(cfile)
            else:
                classes = scan_classes(path, os.path.join(cfg.DATA_DIR, "cache"))
        classes = [c.lower().strip() for c in classes if c != "__background__"]
        if not classes:
            raise DatasetError(f"{path}: no object classes found in the annotations")
        name = f"{os.path.basename(os.path.normpath(path))}_{image_set}"
        super().__init__(name, cfg, [path], image_set, ["__background__"] + classes,
                         use_07_metric=use_07_metric)
