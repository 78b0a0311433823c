"""MS COCO through pycocotools: coco_<year>_<split> over DATA_DIR/coco/{annotations, images}."""
import contextlib
import io
import json
import os

import numpy as np

from .imdb import DatasetError, cache_key, cached, check_all_boxes, file_signature, imdb

# py-faster-rcnn's view map: these annotation files index images of another folder.
_VIEW_MAP = {"minival2014": "val2014", "valminusminival2014": "val2014",
             "test-dev2015": "test2015", "test-dev2017": "test2017"}


def _quiet(fn, *args, **kw):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kw)


class coco(imdb):
    """coco_<year>_<image_set>; annotations/instances_<image_set><year>.json. Image ids are kept
    as strings in `image_index` (the COCO id as text)."""

    def __init__(self, image_set, year, cfg, data_path=None):
        from pycocotools.coco import COCO

        super().__init__(f"coco_{year}_{image_set}", cfg)
        self._year, self._image_set = year, image_set
        self._data_path = data_path or os.path.join(cfg.DATA_DIR, "coco")
        coco_name = image_set + year
        self._data_name = _VIEW_MAP.get(coco_name, coco_name)
        self._ann_file = os.path.join(self._data_path, "annotations",
                                      f"{'image_info' if 'test' in image_set else 'instances'}"
                                      f"_{coco_name}.json")
        if not os.path.isfile(self._ann_file):
            raise DatasetError(f"{self._ann_file}: COCO annotation file not found; put the COCO "
                               f"annotations under {self._data_path}/annotations")
        try:
            self._COCO = _quiet(COCO, self._ann_file)
        except (ValueError, KeyError, TypeError) as e:
            raise DatasetError(f"{self._ann_file}: not a valid COCO json ({e})") from None
        cats = self._COCO.loadCats(self._COCO.getCatIds())
        self._classes = tuple(["__background__"] + [c["name"] for c in cats])
        self._class_to_coco_cat_id = {c["name"]: c["id"] for c in cats}
        ids = self._COCO.getImgIds()
        self._image_index = [str(i) for i in ids]
        if not ids:
            raise DatasetError(f"{self._ann_file}: no images in this COCO set")

    def image_path_from_index(self, index):
        info = self._COCO.imgs[int(index)]
        return os.path.join(self._data_path, "images", self._data_name, info["file_name"])

    def gt_roidb(self):
        """Boxes cleaned as in py-faster-rcnn (clip, drop empty); crowd boxes get overlaps -1 so
        they are neither fg nor bg."""
        key = cache_key(self.name, file_signature([self._ann_file]))
        roidb = cached(self.cache_path, f"{self.name}_gt_roidb", key,
                       lambda: [self._load_annotation(i) for i in self._image_index])
        for e in roidb:
            e["image"] = self.image_path_from_index(e["index"])
        return roidb

    def _load_annotation(self, index):
        img_id = int(index)
        info = self._COCO.imgs[img_id]
        width, height = int(info["width"]), int(info["height"])
        objs = self._COCO.loadAnns(self._COCO.getAnnIds(imgIds=[img_id], iscrowd=None))
        cat_to_ind = {self._class_to_coco_cat_id[c]: i for i, c in enumerate(self._classes) if i}
        boxes, classes, crowd, areas = [], [], [], []
        for obj in objs:
            x, y, w, h = obj["bbox"]
            x1, y1 = max(0.0, x), max(0.0, y)
            x2 = min(width - 1.0, x1 + max(0.0, w - 1.0))
            y2 = min(height - 1.0, y1 + max(0.0, h - 1.0))
            if obj.get("area", w * h) > 0 and x2 >= x1 and y2 >= y1:
                boxes.append((x1, y1, x2, y2))
                classes.append(cat_to_ind[obj["category_id"]])
                crowd.append(bool(obj.get("iscrowd", 0)))
                areas.append(float(obj.get("area", w * h)))
        g = len(boxes)
        boxes = np.array(boxes, np.float32).reshape(g, 4)
        gt_classes = np.array(classes, np.int32)
        overlaps = np.zeros((g, self.num_classes), np.float32)
        overlaps[np.arange(g), gt_classes] = 1.0
        overlaps[np.array(crowd, bool)] = -1.0
        return {"boxes": boxes, "gt_classes": gt_classes, "gt_overlaps": overlaps,
                "seg_areas": np.array(areas, np.float32),
                "flipped": False, "width": width, "height": height, "index": index}

    def evaluate_detections(self, all_boxes, output_dir):
        """Writes detections_<name>_results.json and runs COCOeval (bbox); prints AP@[.5:.95] per
        class; returns AP@[.5:.95] over all classes."""
        from pycocotools.cocoeval import COCOeval

        check_all_boxes(all_boxes, self.num_classes, self.num_images)
        os.makedirs(output_dir, exist_ok=True)
        res_file = os.path.join(output_dir, f"detections_{self.name}_results.json")
        results = []
        for c, cls in enumerate(self._classes):
            if c == 0:
                continue
            cat_id = self._class_to_coco_cat_id[cls]
            for i, index in enumerate(self._image_index):
                dets = np.asarray(all_boxes[c][i], dtype=np.float64).reshape(-1, 5)
                for x1, y1, x2, y2, s in dets:
                    results.append({"image_id": int(index), "category_id": cat_id,
                                    "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1 + 1, 2),
                                             round(y2 - y1 + 1, 2)], "score": float(s)})
        with open(res_file, "w") as f:
            json.dump(results, f)
        if not results:
            print("no detections: AP = 0")
            self.aps = {cls: 0.0 for cls in self._classes[1:]}
            return 0.0
        dt = _quiet(self._COCO.loadRes, res_file)
        E = COCOeval(self._COCO, dt, "bbox")
        E.params.useSegm = None
        _quiet(E.evaluate)
        _quiet(E.accumulate)
        E.summarize()
        # precision [T, R, K, A, M]: IoU .5:.95, all areas, maxDets 100
        prec = E.eval["precision"][:, :, :, 0, -1]
        self.aps = {}
        for k, cls in enumerate(self._classes[1:]):
            p = prec[:, :, k]
            ap = float(np.mean(p[p > -1])) if np.any(p > -1) else float("nan")
            self.aps[cls] = ap
            print(f"AP for {cls} = {ap:.4f}")
        print(f"Mean AP@[.5:.95] = {E.stats[0]:.4f}")
        return float(E.stats[0])
