"""Re-evaluate saved detections (test_net's detections.pkl) with other settings, without the net.

all_boxes[cls][img]: [D, 5] (x1, y1, x2, y2, score), 0-based original-image pixels, class 0 unused.
"""
import os

import numpy as np

from frcnn.fast_rcnn.nms_wrapper import nms


def load_detections(path):
    """detections.pkl (or the folder holding it) -> all_boxes."""
    if os.path.isdir(path):
        path = os.path.join(path, "detections.pkl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: run tools/test_net.py first (it writes "
                                "detections.pkl next to the results)")
    from frcnn.safe_io import load_pickle

    return load_pickle(path, "detections file")


def apply_nms(all_boxes, thresh):
    """Per-class, per-image NMS at IoU `thresh` (the reference's reval --nms) -> a new all_boxes."""
    out = []
    for per_image in all_boxes:
        cls_out = []
        for dets in per_image:
            dets = np.asarray(dets, dtype=np.float32).reshape(-1, 5)
            cls_out.append(dets[nms(dets, thresh)] if len(dets) else dets)
        out.append(cls_out)
    return out


def reevaluate(imdb, all_boxes, output_dir, nms_thresh=None, use_07_metric=None, classes=None):
    """Evaluate `all_boxes` on `imdb` -> (mAP over the chosen classes, {class: AP}).

    nms_thresh: re-apply NMS (only tightens: detections were saved after TEST.NMS).
    use_07_metric: True = VOC07 11-point, False = area under the PR curve; None = the imdb's.
    classes: names to evaluate (others are emptied and left out of the mean); None = all.
    The imdb's image list is cut to the number of images in all_boxes (test_net --num-images).
    """
    n_cls = len(all_boxes)
    if n_cls != imdb.num_classes:
        raise ValueError(f"detections have {n_cls} class lists, {imdb.name} has "
                         f"{imdb.num_classes} classes: wrong --imdb?")
    n_img = len(all_boxes[1]) if n_cls > 1 else 0
    if n_img > imdb.num_images:
        raise ValueError(f"detections cover {n_img} images, {imdb.name} has {imdb.num_images}")
    if n_img < imdb.num_images:
        imdb._image_index = imdb.image_index[:n_img]
    if nms_thresh is not None:
        all_boxes = apply_nms(all_boxes, nms_thresh)
    if use_07_metric is not None and (not hasattr(imdb, "use_07_metric")
                                      or type(imdb).__name__ == "coco"):
        raise ValueError(f"{imdb.name}: the VOC metric choice does not apply to this data set")
    chosen = list(imdb.classes[1:])
    if classes:
        unknown = [c for c in classes if c not in imdb.classes[1:]]
        if unknown:
            raise ValueError(f"unknown classes {unknown}; {imdb.name} has {list(imdb.classes[1:])}")
        chosen = list(classes)
        all_boxes = [all_boxes[c] if imdb.classes[c] in chosen
                     else [np.zeros((0, 5), np.float32) for _ in range(n_img)]
                     for c in range(n_cls)]
    saved = getattr(imdb, "use_07_metric", None)
    if use_07_metric is not None:
        imdb.use_07_metric = bool(use_07_metric)
    try:
        mAP = imdb.evaluate_detections(all_boxes, output_dir)
    finally:
        if saved is not None:
            imdb.use_07_metric = saved
    aps = {c: imdb.aps.get(c, float("nan")) for c in chosen}
    if classes:
        valid = [a for a in aps.values() if not np.isnan(a)]
        mAP = float(np.mean(valid)) if valid else 0.0
        print(f"Mean AP over {', '.join(chosen)} = {mAP:.4f}")
    return float(mAP), aps


def write_pr_curves(imdb, output_dir, classes=None):
    """Per-class precision/recall PNGs from the last VOC evaluation (imdb.pr_curves) into
    <output_dir>/pr/<class>.png (only `classes` if given; classes without gt are skipped);
    -> list of paths (empty when the imdb keeps no curves, e.g. COCO)."""
    curves = getattr(imdb, "pr_curves", None) or {}
    if classes:
        curves = {c: v for c, v in curves.items() if c in classes}
    if not curves:
        return []
    from frcnn.utils.plots import plot_pr_curve

    paths = []
    for cls, (rec, prec) in curves.items():
        ap = imdb.aps.get(cls, float("nan"))
        if np.isnan(ap):
            continue
        paths.append(plot_pr_curve(rec, prec, ap, cls, os.path.join(output_dir, "pr", f"{cls}.png")))
    return paths
