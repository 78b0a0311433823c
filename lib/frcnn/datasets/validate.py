"""Data set validation: every annotation and image read once, every problem reported in one run.

    report = check_voc(sources, "trainval", classes, cfg)       # or validate_imdb(imdb)
    print(report.format()); report.raise_if_errors()

Errors (training cannot use the set): unreadable or truncated XML, a missing <bndbox>, non-numeric
or non-finite coordinates, xmax < xmin, boxes outside the image, <size> unlike the image, missing,
empty, undecodable or truncated images, unknown classes, empty image sets, ids listed twice.
Warnings (training runs, results may suffer): tiny boxes, duplicate boxes, classes with very few
objects, images without objects, a class whose boxes do not fit the anchors at the training scale.

Training runs the same checks up front (ensure_valid, cached under DATA_DIR/cache by the files'
(path, mtime, size) signatures) and stops before the first iteration with every error listed.
"""
import math
import os
from collections import Counter, defaultdict

import cv2
import numpy as np

from frcnn.errors import DataError

from .pascal_voc import IMAGE_EXTS, parse_voc_xml  # noqa: F401  (the VOC XML checks sit beside the VOC data set)

ERROR, WARNING = "error", "warning"
FEW_OBJECTS = 5          # a class with fewer objects than this in a set gets a warning
DUPLICATE_IOU = 0.95     # two boxes of one class overlapping this much: one is a duplicate
ANCHOR_FIT_IOU = 0.5     # a box "fits" when some anchor shape reaches this IoU with it
TINY_PX = 4              # boxes narrower or shorter than this (original pixels) are suspicious
CHECK_VERSION = 2


class Issue:
    """One problem: level (error | warning), file, optional object index/name, problem, fix."""

    __slots__ = ("level", "file", "problem", "fix", "obj", "name", "kind")

    def __init__(self, level, file, problem, fix="", obj=None, name=None, kind=""):
        self.level, self.file, self.problem, self.fix = level, file, problem, fix
        self.obj, self.name, self.kind = obj, name, kind

    def where(self):
        w = self.file
        if self.obj is not None:
            w += (f": object {self.obj}" if isinstance(self.obj, int) else f": {self.obj}") \
                + (f" ('{self.name}')" if self.name is not None else "")
        return w

    def __str__(self):
        return f"{self.where()}: {self.problem}" + (f"; {self.fix}" if self.fix else "")

    def __repr__(self):
        return f"Issue({self.level}, {self})"

    def __getstate__(self):
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, d):
        for k in self.__slots__:
            setattr(self, k, d[k])


class Report:
    """Problems and counts of one image set."""

    def __init__(self, name):
        self.name = name
        self.issues = []
        self.num_images = 0
        self.num_objects = 0
        self.num_difficult = 0
        self.num_empty = 0  # images without objects: background images (negatives)
        self.class_counts = Counter()

    def add(self, level, file, problem, fix="", obj=None, name=None, kind=""):
        self.issues.append(Issue(level, file, problem, fix, obj, name, kind or problem[:40]))

    def error(self, *a, **k):
        self.add(ERROR, *a, **k)

    def warning(self, *a, **k):
        self.add(WARNING, *a, **k)

    def extend(self, other):
        self.issues += other.issues
        self.num_images += other.num_images
        self.num_objects += other.num_objects
        self.num_difficult += other.num_difficult
        self.num_empty += getattr(other, "num_empty", 0)
        self.class_counts.update(other.class_counts)

    @property
    def errors(self):
        return [i for i in self.issues if i.level == ERROR]

    @property
    def warnings(self):
        return [i for i in self.issues if i.level == WARNING]

    @property
    def ok(self):
        return not self.errors

    def summary(self):
        cls = ", ".join(f"{c} {n}" for c, n in sorted(self.class_counts.items()))
        return (f"{self.name}: {self.num_images} images, {self.num_objects} objects"
                + (f" (+{self.num_difficult} difficult)" if self.num_difficult else "")
                + (f", {self.num_empty} background image(s) without objects"
                   if getattr(self, "num_empty", 0) else "")
                + (f" [{cls}]" if cls else "")
                + f": {len(self.errors)} error(s), {len(self.warnings)} warning(s)")

    def format(self, warnings=True, limit=None):
        """'error: ...' / 'warning: ...' lines (errors first), then the summary line."""
        shown = self.errors + (self.warnings if warnings else [])
        lines = [f"{i.level}: {i}" for i in shown[:limit]]
        if limit is not None and len(shown) > limit:
            lines.append(f"... and {len(shown) - limit} more")
        return "\n".join(lines + [self.summary()])

    def warning_counts(self):
        """{kind: count} of the warnings, for a short note during training."""
        return Counter(i.kind for i in self.warnings)

    def raise_if_errors(self, hint="", limit=200):
        errs = self.errors
        if not errs:
            return
        lines = [str(e) for e in errs[:limit]]
        if len(errs) > limit:
            lines.append(f"... and {len(errs) - limit} more")
        raise DataError(f"{self.name}: {len(errs)} problem(s) in the data set, listed below; fix "
                        f"them{hint}\n" + "\n".join(lines))


