"""PASCAL VOC (VOCdevkit layout) and the shared VOC-format loader with validation."""
import math
import os
import xml.etree.ElementTree as ET

import numpy as np

from .imdb import DatasetError, cache_key, cached, check_all_boxes, file_signature, gt_entry, imdb
from .voc_eval import voc_eval, write_voc_results_file

VOC_CLASSES = ("__background__", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
               "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
               "pottedplant", "sheep", "sofa", "train", "tvmonitor")

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG", ".bmp", ".BMP")


def read_image_set(path):
    """Image ids (first token of each non-empty line) of ImageSets/Main/<split>.txt."""
    if not os.path.isfile(path):
        folder = os.path.dirname(path)
        have = sorted(f[:-4] for f in os.listdir(folder) if f.endswith(".txt")) \
            if os.path.isdir(folder) else []
        raise DatasetError(f"{path}: image set file not found (splits in {folder}: {have}); "
                           "create it with one image id per line")
    with open(path) as f:
        ids = [line.split()[0] for line in f.read().splitlines() if line.strip()]
    if not ids:
        raise DatasetError(f"{path}: the image set is empty; list one image id per line")
    return ids


def _xml_root(xml_path):
    if not os.path.isfile(xml_path):
        raise DatasetError(f"{xml_path}: annotation file not found; add it or remove the image id "
                           "from the image set")
    try:
        return ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as e:
        raise DatasetError(f"{xml_path}: unreadable annotation XML ({e}); fix or regenerate the "
                           "file") from None


def xml_class_names(xml_path):
    return [(o.findtext("name") or "").lower().strip() for o in _xml_root(xml_path).findall("object")]


# -- VOC annotation checks (datasets.validate reports them) --------------------------------------------------------------------------
def _coord(bb, key):
    """(value, None) or (None, problem) for <key> of a <bndbox>."""
    t = bb.findtext(key)
    if t is None or not t.strip():
        return None, f"<{key}> is missing"
    try:
        v = float(t)
    except ValueError:
        return None, f"<{key}> is '{t.strip()}', not a number"
    if not math.isfinite(v):
        return None, f"<{key}> is '{t.strip()}', not a finite number"
    return v, None


def _int_field(node, key):
    t = node.findtext(key)
    if t is None:
        return None
    try:
        return int(float(t))
    except ValueError:
        return None


def _read_voc_root(xml_path, report):
    """The XML's root element, or None after reporting why the file cannot be read."""
    if not os.path.isfile(xml_path):
        report.error(xml_path, "annotation file not found",
                     "add it or remove the image id from the image set", kind="missing annotation")
        return None
    try:
        return ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        report.error(xml_path, f"unreadable annotation XML ({e}; truncated or not XML)",
                     "fix or regenerate the file", kind="unreadable XML")
        return None
    except OSError as e:
        report.error(xml_path, f"cannot read annotation XML ({e.strerror})",
                     "fix the file's permissions", kind="unreadable XML")
        return None


def _voc_bounds(root, xml_path, image_path, wh, report):
    """The (w, h) boxes must lie in: the image's, else the XML's <size>; reports a mismatch."""
    size = root.find("size")
    xwh = None
    if size is not None:
        xw, xh = _int_field(size, "width"), _int_field(size, "height")
        if xw and xh:
            xwh = (xw, xh)
    if wh is not None and xwh is not None and xwh != tuple(wh):
        report.error(xml_path, f"<size> says {xwh[0]}x{xwh[1]} but {image_path} is "
                     f"{wh[0]}x{wh[1]} (WxH)", "fix the <size> in the XML (or the image, if it "
                     "was resized or rotated)", kind="size mismatch")
    return wh if wh is not None else xwh


