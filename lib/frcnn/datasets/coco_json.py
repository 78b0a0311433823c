"""Any COCO-format json (as labelling tools export): coco_json:<annotations.json>:<image_dir>[:<split>].

split: all (default when the name gives none), or trainval / test by a fixed rule: the images
sorted by file name, every 5th (positions 4, 9, 14, ...) is a test image. Two separate jsons (a
train and a test export) are simply two specs with split `all`.
Classes: the json's categories (sorted by id). Image ids are kept as text in `image_index`.
Evaluation: pycocotools (AP@[.5:.95], the value returned) and VOC AP at IoU 0.5 per class
(printed, in self.voc_aps), so the figures compare with the VOC-folder runs.
Validation (datasets.validate.check_coco): every image and annotation is checked once and every
problem listed; training runs it first (cached by the files' signatures).
"""
import json
import os

import numpy as np

from .coco import _quiet, coco
from .imdb import DatasetError, cache_key, cached, check_all_boxes, file_signature, imdb

SPLITS = ("all", "trainval", "test")
TEST_EVERY = 5


def parse_spec(spec):
    """'<json>:<image_dir>[:<split>]' -> (json, image_dir, split)."""
    parts = spec.split(":")
    split = "all"
    if len(parts) >= 3 and parts[-1] in SPLITS:
        split = parts.pop()
    if len(parts) < 2:
        raise DatasetError(f"coco_json:{spec}: expected coco_json:<annotations.json>:<image_dir>"
                           f"[:{'|'.join(SPLITS)}]")
    return ":".join(parts[:-1]), parts[-1], split


def split_ids(images, split):
    """Image ids of `split` from the json's image list (dicts with id, file_name)."""
    ims = sorted(images, key=lambda im: (str(im.get("file_name", "")), im.get("id")))
    if split == "all":
        return [im["id"] for im in ims]
    test = {im["id"] for k, im in enumerate(ims) if k % TEST_EVERY == TEST_EVERY - 1}
    return [im["id"] for im in ims if (im["id"] in test) == (split == "test")]


def load_json(path):
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: COCO annotation file not found; give the json your "
                           "labelling tool exported")
    try:
        with open(path) as f:
            d = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: unreadable json ({e}); re-export it") from None
    if not isinstance(d, dict) or not isinstance(d.get("images"), list) or \
            not isinstance(d.get("categories"), list):
        raise DatasetError(f"{path}: not a COCO detection json (needs 'images', 'annotations', "
                           "'categories' lists); export COCO format")
    d.setdefault("annotations", [])
    return d