# -- images -----------------------------------------------------------------------------------
def check_image(path, report, decode=True):
    """(width, height) of the image as cv2.imread sees it, or None after adding an error.

    decode=False reads the header only (size); decode=True also decodes the pixels and checks the
    file is complete (JPEG end-of-image marker, PNG IEND chunk), since cv2 silently fills a cut
    JPEG with grey.
    """
    from .imdb import image_size

    fix_file = "re-export or re-copy the image, or remove its id from the image set"
    if not os.path.exists(path):
        report.error(path, "image file not found", "add it or remove its id from the image set",
                     kind="missing image")
        return None
    try:
        nbytes = os.path.getsize(path)
    except OSError as e:
        report.error(path, f"cannot read image ({e.strerror})", fix_file, kind="unreadable image")
        return None
    if nbytes == 0:
        report.error(path, "empty image file (0 bytes)", fix_file, kind="empty image")
        return None
    if not decode:
        try:
            return image_size(path)
        except DataError as e:
            report.error(path, str(e).split(": ", 1)[-1], "", kind="undecodable image")
            return None
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        report.error(path, f"cannot read image ({e.strerror})", fix_file, kind="unreadable image")
        return None
    tail = data.rstrip(b"\0\r\n\t ")
    if data[:2] == b"\xff\xd8" and not tail.endswith(b"\xff\xd9"):
        report.error(path, f"truncated JPEG: no end-of-image marker ({nbytes} bytes; the missing "
                     "part would be decoded as grey)", fix_file, kind="truncated image")
        return None
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-16:]:
        report.error(path, f"truncated PNG: no IEND chunk ({nbytes} bytes)", fix_file,
                     kind="truncated image")
        return None
    im = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if im is None:
        report.error(path, "cv2 cannot decode this image", "re-save it as JPEG or PNG",
                     kind="undecodable image")
        return None
    return int(im.shape[1]), int(im.shape[0])


