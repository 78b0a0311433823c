"""A labelled folder in any format a labelling tool exports, read into one form (a Listing of
Records: image, split, boxes) and served as an imdb (labelled_folder).

Boxes in a Record are the reference's: 0-based pixel corners, both inclusive (width x2 - x1 + 1).
The readers (yolo, labelme, cvat, labelimg, coco_folder) map their format's coordinates into that
form (docs/DATA.md) and snap them to 1/100 pixel, so a box that was a whole pixel in one format
reads back as exactly that pixel from any other. Evaluation is the VOC folders' (VOC07 AP at
IoU 0.5), so the same boxes give the same mAP whatever format carried them.
"""
import os

from .imdb import DatasetError, cache_key, check_all_boxes, file_signature, gt_entry, image_size, imdb
from .splits import split_by_name_hash
from .validate import ERROR, WARNING, Issue

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# folder / subset names labelling tools use for the splits, and the split each one means
SPLIT_NAMES = {"train": "train", "training": "train", "train2017": "train", "val": "val",
               "valid": "val", "validation": "val", "val2017": "val", "test": "test",
               "testing": "test", "test2017": "test"}
TEST_FRACTION = 0.2  # of a folder without its own split, by name hash (splits.split_by_name_hash)


def is_image(name):
    return name.lower().endswith(IMAGE_EXTS)


def snap(v):
    """A coordinate on the 1/100 pixel grid (exact for whole pixels: see the module docstring)."""
    return round(float(v), 2) + 0.0


def edges_to_box(x0, y0, x1, y1, size=None, tol=0.5):
    """Pixel-edge corners (the left edge of pixel 0 is 0, a box over pixels 0..9 ends at 10), as
    COCO, YOLO, LabelMe and CVAT store them -> 0-based inclusive (x1, y1, x2, y2). Corners less
    than `tol` pixels outside the image `size` (w, h) are clipped (rounding of the export)."""
    x0, x1 = sorted((snap(x0), snap(x1)))
    y0, y1 = sorted((snap(y0), snap(y1)))
    if size is not None:
        w, h = size
        x0 = 0.0 if -tol <= x0 < 0 else x0
        y0 = 0.0 if -tol <= y0 < 0 else y0
        x1 = float(w) if w < x1 <= w + tol else x1
        y1 = float(h) if h < y1 <= h + tol else y1
    return x0, y0, x1 - 1, y1 - 1


def split_of_path(rel):
    """The split a relative path names in one of its folders (images/train/a.jpg -> train)."""
    for part in reversed(os.path.dirname(rel).replace("\\", "/").split("/")):
        if part.lower() in SPLIT_NAMES:
            return SPLIT_NAMES[part.lower()]
    return None


def walk(root):
    """Relative paths of every file under root (hidden folders skipped), sorted."""
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        out += [os.path.relpath(os.path.join(d, f), root) for f in files if not f.startswith(".")]
    return sorted(out)


class _Issues:
    def error(self, file, problem, fix="", obj=None, name=None, kind=""):
        self.issues.append(Issue(ERROR, file, problem, fix, obj, name, kind or problem[:40]))

    def warning(self, file, problem, fix="", obj=None, name=None, kind=""):
        self.issues.append(Issue(WARNING, file, problem, fix, obj, name, kind or problem[:40]))


class Record(_Issues):
    """One image: index (its name without extension), image path, split (train | val | test or
    None), objects [(class name, (x1, y1, x2, y2) 0-based inclusive, difficult, label naming the
    object in messages)], size (w, h) the annotation states (or None), the annotation file, and
    the problems the reader found."""

    def __init__(self, index, image, split=None, ann_file=None, size=None):
        self.index, self.image, self.split, self.ann_file = index, image, split, ann_file
        self.size = size
        self.objects = []
        self.issues = []

    def add(self, name, box, difficult=False, label=None):
        self.objects.append((name, tuple(float(v) for v in box), bool(difficult),
                             label if label is not None else len(self.objects)))