def _voc_object(i, obj, xml_path, image_path, wh, bounds, class_to_ind, report):
    """Object `i` as (name, 0-based box, difficult), or None after reporting its problems (an
    unknown class is reported and its box still checked, so one pass shows every problem)."""
    name = (obj.findtext("name") or "").lower().strip()
    if not name:
        report.error(xml_path, "no <name> (class)", "add the class name or remove the object",
                     obj=i, kind="no class name")
        return None
    bad = False
    if class_to_ind is not None and class_to_ind.get(name, 0) == 0:
        known = [c for c in class_to_ind if c != "__background__"]
        report.error(xml_path, f"unknown class '{name}' (known: {known})", "fix the <name> or "
                     "add the class to the class list (classes.txt)", obj=i, name=name,
                     kind="unknown class")
        bad = True
    bb = obj.find("bndbox")
    if bb is None:
        report.error(xml_path, "no <bndbox>", "add xmin/ymin/xmax/ymax or remove the object",
                     obj=i, name=name, kind="no bndbox")
        return None
    vals, probs = [], []
    for k in ("xmin", "ymin", "xmax", "ymax"):
        v, p = _coord(bb, k)
        vals.append(v)
        if p:
            probs.append(p)
    if probs:
        report.error(xml_path, ", ".join(probs), "<bndbox> needs numeric, finite xmin, ymin, "
                     "xmax, ymax (1-based pixels)", obj=i, name=name, kind="bad coordinate")
        return None
    x1, y1, x2, y2 = (v - 1 for v in vals)
    box = f"box (xmin {x1 + 1:g}, ymin {y1 + 1:g}, xmax {x2 + 1:g}, ymax {y2 + 1:g})"
    if x2 < x1 or y2 < y1:
        report.error(xml_path, f"{box} has xmax < xmin or ymax < ymin",
                     "swap or fix the coordinates", obj=i, name=name, kind="inverted box")
        return None
    if bounds is not None:
        w, h = bounds
        if x1 < 0 or y1 < 0 or x2 > w - 1 or y2 > h - 1:
            what = image_path if wh is not None else "(per <size>)"
            report.error(xml_path, f"{box} lies outside the {w}x{h} image {what}",
                         f"VOC coordinates are 1-based: clip them to 1..{w} (x) and 1..{h} (y)",
                         obj=i, name=name, kind="box outside image")
            return None
    if bad:
        return None
    diff = _int_field(obj, "difficult") or 0
    return name, (x1, y1, x2, y2), bool(diff)


def parse_voc_xml(xml_path, image_path, wh, class_to_ind, report):
    """Check one VOC XML against its image size `wh` ((w, h), or None if the image is bad: the
    XML's <size> is used then). Adds every problem to `report`.

    -> list of (name, (x1, y1, x2, y2) 0-based, difficult) of the objects without errors, or None
       if the XML cannot be read.
    """
    root = _read_voc_root(xml_path, report)
    if root is None:
        return None
    bounds = _voc_bounds(root, xml_path, image_path, wh, report)
    objects = [_voc_object(i, obj, xml_path, image_path, wh, bounds, class_to_ind, report)
               for i, obj in enumerate(root.findall("object"))]
    return [o for o in objects if o is not None]


def load_voc_annotation(xml_path, image_path, class_to_ind, decode=False):
    """Parse and validate one VOC XML; gt entry with 0-based boxes, difficult objects dropped.

    Returns {'boxes' [G,4] f32, 'gt_classes' [G] i32, 'gt_overlaps' [G,K] f32, 'seg_areas' [G] f32,
    'flipped' False, 'width', 'height', 'num_difficult'}. Raises DatasetError listing every
    problem of the file (naming the file, the object and the fix); see datasets.validate.
    """
    from .validate import Report, check_image

    report = Report(os.path.basename(xml_path))
    wh = check_image(image_path, report, decode=decode)
    objs = parse_voc_xml(xml_path, image_path, wh, class_to_ind, report)
    if report.errors:
        errs = report.errors
        raise DatasetError("\n".join(str(e) for e in errs))
    return gt_entry(objs, class_to_ind, *wh)


def evaluate_voc(imdb, all_boxes, output_dir, image_set, annopath=None, recs=None,
             cleanup=False):
    """VOC AP per class of `imdb`'s detections: writes <output_dir>/results/comp4_det_<image_set>_
    <cls>.txt, prints AP per class and the mean, sets imdb.aps and imdb.pr_curves; -> mAP
    (classes without gt in the set are left out). The gt comes from the XMLs at `annopath`
    (a format string) or from `recs` ({image id: parse_rec-style objects})."""
    res_dir = os.path.join(output_dir, "results")
    os.makedirs(res_dir, exist_ok=True)
    template = os.path.join(res_dir, f"comp4_det_{image_set}_{{:s}}.txt")
    # the images evaluated are this imdb's (tools may cut image_index to the first N)
    imageset = os.path.join(res_dir, f"{image_set}_image_set.txt")
    with open(imageset, "w") as f:
        f.write("".join(i + "\n" for i in imdb.image_index))
    cachedir = os.path.join(imdb.cache_path, "voc_eval")
    aps = {}
    imdb.pr_curves = {}
    print(f"VOC07 metric? {'Yes' if imdb.use_07_metric else 'No'}")
    for c, cls in enumerate(imdb.classes):
        if cls == "__background__":
            continue
        write_voc_results_file(template.format(cls), imdb.image_index, all_boxes[c])
        rec, prec, ap = voc_eval(template, annopath, imageset, cls, cachedir,
                                 ovthresh=0.5, use_07_metric=imdb.use_07_metric, recs=recs)
        aps[cls] = ap
        imdb.pr_curves[cls] = (rec, prec)  # for the PR plots of test_net / reval
        print(f"AP for {cls} = {ap:.4f}")
    valid = [a for a in aps.values() if not np.isnan(a)]
    mAP = float(np.mean(valid)) if valid else 0.0
    print(f"Mean AP = {mAP:.4f}")
    imdb.aps = aps
    if cleanup:
        for cls in imdb.classes[1:]:
            os.remove(template.format(cls))
    return mAP