def _box_iou(a, b):
    """a [N, 4], b [M, 4] 0-based inclusive boxes -> IoU [N, M]."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area = lambda x: (x[:, 2] - x[:, 0] + 1) * (x[:, 3] - x[:, 1] + 1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def anchor_shapes(cfg):
    """(w, h) [A, 2] of the RPN anchors (cfg.ANCHOR_SCALES x ANCHOR_RATIOS, base 16)."""
    from frcnn.rpn.generate_anchors import generate_anchors

    a = np.asarray(generate_anchors(16, cfg.ANCHOR_RATIOS, cfg.ANCHOR_SCALES), np.float64)
    return np.stack([a[:, 2] - a[:, 0] + 1, a[:, 3] - a[:, 1] + 1], 1)


def best_anchor_iou(wh, anchors):
    """Best IoU of boxes of size wh [N, 2] with any anchor shape [A, 2], both centred at one point
    (the best case over positions, up to the stride). -> [N]."""
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    inter = np.minimum(wh[:, None, 0], anchors[None, :, 0]) * np.minimum(wh[:, None, 1],
                                                                         anchors[None, :, 1])
    union = (wh[:, 0] * wh[:, 1])[:, None] + (anchors[:, 0] * anchors[:, 1])[None, :] - inter
    return (inter / union).max(1) if len(anchors) else np.zeros(len(wh))


def train_scale(w, h, cfg):
    """Scale the training blob gives a w x h image (TRAIN.SCALES[0], TRAIN.MAX_SIZE)."""
    s = float(cfg.TRAIN.SCALES[0]) / min(w, h)
    if round(s * max(w, h)) > cfg.TRAIN.MAX_SIZE:
        s = float(cfg.TRAIN.MAX_SIZE) / max(w, h)
    return s


def _set_warnings(report, boxes_by_class, classes, cfg, where):
    """Class-level warnings: few objects, boxes that fit no anchor at the training scale."""
    for c in classes:
        n = report.class_counts.get(c, 0)
        if n == 0:
            report.warning(where, f"class '{c}' has no objects in this set",
                           "add examples or remove the class from the class list", kind="empty class")
        elif n < FEW_OBJECTS:
            report.warning(where, f"class '{c}' has only {n} object(s) in this set",
                           "add examples (a detector needs dozens per class)", kind="few objects")
    if cfg is None:
        return
    anchors = anchor_shapes(cfg)
    for c, wh in sorted(boxes_by_class.items()):
        wh = np.asarray(wh, np.float64).reshape(-1, 2)
        if not len(wh):
            continue
        fit = best_anchor_iou(wh, anchors) >= ANCHOR_FIT_IOU
        if fit.mean() < 0.5:
            side = np.sqrt(wh[:, 0] * wh[:, 1])
            asz = np.sqrt(anchors[:, 0] * anchors[:, 1])
            report.warning(where, f"class '{c}': {int(fit.sum())} of {len(wh)} boxes reach IoU "
                           f"{ANCHOR_FIT_IOU} with an anchor shape at the training scale (boxes "
                           f"{np.percentile(side, 5):.0f}-{np.percentile(side, 95):.0f} px, anchors "
                           f"{asz.min():.0f}-{asz.max():.0f} px, ratios {list(cfg.ANCHOR_RATIOS)})",
                           "set ANCHOR_SCALES / ANCHOR_RATIOS (or TRAIN.SCALES) to cover them",
                           kind="anchor fit")


def read_set_ids(path, report):
    """Ids of an ImageSets/Main/<split>.txt; errors for a missing/empty file, ids listed twice."""
    if not os.path.isfile(path):
        folder = os.path.dirname(path)
        have = sorted(f[:-4] for f in os.listdir(folder) if f.endswith(".txt")) \
            if os.path.isdir(folder) else []
        report.error(path, f"image set file not found (splits in {folder}: {have})",
                     "create it with one image id per line", kind="missing image set")
        return []
    with open(path) as f:
        lines = [ln.split()[0] for ln in f.read().splitlines() if ln.strip()]
    if not lines:
        report.error(path, "the image set is empty", "list one image id per line", kind="empty set")
    seen = {}
    ids = []
    for n, i in enumerate(lines, 1):
        if i in seen:
            report.error(path, f"image id '{i}' is listed twice (lines {seen[i]} and {n})",
                         "remove the second line", kind="duplicate id")
            continue
        seen[i] = n
        ids.append(i)
    return ids


def image_file(src, index):
    base = os.path.join(src, "JPEGImages", index)
    for ext in IMAGE_EXTS:
        if os.path.exists(base + ext):
            return base + ext
    return base + ".jpg"


def image_warnings(report, file, kept, wh, cfg, boxes_by_class, had_error=False, labels=None):
    """Counts and per-image warnings for the valid objects `kept` [(name, (x1, y1, x2, y2))] of
    one image of size wh (or None); collects box sizes at the training scale per class.
    labels: how to name object k in messages (default: its index)."""
    if not kept and not had_error:
        report.warning(file, "no objects (or only difficult ones)",
                       "fine for background images; otherwise annotate it", kind="no objects")
    lab = labels or list(range(len(kept)))
    for k, (n, (x1, y1, x2, y2)) in enumerate(kept):
        report.num_objects += 1
        report.class_counts[n] += 1
        bw, bh = x2 - x1 + 1, y2 - y1 + 1
        if bw < TINY_PX or bh < TINY_PX:
            report.warning(file, f"tiny box {bw:g}x{bh:g} px",
                           "check it is not a stray click; remove it if so", obj=lab[k], name=n,
                           kind="tiny box")
        if wh is not None and cfg is not None:
            s = train_scale(wh[0], wh[1], cfg)
            boxes_by_class[n].append((bw * s, bh * s))
    if len(kept) > 1:
        b = np.array([bx for _, bx in kept])
        names = [n for n, _ in kept]
        iou = _box_iou(b, b)
        for i in range(len(kept)):
            for j in range(i + 1, len(kept)):
                if names[i] == names[j] and iou[i, j] >= DUPLICATE_IOU:
                    report.warning(file, f"duplicate of {'object ' if isinstance(lab[i], int) else ''}"
                                   f"{lab[i]} (IoU {iou[i, j]:.2f})", "remove one of the two",
                                   obj=lab[j], name=names[j], kind="duplicate box")


def check_voc(sources, image_set, classes, cfg, name=None, decode=True, items=None):
    """Validate a VOC-format image set over the folders `sources`.

    classes: class names (background optional) or None (any name accepted).
    items: optional list of (index, xml_path, image_path) to check instead of the set files.
    -> Report (with num_images, num_objects, class_counts and every issue).
    """
    sources = [os.path.abspath(s) for s in sources]
    report = Report(name or f"{os.path.basename(sources[0])}:{image_set}")
    if items is None:
        items = []
        seen = set()
        for src in sources:
            missing = [d for d in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main"))
                       if not os.path.isdir(os.path.join(src, d))]
            if missing:
                report.error(src, f"not a VOC-format folder, {', '.join(m + '/' for m in missing)} "
                             "missing", "expected Annotations/, JPEGImages/ and "
                             "ImageSets/Main/<split>.txt", kind="not a VOC folder")
                continue
            for index in read_set_ids(os.path.join(src, "ImageSets", "Main", image_set + ".txt"),
                                      report):
                if index not in seen:
                    seen.add(index)
                    items.append((index, os.path.join(src, "Annotations", index + ".xml"),
                                  image_file(src, index)))
    c2i = None
    if classes is not None:
        names = [c for c in classes if c != "__background__"]
        c2i = {"__background__": 0, **{c: i + 1 for i, c in enumerate(names)}}
    boxes_by_class = defaultdict(list)
    for index, xml_path, image_path in items:
        report.num_images += 1
        start = len(report.issues)
        wh = check_image(image_path, report, decode=decode)
        objs = parse_voc_xml(xml_path, image_path, wh, c2i, report)
        if objs is None:
            continue
        kept = [(n, b) for n, b, d in objs if not d]
        report.num_difficult += len(objs) - len(kept)
        had_error = any(i.level == ERROR for i in report.issues[start:])
        report.num_empty += not kept and not had_error
        image_warnings(report, xml_path, kept, wh, cfg, boxes_by_class, had_error)
    if items and not report.num_objects:
        report.error(sources[0], f"no objects in the {report.num_images} images of this set",
                     "annotate the images", kind="empty set")
    cls_names = [c for c in (classes or sorted(report.class_counts)) if c != "__background__"]
    _set_warnings(report, boxes_by_class, cls_names, cfg, os.path.join(
        sources[0], "ImageSets", "Main", image_set + ".txt"))
    return report


def _finite_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_FIX_COCO_ANN = "fix or remove the annotation in the json"


def _coco_categories(data, ann_file, report):
    """Map category id -> name, reporting entries the rest of the check cannot use."""
    cats = {}
    for k, c in enumerate(data.get("categories") or []):
        cid, cname = c.get("id") if isinstance(c, dict) else None, \
            str(c.get("name", "")).strip() if isinstance(c, dict) else ""
        if cid is None or not cname:
            report.error(ann_file, "needs an 'id' and a 'name'", "fix the category",
                         obj=f"category {k}", kind="bad category")
        elif cid in cats:
            report.error(ann_file, f"category id {cid} is used twice ('{cats[cid]}', '{cname}')",
                         "give each category its own id", obj=f"category {k}",
                         kind="duplicate id")
        else:
            cats[cid] = cname
    if not cats:
        report.error(ann_file, "no categories", "export the class list too", kind="empty set")
    return cats


def _coco_images(data, ann_file, report):
    """Map image id -> image entry, reporting entries without an id or file, or a reused id."""
    images = {}
    for k, im in enumerate(data.get("images") or []):
        iid = im.get("id") if isinstance(im, dict) else None
        if iid is None or not im.get("file_name"):
            report.error(ann_file, "needs an 'id' and a 'file_name'", "fix the image entry",
                         obj=f"image {k}", kind="bad image entry")
        elif iid in images:
            report.error(ann_file, f"image id {iid} is used twice ('{images[iid]['file_name']}', "
                         f"'{im['file_name']}')", "give each image its own id", obj=f"image {k}",
                         kind="duplicate id")
        else:
            images[iid] = im
    return images


def _coco_annotations_by_image(data, ann_file, images, in_split, report):
    """Group the split's annotations by image id as (position, annotation), checking every
    annotation's shape, id and image_id (also those outside the split)."""
    anns_of = defaultdict(list)
    seen_ann = {}
    for k, a in enumerate(data.get("annotations") or []):
        if not isinstance(a, dict):
            report.error(ann_file, "not an object", _FIX_COCO_ANN, obj=f"annotation {k}",
                         kind="bad json")
            continue
        aid = a.get("id")
        if aid is not None:
            if aid in seen_ann:
                report.error(ann_file, f"annotation id {aid} is used twice (annotations "
                             f"{seen_ann[aid]} and {k})", "give each annotation its own id",
                             obj=f"annotation {k}", kind="duplicate id")
            seen_ann.setdefault(aid, k)
        iid = a.get("image_id")
        if iid not in images:
            report.error(ann_file, f"image_id {iid!r} is not in 'images'", _FIX_COCO_ANN,
                         obj=f"annotation {k} (id {aid})", kind="unknown image")
            continue
        if iid in in_split:
            anns_of[iid].append((k, a))
    return anns_of


