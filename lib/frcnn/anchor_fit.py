"""Anchor sizes fitted to the training boxes (the idea of YOLOv5's AutoAnchor, here as k-means
over the log box side at the training scale, since this RPN's anchors are a grid of scales x
ratios), and the measure that decides whether to keep them: the share of gt boxes that some
anchor of the real anchor grid (every stride-16 cell, inside the image: the anchors the RPN
labels) overlaps at IoU >= 0.7, the RPN's positive rule.

    cov = anchor_coverage(boxes_per_image, sizes, (0.5, 1, 2), (4, 8, 16))    # 0..1
    scales = kmeans_scales(sides, k=3)                                           # (3.1, 6.4, 12.9)
"""
import math

import numpy as np

from frcnn.rpn.generate_anchors import generate_anchors
from frcnn.utils.cython_bbox import bbox_overlaps

FEAT_STRIDE = 16


def _grid(height, width, anchors, stride=FEAT_STRIDE):
    """The anchors the RPN labels on a height x width blob: every cell of the ceil(/stride) map,
    only those inside the image (allowed border 0)."""
    fh, fw = math.ceil(height / stride), math.ceil(width / stride)
    sx, sy = np.meshgrid(np.arange(fw) * stride, np.arange(fh) * stride)
    shifts = np.stack((sx, sy, sx, sy), axis=-1).reshape(-1, 1, 4)
    a = (shifts + anchors[None]).reshape(-1, 4)
    inside = (a[:, 0] >= 0) & (a[:, 1] >= 0) & (a[:, 2] < width) & (a[:, 3] < height)
    return a[inside]


def anchor_coverage(images, ratios, scales, iou=0.7):
    """images: [(height, width, boxes [G, 4])] at the training scale. -> share of the gt boxes
    with some labelled anchor at IoU >= iou (0.0 when there are no boxes)."""
    anchors = generate_anchors(FEAT_STRIDE, ratios, scales)
    covered = total = 0
    for h, w, boxes in images:
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        total += len(boxes)
        grid = _grid(h, w, anchors)
        if len(boxes) and len(grid):
            covered += int((bbox_overlaps(grid.astype(np.float64), boxes).max(axis=0) >= iou).sum())
    return covered / total if total else 0.0


def kmeans_scales(sides, k, iters=100):
    """<= k anchor scales (side / 16) from 1-D k-means over log(sides): deterministic (centres
    start at the (i + 0.5) / k quantiles), sorted, 2 decimals, no repeats."""
    x = np.log(np.asarray(sides, np.float64))
    centres = np.quantile(x, (np.arange(k) + 0.5) / k)
    for _ in range(iters):
        assign = np.argmin(np.abs(x[:, None] - centres[None]), axis=1)
        new = np.array([x[assign == j].mean() if np.any(assign == j) else centres[j]
                        for j in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    # sizes that fall together (few distinct box sizes) give one anchor scale, not copies
    return tuple(sorted({round(float(np.exp(c)) / FEAT_STRIDE, 2) for c in centres}))
