"""Confusion matrix at one score threshold: classes plus background.

Rows are the truth, columns the prediction; the last row ('background') counts detections of
nothing (no object left within IoU 0.5; duplicates included), the last column ('missed')
objects no detection found. Per image, detections with score >= the threshold are matched by
descending score: first to an object of their own class (voc_eval's rule: the object of
highest IoU, IoU > 0.5; difficult objects are ignored, neither counted nor missed), then those
left to a not yet matched object of another class (highest IoU > 0.5).
"""
import numpy as np

from frcnn.evaluation.evalset import FG_IOU
from frcnn.utils.cython_bbox import bbox_overlaps


def _image_dets(evalset, score_thresh):
    """{image: (boxes [D, 4], class indices [D], scores [D])} by descending score."""
    per_image = {}
    for k, cls in enumerate(evalset.classes):
        d = evalset.dets[cls]
        for im, s, b in zip(d.image_ids, d.conf, d.boxes):
            if s >= score_thresh:
                per_image.setdefault(im, []).append((s, k, b))
    out = {}
    for im, rows in per_image.items():
        rows.sort(key=lambda r: -r[0])
        out[im] = (np.array([r[2] for r in rows]).reshape(-1, 4),
                   np.array([r[1] for r in rows], np.int64), np.array([r[0] for r in rows]))
    return out


def _match_image(boxes, labels, gt_boxes, gt_labels, gt_diff, matrix):
    K = matrix.shape[0] - 1
    iou = (bbox_overlaps(boxes, gt_boxes) if len(boxes) and len(gt_boxes)
           else np.zeros((len(boxes), len(gt_boxes))))
    taken = np.zeros(len(gt_boxes), bool)
    left = []
    for d, c in enumerate(labels):
        same = np.where(gt_labels == c, iou[d], -1.0)
        j = int(np.argmax(same)) if len(same) else -1
        if j < 0 or same[j] <= FG_IOU:
            left.append(d)
        elif gt_diff[j]:
            continue  # matched a difficult object: not counted
        elif not taken[j]:
            taken[j] = True
            matrix[c, c] += 1
        else:
            matrix[K, c] += 1  # duplicate
    for d in left:
        free = np.where(~taken & ~gt_diff & (gt_labels != labels[d]), iou[d], -1.0)
        j = int(np.argmax(free)) if len(free) else -1
        if j >= 0 and free[j] > FG_IOU:
            taken[j] = True
            matrix[gt_labels[j], labels[d]] += 1
        else:
            matrix[K, labels[d]] += 1
    for j in np.nonzero(~taken & ~gt_diff)[0]:
        matrix[gt_labels[j], K] += 1


def confusion_matrix(evalset, score_thresh):
    """-> int64 [K+1, K+1]: rows truth (last: background), columns prediction (last: missed)."""
    K = len(evalset.classes)
    matrix = np.zeros((K + 1, K + 1), np.int64)
    dets = _image_dets(evalset, score_thresh)
    for im in evalset.image_ids:
        gb, gl, gd = evalset.image_gts(im)
        boxes, labels, _ = dets.get(im, (np.zeros((0, 4)), np.zeros(0, np.int64), None))
        _match_image(boxes, labels, gb, gl, gd, matrix)
    return matrix


def normalise_rows(matrix):
    """Each row divided by its sum (where the objects of a class went); empty rows stay 0."""
    m = matrix.astype(np.float64)
    return m / np.maximum(m.sum(1, keepdims=True), 1)
