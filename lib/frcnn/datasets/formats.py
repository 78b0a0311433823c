"""A plain path is a data set: which format a folder (or json) holds, and its reader.

    fmt = detect_format(path)        # voc | labelimg | yolo | labelme | cvat | coco
    listing = read_folder(path, fmt)  # datasets.folder.Listing (not for voc: see voc_folder)

Looked for in this order: a VOC devkit (Annotations/, JPEGImages/, ImageSets/Main/), CVAT's
annotations.xml, a YOLO data.yaml (or obj.names / classes.txt with .txt labels), COCO instance
jsons, LabelMe jsons, labelImg's VOC XMLs.
"""
import os

from .folder import is_image, walk
from .imdb import DatasetError

FORMATS = ("voc", "labelimg", "yolo", "labelme", "cvat", "coco")
FORMAT_NAMES = {"voc": "VOC devkit", "labelimg": "labelImg (VOC XML per image)",
                "yolo": "YOLO / Ultralytics", "labelme": "LabelMe", "cvat": "CVAT for images 1.1",
                "coco": "COCO json"}


def _is_voc_devkit(path):
    return all(os.path.isdir(os.path.join(path, d))
               for d in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")))


def _has_yolo_labels(path, files):
    """A data.yaml with names, or a class list (obj.names, classes.txt) and a .txt label named
    like an image (labelImg writes classes.txt in VOC mode too: that alone is not YOLO)."""
    from .yolo import LIST_FILES, NAMES_FILES, find_yaml

    if find_yaml(path):
        return True
    if not any(os.path.isfile(os.path.join(path, n)) for n in NAMES_FILES):
        return False
    stems = {os.path.splitext(os.path.basename(f))[0] for f in files if is_image(f)}
    return any(f.endswith(".txt") and os.path.basename(f) not in NAMES_FILES + tuple(LIST_FILES)
               and os.path.splitext(os.path.basename(f))[0] in stems for f in files)


def detect_format(path):
    """The format of a data set path (see the module docstring); DatasetError when none."""
    from .coco_folder import load_coco_json
    from .cvat import ANNOTATION_FILE, is_cvat_xml
    from .labelimg import is_voc_xml
    from .labelme import is_labelme_json

    if os.path.isfile(path):
        if path.endswith(".json") and load_coco_json(path) is not None:
            return "coco"
        if path.endswith(".xml") and is_cvat_xml(path):
            return "cvat"
        raise DatasetError(f"{path}: not a data set file; give a COCO json, a CVAT "
                           "annotations.xml or the folder that holds the data set")
    if not os.path.isdir(path):
        raise DatasetError(f"{path}: no such file or folder; give the folder of a labelled data set")
    if _is_voc_devkit(path):
        return "voc"
    cvat = os.path.join(path, ANNOTATION_FILE)
    if os.path.isfile(cvat) and is_cvat_xml(cvat):
        return "cvat"
    files = walk(path)
    if _has_yolo_labels(path, files):
        return "yolo"
    jsons = [f for f in files if f.endswith(".json")]
    if any(load_coco_json(os.path.join(path, f)) is not None for f in jsons):
        return "coco"
    if any(is_labelme_json(os.path.join(path, f)) for f in jsons):
        return "labelme"
    if any(f.endswith(".xml") and is_voc_xml(os.path.join(path, f)) for f in files):
        return "labelimg"
    raise DatasetError(f"{path}: not a labelled data set: found {_found(files)}; looked for a VOC "
                       "devkit (Annotations/, JPEGImages/, ImageSets/Main/), labelImg XMLs beside "
                       "the images, YOLO (data.yaml, or obj.names / classes.txt + .txt labels), "
                       "LabelMe jsons, CVAT annotations.xml, COCO instance jsons; export the "
                       "labels in one of these or name the format (yolo:, labelme:, cvat:, "
                       "coco_json:, voc_folder:)")


def _found(files):
    n_im = sum(is_image(f) for f in files)
    exts = {}
    for f in files:
        if not is_image(f):
            e = os.path.splitext(f)[1] or os.path.basename(f)
            exts[e] = exts.get(e, 0) + 1
    other = ", ".join(f"{n} {e}" for e, n in sorted(exts.items(), key=lambda x: -x[1])[:5])
    return f"{n_im} image(s)" + (f" and {other} file(s)" if other else ", nothing else")


def read_folder(path, fmt):
    """The Listing of a data set path in format `fmt` ('voc': for conversion; training reads
    a VOC devkit with voc_folder)."""
    path = os.path.abspath(os.path.expanduser(path))
    if fmt == "voc":
        from .labelimg import read_voc_devkit

        return read_voc_devkit(path)
    if fmt == "yolo":
        from .yolo import read_yolo

        return read_yolo(path)
    if fmt == "labelme":
        from .labelme import read_labelme

        return read_labelme(path)
    if fmt == "cvat":
        from .cvat import read_cvat

        if os.path.isfile(path):
            return read_cvat(os.path.dirname(path), path)
        return read_cvat(path)
    if fmt == "coco":
        from .coco_folder import read_coco_folder

        if os.path.isfile(path):
            return read_coco_folder(os.path.dirname(path), path)
        return read_coco_folder(path)
    if fmt == "labelimg":
        from .labelimg import read_labelimg

        return read_labelimg(path)
    raise DatasetError(f"{path}: unknown format '{fmt}'; use one of {', '.join(FORMATS)}")