class Listing(_Issues):
    """Everything a reader found in a folder: fmt (its prefix: yolo, labelme, ...), description
    (for the one-line summary), classes (in the format's order), records, folder-level issues, the
    annotation files read (their signatures key the checks' cache)."""

    def __init__(self, path, fmt, description):
        self.path, self.fmt, self.description = path, fmt, description
        self.classes = []
        self.records = []
        self.issues = []
        self.files = []
        self.own_split = False

    def finish(self):
        """Names unique, records sorted by name, a split for every record (-> self)."""
        by_index = {}
        for r in self.records:
            by_index.setdefault(r.index, []).append(r)
        for index, rs in by_index.items():
            if len(rs) > 1:
                paths = ", ".join(r.image for r in rs)
                self.error(rs[0].image, f"{len(rs)} images named '{index}' ({paths})",
                           "rename them: an image's name (without extension) must be unique in "
                           "the data set", kind="duplicate name")
        self.records = sorted((rs[0] for rs in by_index.values()), key=lambda r: r.index)
        self.own_split = any(r.split in ("val", "test") for r in self.records)
        if not self.own_split:  # no test side of its own: a fixed share by name hash
            _, test = split_by_name_hash([r.index for r in self.records], TEST_FRACTION)
            test = set(test)
            for r in self.records:
                r.split = "test" if r.index in test else "train"
        return self

    @property
    def test_split(self):
        """The folder's split served as 'test': its test split, else its val split."""
        return "test" if any(r.split == "test" for r in self.records) else "val"

    def select(self, split):
        """Records of a split: trainval / test (the two sides), train, val, all."""
        test = self.test_split
        if split == "all":
            return list(self.records)
        if split == "trainval":
            return [r for r in self.records if r.split != test]
        if split == "test":
            return [r for r in self.records if r.split == test]
        if split in ("train", "val"):
            return [r for r in self.records if r.split == split]
        raise DatasetError(f"{self.path}: no split '{split}'; use trainval, test, train, val or all")

    def counts(self):
        """'train 160 / val 40 images' (or '0 images')."""
        n = {s: sum(r.split == s for r in self.records) for s in ("train", "val", "test")}
        sides = " / ".join(f"{s} {n[s]}" for s in ("train", "val", "test") if n[s])
        return f"{sides or 0} images"

    def summary(self):
        """<path>: YOLO (data.yaml), 1 class, train 160 / val 40 images (test side: val)."""
        how = f"test side: {self.test_split}" if self.own_split else \
            f"no split of its own: {int(TEST_FRACTION * 100)}% test by name hash"
        k = len(self.classes)
        return (f"{self.path}: {self.description}, {k} class{'es' if k != 1 else ''}, "
                f"{self.counts()} ({how})")


class labelled_folder(imdb):
    """The records of one split of a Listing (trainval, test, train, val, all). Name:
    <folder>_<format>_<split>. Images without objects are kept for training by default
    (TRAIN.KEEP_EMPTY_IMAGES 'auto'): they are negatives."""

    keep_empty_images = True

    def __init__(self, listing, split, cfg):
        base = os.path.basename(os.path.normpath(listing.path))
        super().__init__(f"{base}_{listing.fmt}_{split}", cfg,
                         ["__background__"] + list(listing.classes))
        self.listing = listing
        self._image_set = split
        self._records = listing.select(split)
        if not self._records:
            raise DatasetError(f"{listing.path}: no images in split '{split}' (the folder has "
                               f"{listing.counts()}); add labelled images, or name another split")
        self._record_of = {r.index: r for r in self._records}
        self._image_index = [r.index for r in self._records]
        self.use_07_metric = True

    def image_path_from_index(self, index):
        return self._record_of[index].image

    def validation_signature(self):
        ims = [r.image for r in self._records]
        return cache_key(self.name, self._classes, self._image_index, file_signature(ims),
                         file_signature(self.listing.files),
                         [str(i) for i in self.listing.issues],
                         [str(i) for r in self._records for i in r.issues])

    def validate(self, decode=True):
        from .validate import check_listing

        return check_listing(self.listing, self._records, self._classes, self.cfg,
                             name=self.name, decode=decode)

    def gt_roidb(self):
        """The checked records as gt entries (datasets.validate.ensure_valid first: a DatasetError
        lists every problem)."""
        from .validate import ensure_valid

        ensure_valid(self)
        c2i = self.class_to_ind
        out = []
        for r in self._records:
            e = gt_entry([o[:3] for o in r.objects], c2i, *image_size(r.image))
            e["index"], e["image"] = r.index, r.image
            out.append(e)
        return out

    def voc_recs(self):
        """{image: objects} as voc_eval's parse_rec reads them from a VOC XML (1-based, whole
        pixels), so the AP is the one of the same boxes in a VOC folder."""
        return {r.index: [{"name": n, "difficult": int(d), "pose": None, "truncated": 0,
                           "bbox": [int(v + 1) for v in b]} for n, b, d, _ in r.objects]
                for r in self._records}

    def evaluate_detections(self, all_boxes, output_dir, cleanup=False):
        """As a VOC folder (pascal_voc.evaluate_voc); the split's image list is written beside
        the results (results/<split>_image_set.txt)."""
        from .pascal_voc import evaluate_voc

        check_all_boxes(all_boxes, self.num_classes, self.num_images)
        return evaluate_voc(self, all_boxes, output_dir, self._image_set, recs=self.voc_recs(),
                            cleanup=cleanup)
