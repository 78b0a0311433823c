"""COCO metrics (pycocotools' COCOeval) of the project's detections, and predictions.json.

The +1 rule on both sides: the project's boxes are inclusive pixel boxes (x1, y1, x2, y2),
w = x2 - x1 + 1. Ground truth and detections both go to pycocotools as [x1, y1, w, h] with
that w and h (0-based x1, y1), so pycocotools' IoU (w * h areas, no +1) equals the project's
+1 IoU exactly, and the object areas of APs / APm / APl are (x2 - x1 + 1) (y2 - y1 + 1).
Difficult VOC objects go in as iscrowd: ignored, as in voc_eval (COCOeval lets any number of
detections match a crowd box, by intersection over the detection's area). COCO matches at
IoU >= t (voc_eval: > 0.5) and interpolates precision at 101 recall points.
"""
import contextlib
import io

import numpy as np

COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")


def coco_box(box_1based):
    """1-based inclusive (x1, y1, x2, y2) -> COCO [x, y, w, h] (0-based, +1 rule)."""
    x1, y1, x2, y2 = (float(v) for v in box_1based)
    return [x1 - 1.0, y1 - 1.0, x2 - x1 + 1.0, y2 - y1 + 1.0]


def predictions(evalset):
    """Detections in the COCO results format, with the image's file name and the class name:
    [{'image_id', 'file_name', 'category_id', 'category_name', 'bbox', 'score'}]."""
    ids = {im: i + 1 for i, im in enumerate(evalset.image_ids)}
    out = []
    for k, cls in enumerate(evalset.classes):
        d = evalset.dets[cls]
        for im, s, b in zip(d.image_ids, d.conf, d.boxes):
            out.append({"image_id": ids[im], "file_name": _file_name(evalset, im),
                        "category_id": k + 1, "category_name": cls,
                        "bbox": [round(v, 2) for v in coco_box(b)], "score": round(float(s), 4)})
    out.sort(key=lambda r: (r["image_id"], -r["score"]))
    return out


def _file_name(evalset, im):
    path = evalset.image_paths.get(im)
    return path.replace("\\", "/").rsplit("/", 1)[-1] if path else str(im)


def _coco_gt(evalset):
    from pycocotools.coco import COCO

    ids = {im: i + 1 for i, im in enumerate(evalset.image_ids)}
    anns = []
    for k, cls in enumerate(evalset.classes):
        for im, r in evalset.gts[cls].items():
            for b, diff in zip(r["bbox"], r["difficult"]):
                x, y, w, h = coco_box(b)
                anns.append({"id": len(anns) + 1, "image_id": ids[im], "category_id": k + 1,
                             "bbox": [x, y, w, h], "area": w * h, "iscrowd": int(diff)})
    gt = COCO()
    gt.dataset = {"images": [{"id": i, "file_name": _file_name(evalset, im)}
                             for im, i in ids.items()],
                  "categories": [{"id": k + 1, "name": c} for k, c in enumerate(evalset.classes)],
                  "annotations": anns}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def _summary(precision, recall, k):
    """The nine COCO numbers of class k (slice(None): all classes pooled, as summarize())."""
    def mean(a):
        a = a[a > -1]
        return float(np.mean(a)) if a.size else float("nan")
    p = precision[:, :, k]  # [T, R, (K,) A, M]; maxDets (1, 10, 100), areas all/s/m/l
    r = recall[:, k]
    return {"AP": mean(p[..., 0, 2]), "AP50": mean(p[0, ..., 0, 2]), "AP75": mean(p[5, ..., 0, 2]),
            "APs": mean(p[..., 1, 2]), "APm": mean(p[..., 2, 2]), "APl": mean(p[..., 3, 2]),
            "AR1": mean(r[..., 0, 0]), "AR10": mean(r[..., 0, 1]), "AR100": mean(r[..., 0, 2])}


def coco_metrics(evalset):
    """-> {'per_class': {cls: {COCO_KEYS}}, 'mean': {COCO_KEYS}} (nan where a class has no
    object of that size; the mean is pycocotools' own summary)."""
    from pycocotools.cocoeval import COCOeval

    gt = _coco_gt(evalset)
    dets = predictions(evalset)
    nan = {k: float("nan") for k in COCO_KEYS}
    if not dets:
        zero = {k: 0.0 for k in COCO_KEYS}
        return {"per_class": {c: dict(zero) for c in evalset.classes}, "mean": zero}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes([{k: v for k, v in d.items() if k in ("image_id", "category_id", "bbox",
                                                               "score")} for d in dets])
        E = COCOeval(gt, dt, "bbox")
        E.evaluate()
        E.accumulate()
        E.summarize()
    prec, rec = E.eval["precision"], E.eval["recall"]
    per_class = {c: _summary(prec, rec, k) for k, c in enumerate(evalset.classes)}
    mean = {key: float(v) if v > -1 else nan[key] for key, v in zip(COCO_KEYS, E.stats)}
    return {"per_class": per_class, "mean": mean}