def _coco_box(a, where, cats, bounds, path, ann_file, report):
    """One annotation's (class name, 0-based inclusive box) to train on; None for a box that is
    unusable (reported) or a crowd (counted as difficult)."""
    cname = cats.get(a.get("category_id"))
    if cname is None:
        report.error(ann_file, f"unknown category_id {a.get('category_id')!r} (known: "
                     f"{sorted(cats)})", "fix the category_id or add the category",
                     obj=where, kind="unknown class")
        return None
    bb = a.get("bbox")
    if not isinstance(bb, (list, tuple)) or len(bb) != 4 or \
            not all(_finite_number(v) for v in bb):
        report.error(ann_file, f"bbox {bb!r} is not 4 finite numbers [x, y, w, h]",
                     _FIX_COCO_ANN, obj=where, name=cname, kind="bad coordinate")
        return None
    x, y, w, h = (float(v) for v in bb)
    if w <= 0 or h <= 0:
        report.error(ann_file, f"bbox {bb} has width or height <= 0 (x2 < x1)",
                     "fix the box (COCO boxes are [x, y, width, height])", obj=where,
                     name=cname, kind="inverted box")
        return None
    if bounds is not None and (x < -1 or y < -1 or x + w > bounds[0] + 1
                               or y + h > bounds[1] + 1):
        report.error(ann_file, f"bbox {bb} lies outside the {bounds[0]}x{bounds[1]} "
                     f"image {path}", f"clip it to the image (x + width <= {bounds[0]}, "
                     f"y + height <= {bounds[1]})", obj=where, name=cname,
                     kind="box outside image")
        return None
    if a.get("iscrowd"):
        report.num_difficult += 1
        return None
    return cname, (x, y, x + max(w - 1, 0), y + max(h - 1, 0))