class VOCStyle(imdb):
    """An image set in one or more VOC-format folders (Annotations/, JPEGImages/, ImageSets/Main/).

    sources: list of folders; image ids are looked up in each (ids must not collide).
    """

    def __init__(self, name, cfg, sources, image_set, classes, use_07_metric=True):
        super().__init__(name, cfg, classes)
        self._image_set = image_set
        self._sources = [os.path.abspath(s) for s in sources]
        self.use_07_metric = use_07_metric
        self._source_of = {}
        self._image_index = []
        for src in self._sources:
            for index in read_image_set(self.image_set_file(src)):
                if index in self._source_of:
                    continue
                self._source_of[index] = src
                self._image_index.append(index)
        self._image_paths = {}

    def image_set_file(self, src=None):
        return os.path.join(src or self._sources[0], "ImageSets", "Main", self._image_set + ".txt")

    def annotation_path(self, index):
        return os.path.join(self._source_of[index], "Annotations", index + ".xml")

    def image_path_from_index(self, index):
        """<src>/JPEGImages/<index>.jpg (or another image extension when that is what exists)."""
        p = self._image_paths.get(index)
        if p is not None:
            return p
        base = os.path.join(self._source_of[index], "JPEGImages", index)
        p = base + ".jpg"
        if not os.path.exists(p):
            for ext in IMAGE_EXTS:
                if os.path.exists(base + ext):
                    p = base + ext
                    break
        self._image_paths[index] = p
        return p

    def _signature(self):
        xmls = [self.annotation_path(i) for i in self._image_index]
        ims = [self.image_path_from_index(i) for i in self._image_index]
        return cache_key(self.name, self._classes, self._image_index, file_signature(xmls),
                         file_signature(ims))

    def validation_signature(self):
        sets = [self.image_set_file(s) for s in self._sources]
        return cache_key(self._signature(), file_signature(sets))

    def validate(self, decode=True):
        """Every problem of this image set (datasets.validate.check_voc) -> Report."""
        from .validate import check_voc

        return check_voc(self._sources, self._image_set, self._classes, self.cfg, name=self.name,
                         decode=decode)

    def gt_roidb(self):
        """Validated gt entries, cached under DATA_DIR/cache keyed by the image set, the class list
        and the (path, mtime, size) of every XML and image. The whole set is checked first
        (datasets.validate.ensure_valid, cached too): a DatasetError lists every error."""
        from .validate import ensure_valid

        ensure_valid(self)

        def build():
            c2i = self.class_to_ind
            out = []
            for index in self._image_index:
                e = load_voc_annotation(self.annotation_path(index),
                                        self.image_path_from_index(index), c2i)
                e["index"] = index
                out.append(e)
            return out
        roidb = cached(self.cache_path, f"{self.name}_gt_roidb", self._signature(), build)
        for e in roidb:
            e["image"] = self.image_path_from_index(e["index"])
        return roidb

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate_detections(self, all_boxes, output_dir, cleanup=False):
        """Writes <output_dir>/results/comp4_det_<split>_<cls>.txt (VOC format), prints AP per
        class and the mean; returns mAP (classes without gt in the set are left out)."""
        check_all_boxes(all_boxes, self.num_classes, self.num_images)
        if len(self._sources) != 1:
            raise DatasetError(f"{self.name} combines several folders; evaluate on one test set "
                               "(e.g. voc_2007_test)")
        annopath = os.path.join(self._sources[0], "Annotations", "{:s}.xml")
        return evaluate_voc(self, all_boxes, output_dir, self._image_set, annopath=annopath,
                            cleanup=cleanup)


class pascal_voc(VOCStyle):
    """voc_<year>_<split>: data/VOCdevkit<year>/VOC<year>; year '0712' = 2007 + 2012."""

    def __init__(self, image_set, year, cfg, devkit_path=None):
        years = ["2007", "2012"] if year == "0712" else [year]
        if devkit_path is not None:
            sources = [os.path.join(devkit_path, f"VOC{y}") for y in years]
        else:
            sources = [os.path.join(cfg.DATA_DIR, f"VOCdevkit{y}", f"VOC{y}") for y in years]
        for s in sources:
            if not os.path.isdir(s):
                raise DatasetError(f"{s}: VOC data not found; put VOCdevkit there (e.g. symlink "
                                   f"data/VOCdevkit{os.path.basename(s)[3:]} to your VOCdevkit)")
        super().__init__(f"voc_{year}_{image_set}", cfg, sources, image_set, VOC_CLASSES,
                         use_07_metric=year != "0712" and int(year) < 2010)
        self._year = year
