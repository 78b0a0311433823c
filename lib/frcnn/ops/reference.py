"""Slow, obviously-right versions of the ops: test oracles only, never fallbacks.

They follow py-faster-rcnn's definitions (see ../shared/DESIGN.md "Reference facts", summarised in docs/DESIGN.md) literally, one box or
one bin at a time, in the dtype of the input.
"""
import numpy as np
import torch


def _iou_rows(box, others, offset):
    """IoU of one box [4] with each of others [M, 4], elementwise in their dtype; 0 when the
    boxes do not overlap or the union is <= 0."""
    t = others.dtype.type
    off = t(offset)
    w = np.maximum(t(0), np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]) + off)
    h = np.maximum(t(0), np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]) + off)
    inter = w * h
    area_box = (box[2] - box[0] + off) * (box[3] - box[1] + off)
    area_others = (others[:, 2] - others[:, 0] + off) * (others[:, 3] - others[:, 1] + off)
    union = area_box + area_others - inter
    safe = np.where(union > 0, union, t(1))
    return np.where(union > 0, inter / safe, t(0)).astype(others.dtype)


def nms_reference(boxes, scores, iou_threshold, offset=1):
    """Greedy NMS: visit boxes by descending score; keep a box unless its IoU with an already
    kept box is > iou_threshold.

    boxes: [N, 4] float tensor or array; scores: [N]
    returns: [K] int64 tensor of indices (ties in score: lower index first)
    """
    b = torch.as_tensor(boxes).detach().cpu().numpy()
    s = torch.as_tensor(scores).detach().cpu().numpy()
    thr = b.dtype.type(iou_threshold)
    order = np.argsort(-s, kind="stable")
    keep = []
    for i in order:
        if not keep or not np.any(_iou_rows(b[i], b[keep], offset) > thr):
            keep.append(int(i))
    return torch.tensor(keep, dtype=torch.long)


def bbox_overlaps_reference(boxes, query_boxes, offset=1):
    """IoU matrix, one box at a time. boxes [N, 4], query_boxes [K, 4] -> [N, K] float64 array."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    q = np.asarray(query_boxes, dtype=np.float64).reshape(-1, 4)
    out = np.zeros((len(b), len(q)), dtype=np.float64)
    for n in range(len(b)):
        out[n] = _iou_rows(b[n], q, offset) if len(q) else out[n]
    return out


def _c_round(v):
    """C's round(): half away from zero (np.round is half to even). Exact for any float."""
    r = np.trunc(v)
    return int(r + np.sign(v)) if abs(v - r) >= 0.5 else int(r)


def roi_pool_reference(features, rois, output_size, spatial_scale):
    """Caffe RoI max pooling, one bin at a time.

    features: [B, C, H, W] float tensor; rois: [R, 5] (batch_idx, x1, y1, x2, y2)
    returns: (output [R, C, ph, pw], argmax [R, C, ph, pw] int32 index h * W + w, -1 if empty)
    """
    ph_n, pw_n = (output_size, output_size) if isinstance(output_size, int) else output_size
    x = features.detach().cpu().numpy()
    r = rois.detach().cpu().numpy()
    t = x.dtype.type
    B, C, H, W = x.shape
    R = r.shape[0]
    out = np.zeros((R, C, ph_n, pw_n), dtype=x.dtype)
    arg = np.full((R, C, ph_n, pw_n), -1, dtype=np.int32)
    s = t(spatial_scale)
    for i in range(R):
        b = int(r[i, 0])
        x1, y1, x2, y2 = (_c_round(t(r[i, k] * s)) for k in (1, 2, 3, 4))
        roi_w, roi_h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
        bin_w, bin_h = t(t(roi_w) / t(pw_n)), t(t(roi_h) / t(ph_n))
        for ph in range(ph_n):
            hs = min(max(int(np.floor(t(ph) * bin_h)) + y1, 0), H)
            he = min(max(int(np.ceil(t(ph + 1) * bin_h)) + y1, 0), H)
            for pw in range(pw_n):
                ws = min(max(int(np.floor(t(pw) * bin_w)) + x1, 0), W)
                we = min(max(int(np.ceil(t(pw + 1) * bin_w)) + x1, 0), W)
                if he <= hs or we <= ws:
                    continue
                region = x[b, :, hs:he, ws:we].reshape(C, -1)
                k = region.argmax(axis=1)  # first max in row-major order
                out[i, :, ph, pw] = region[np.arange(C), k]
                arg[i, :, ph, pw] = (hs + k // (we - ws)) * W + ws + k % (we - ws)
    return torch.from_numpy(out), torch.from_numpy(arg)


def roi_pool_backward_reference(grad, argmax, rois, input_shape):
    """Routes each bin's gradient to its argmax. grad/argmax [R, C, ph, pw] -> [B, C, H, W]."""
    B, C, H, W = input_shape
    g = grad.detach().cpu().numpy()
    a = argmax.cpu().numpy()
    out = np.zeros((B, C, H * W), dtype=g.dtype)
    for i in range(g.shape[0]):
        b = int(rois[i, 0])
        for c in range(C):
            for gv, av in zip(g[i, c].ravel(), a[i, c].ravel()):
                if av >= 0:
                    out[b, c, av] += gv
    return torch.from_numpy(out.reshape(B, C, H, W))