class coco_json(coco):
    """A COCO-format json + image folder (see the module docstring)."""

    keep_empty_images = True

    def __init__(self, spec, cfg):
        from pycocotools.coco import COCO

        ann, image_dir, split = parse_spec(spec)
        self._ann_file = os.path.abspath(os.path.expanduser(ann))
        self._image_dir = os.path.abspath(os.path.expanduser(image_dir))
        self._split = split
        base = os.path.splitext(os.path.basename(self._ann_file))[0]
        imdb.__init__(self, f"{base}_{split}", cfg)
        data = load_json(self._ann_file)
        if not os.path.isdir(self._image_dir):
            raise DatasetError(f"{self._image_dir}: image folder not found; give the folder the "
                               "json's file_name entries are relative to")
        self._data = data
        try:
            self._COCO = _quiet(COCO, self._ann_file)
        except Exception as e:  # noqa: BLE001 - pycocotools asserts / KeyErrors on bad input
            raise DatasetError(f"{self._ann_file}: pycocotools cannot index it ({type(e).__name__}: "
                               f"{e}); run tools/check_dataset.py on it for the details") from None
        cats = sorted(self._COCO.loadCats(self._COCO.getCatIds()), key=lambda c: c["id"])
        if not cats:
            raise DatasetError(f"{self._ann_file}: no categories; export the class list too")
        self._classes = tuple(["__background__"] + [str(c["name"]).strip() for c in cats])
        self._class_to_coco_cat_id = {str(c["name"]).strip(): c["id"] for c in cats}
        self._image_index = [str(i) for i in split_ids(data["images"], split)]
        if not self._image_index:
            raise DatasetError(f"{self._ann_file}: no images in split '{split}'")
        self.use_07_metric = False

    def image_path_from_index(self, index):
        return os.path.join(self._image_dir, self._COCO.imgs[int(index)]["file_name"])

    def validation_signature(self):
        ims = [self.image_path_from_index(i) for i in self._image_index]
        return cache_key(self.name, self._split, self._image_index,
                         file_signature([self._ann_file]), file_signature(ims))

    def validate(self, decode=True):
        from .validate import check_coco

        return check_coco(self._ann_file, self._image_dir, self._split, self.cfg,
                          name=self.name, decode=decode, data=self._data)

    def gt_roidb(self):
        from .validate import ensure_valid

        ensure_valid(self)
        key = cache_key(self.name, self._image_index, file_signature([self._ann_file]))
        roidb = cached(self.cache_path, f"{self.name}_gt_roidb", key,
                       lambda: [self._load_annotation(i) for i in self._image_index])
        for e in roidb:
            e["image"] = self.image_path_from_index(e["index"])
        return roidb

    def evaluate_detections(self, all_boxes, output_dir):
        """COCOeval on this split's images (printed; returned: AP@[.5:.95]) and VOC AP at IoU 0.5
        per class (printed, in self.voc_aps / self.voc_map)."""
        check_all_boxes(all_boxes, self.num_classes, self.num_images)
        gt = [e for e in self.roidb if not e.get("flipped")]
        self.voc_aps = voc_aps(all_boxes, gt, self.num_classes)
        valid = [a for a in self.voc_aps.values() if not np.isnan(a)]
        self.voc_map = float(np.mean(valid)) if valid else 0.0
        print("VOC AP (IoU 0.5, area under the precision envelope):")
        for c, cls in enumerate(self._classes[1:], 1):
            print(f"AP@0.5 for {cls} = {self.voc_aps[c]:.4f}")
        print(f"Mean AP@0.5 (VOC) = {self.voc_map:.4f}")
        full = self._COCO
        try:  # COCOeval over this split only
            self._COCO = _split_coco(full, [int(i) for i in self._image_index])
            return super().evaluate_detections(all_boxes, output_dir)
        finally:
            self._COCO = full


def _split_coco(full, ids):
    from pycocotools.coco import COCO

    keep = set(ids)
    c = COCO()
    c.dataset = {"images": [full.imgs[i] for i in ids],
                 "annotations": [a for a in full.dataset["annotations"] if a["image_id"] in keep],
                 "categories": full.dataset["categories"]}
    _quiet(c.createIndex)
    return c


def voc_aps(all_boxes, roidb, num_classes, ovthresh=0.5):
    """VOC AP per class (area under the precision envelope) from gt roidb entries (crowd boxes,
    overlaps -1, are 'difficult': neither TP nor FP). -> {class index: AP (nan without gt)}."""
    from .voc_eval import voc_ap

    out = {}
    for c in range(1, num_classes):
        gts, npos = [], 0
        for e in roidb:
            m = e["gt_classes"] == c
            crowd = (e["gt_overlaps"][m] < 0).any(axis=1) if m.any() else np.zeros(0, bool)
            gts.append((e["boxes"][m].astype(np.float64), crowd, np.zeros(m.sum(), bool)))
            npos += int((~crowd).sum())
        dets = [(i, d) for i in range(len(roidb)) for d in np.asarray(all_boxes[c][i]).reshape(-1, 5)]
        if npos == 0:
            out[c] = float("nan")
            continue
        dets.sort(key=lambda x: -x[1][4])
        tp, fp = np.zeros(len(dets)), np.zeros(len(dets))
        for k, (i, d) in enumerate(dets):
            g, crowd, used = gts[i]
            if len(g):
                iw = np.clip(np.minimum(g[:, 2], d[2]) - np.maximum(g[:, 0], d[0]) + 1, 0, None)
                ih = np.clip(np.minimum(g[:, 3], d[3]) - np.maximum(g[:, 1], d[1]) + 1, 0, None)
                inter = iw * ih
                uni = ((d[2] - d[0] + 1) * (d[3] - d[1] + 1)
                       + (g[:, 2] - g[:, 0] + 1) * (g[:, 3] - g[:, 1] + 1) - inter)
                ov = inter / uni
                j = int(np.argmax(ov))
                if ov[j] > ovthresh:
                    if crowd[j]:
                        continue
                    if not used[j]:
                        used[j] = True
                        tp[k] = 1
                    else:
                        fp[k] = 1
                    continue
            fp[k] = 1
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        rec = tp / npos
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        out[c] = float(voc_ap(rec, prec, use_07_metric=False))
    return out