def _check_coco_image(iid, im, anns, image_dir, cats, cfg, ann_file, decode, boxes_by_class,
                      report):
    """Check one image of the split (file, json size) and its annotations' boxes."""
    report.num_images += 1
    path = os.path.join(image_dir, im["file_name"])
    start = len(report.issues)
    wh = check_image(path, report, decode=decode)
    jw, jh = im.get("width"), im.get("height")
    if wh is not None and (jw, jh) != tuple(wh):
        report.error(ann_file, f"width x height {jw}x{jh} but {path} is {wh[0]}x{wh[1]}",
                     "fix the image's width/height in the json (or the image, if it was "
                     "resized or rotated)", obj=f"image id {iid}", kind="size mismatch")
    bounds = wh if wh is not None else ((jw, jh) if _finite_number(jw) and _finite_number(jh)
                                        else None)
    kept, labels = [], []
    for k, a in anns:
        where = f"annotation {k} (id {a.get('id')}, image '{im['file_name']}')"
        got = _coco_box(a, where, cats, bounds, path, ann_file, report)
        if got is None:
            continue
        kept.append(got)
        labels.append(where)
    had_error = any(i.level == ERROR for i in report.issues[start:])
    image_warnings(report, f"{ann_file}: image '{im['file_name']}'", kept, wh, cfg,
                   boxes_by_class, had_error, labels=labels)


def check_coco(ann_file, image_dir, split, cfg, name=None, decode=True, data=None):
    """Validate a COCO-format json + image folder (the images of `split`, see coco_json).

    Annotation problems name the json, the annotation's position in 'annotations', its id and
    image file. -> Report.
    """
    from .coco_json import load_json, split_ids

    report = Report(name or f"{os.path.basename(ann_file)}:{split}")
    if data is None:
        try:
            data = load_json(ann_file)
        except DataError as e:
            file, _, rest = str(e).partition(": ")
            report.error(file, rest, kind="unreadable json")
            return report
    if not os.path.isdir(image_dir):
        report.error(image_dir, "image folder not found", "give the folder the json's file_name "
                     "entries are relative to", kind="missing image")
    cats = _coco_categories(data, ann_file, report)
    images = _coco_images(data, ann_file, report)
    ids = split_ids(list(images.values()), split)
    if not ids:
        report.error(ann_file, f"no images in split '{split}'", "add images to the json",
                     kind="empty set")
    anns_of = _coco_annotations_by_image(data, ann_file, images, set(ids), report)
    boxes_by_class = defaultdict(list)
    for iid in ids:
        _check_coco_image(iid, images[iid], anns_of[iid], image_dir, cats, cfg, ann_file, decode,
                          boxes_by_class, report)
    if ids and not report.num_objects:
        report.error(ann_file, f"no objects in the {report.num_images} images of split '{split}'",
                     "annotate the images", kind="empty set")
    _set_warnings(report, boxes_by_class, [cats[c] for c in sorted(cats)], cfg, ann_file)
    return report


def check_listing(listing, records, classes, cfg, name=None, decode=True):
    """Validate the `records` of a labelled folder (datasets.folder.Listing): the problems its
    reader found (folder-wide and per image), then every image (present, decodable, the size the
    annotation states) and every box (known class, x2 >= x1, inside the image). -> Report."""
    report = Report(name or listing.path)
    report.issues += listing.issues
    known = set(classes) - {"__background__"}
    boxes_by_class = defaultdict(list)
    for rec in records:
        report.num_images += 1
        start = len(report.issues)
        report.issues += rec.issues
        file = rec.ann_file or rec.image
        wh = check_image(rec.image, report, decode=decode)
        if wh is not None and rec.size is not None and tuple(rec.size) != tuple(wh):
            report.error(file, f"the annotation says {rec.size[0]}x{rec.size[1]} but {rec.image} "
                         f"is {wh[0]}x{wh[1]} (WxH)", "fix the size in the annotation (or the "
                         "image, if it was resized or rotated)", kind="size mismatch")
        kept, labels = [], []
        for cname, box, difficult, label in rec.objects:
            if not _box_ok(report, file, cname, box, label, known, wh or rec.size, rec.image):
                continue
            if difficult:
                report.num_difficult += 1
                continue
            kept.append((cname, box))
            labels.append(label)
        had_error = any(i.level == ERROR for i in report.issues[start:])
        report.num_empty += not kept and not had_error
        image_warnings(report, file, kept, wh, cfg, boxes_by_class, had_error, labels=labels)
    if records and not report.num_objects:
        report.error(listing.path, f"no objects in the {report.num_images} images of this set",
                     "annotate the images", kind="empty set")
    _set_warnings(report, boxes_by_class, [c for c in classes if c != "__background__"], cfg,
                  listing.path)
    return report


def _box_ok(report, file, cname, box, label, known, bounds, image):
    """Add the error of one box, if any: unknown class, x2 < x1, outside the image. -> ok."""
    x1, y1, x2, y2 = box
    where = f"box (0-based x1 {x1:g}, y1 {y1:g}, x2 {x2:g}, y2 {y2:g})"
    if cname not in known:
        report.error(file, f"unknown class '{cname}' (known: {sorted(known)})", "fix the label or "
                     "add the class to the class list", obj=label, name=cname, kind="unknown class")
        return False
    if not all(math.isfinite(v) for v in box):
        report.error(file, f"{where} is not finite", "fix the coordinates", obj=label, name=cname,
                     kind="bad coordinate")
        return False
    if x2 < x1 or y2 < y1:
        report.error(file, f"{where} is less than one pixel wide or high", "fix or remove the box",
                     obj=label, name=cname, kind="inverted box")
        return False
    if bounds is not None and (x1 < 0 or y1 < 0 or x2 > bounds[0] - 1 or y2 > bounds[1] - 1):
        report.error(file, f"{where} lies outside the {bounds[0]}x{bounds[1]} image {image}",
                     "clip the box to the image", obj=label, name=cname, kind="box outside image")
        return False
    return True


# -- imdb level: cached checks used by training ---------------------------------------------
def validate_imdb(imdb, decode=True):
    """Report for a constructed imdb (VOC-style or COCO-json; others: an empty report)."""
    if hasattr(imdb, "validate"):
        return imdb.validate(decode=decode)
    return Report(imdb.name)


def cached_report(imdb):
    """validate_imdb(imdb), cached under imdb.cache_path by the signatures (path, mtime, size) of
    its annotation, image and image-set files and the cfg keys the warnings use."""
    from .imdb import cache_key, cached

    if not hasattr(imdb, "validation_signature"):
        return Report(imdb.name)
    cfg = imdb.cfg
    key = cache_key(CHECK_VERSION, imdb.validation_signature(), tuple(cfg.TRAIN.SCALES),
                    cfg.TRAIN.MAX_SIZE, tuple(cfg.ANCHOR_SCALES), tuple(cfg.ANCHOR_RATIOS))
    return cached(imdb.cache_path, f"{imdb.name}_check", key, lambda: validate_imdb(imdb),
                  classes=(Report, Issue, Counter))


def ensure_valid(imdb, log=print):
    """Validate `imdb` once per version of its files (cached_report): print a short note about
    warnings, raise DataError listing every error. -> Report."""
    report = cached_report(imdb)
    if report.warnings and log:
        kinds = ", ".join(f"{n} {k}" for k, n in report.warning_counts().most_common())
        log(f"data check {imdb.name}: {len(report.warnings)} warning(s) ({kinds}); "
            "tools/check_dataset.py lists them")
    report.raise_if_errors(hint=" (tools/check_dataset.py checks again)")
    return report
