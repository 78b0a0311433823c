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


def _acc_dtype(dtype):
    """Accumulation dtype of roi_align: float32 for half / bfloat16, else the dtype itself."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _roi_align_bins(roi, spatial_scale, output_size, height, width, sampling_ratio, aligned):
    """Samples of one RoI, bin by bin, in RoIAlign's definition, in the RoI's coordinate dtype.

    roi: [5] numpy array (float32 -> float32 arithmetic, float64 -> float64).
    returns: (count, bins) with bins[ph][pw] = list of samples, a sample being None (outside the
        map: contributes 0) or ((y0, x0, y1, x1), (w00, w01, w10, w11)) with numpy weights.
    """
    t = roi.dtype.type
    ph_n, pw_n = output_size
    s = t(spatial_scale)
    off = t(0.5) if aligned else t(0)
    start_w, start_h = roi[1] * s - off, roi[2] * s - off
    end_w, end_h = roi[3] * s - off, roi[4] * s - off
    roi_w, roi_h = end_w - start_w, end_h - start_h
    if not aligned:  # RoIs of at least 1 x 1 feature pixel
        roi_w, roi_h = max(roi_w, t(1)), max(roi_h, t(1))
    bin_h, bin_w = roi_h / t(ph_n), roi_w / t(pw_n)
    if sampling_ratio > 0:
        gh = gw = int(sampling_ratio)
    else:  # adaptive: ceil(roi size / pooled size) samples per axis
        gh = max(int(np.ceil(roi_h / t(ph_n))), 0)
        gw = max(int(np.ceil(roi_w / t(pw_n))), 0)

    def sample(y, x):
        if y < -1 or y > height or x < -1 or x > width:
            return None
        y = t(0) if y <= 0 else y  # clamp below at 0
        x = t(0) if x <= 0 else x
        y0, x0 = int(y), int(x)
        if y0 >= height - 1:
            y0 = y1 = height - 1
            y = t(y0)
        else:
            y1 = y0 + 1
        if x0 >= width - 1:
            x0 = x1 = width - 1
            x = t(x0)
        else:
            x1 = x0 + 1
        ly, lx = y - t(y0), x - t(x0)
        hy, hx = t(1) - ly, t(1) - lx
        return (y0, x0, y1, x1), (hy * hx, hy * lx, ly * hx, ly * lx)

    bins = [[[sample(start_h + t(ph) * bin_h + (t(iy) + t(0.5)) * bin_h / t(gh),
                     start_w + t(pw) * bin_w + (t(ix) + t(0.5)) * bin_w / t(gw))
              for iy in range(gh) for ix in range(gw)]
             for pw in range(pw_n)] for ph in range(ph_n)]
    return gh * gw, bins


def _coords(rois):
    r = rois.detach().cpu()
    return (r if r.dtype == torch.float64 else r.to(torch.float32)).numpy()


def _roi_align_samples(r, spatial_scale, output_size, height, width, sampling_ratio, aligned):
    """Every in-map sample of every RoI of `r` [R, 5]: yields (roi index, batch index, ph, pw,
    samples per bin, four corners ((y, x) x 4), four weights), RoIs in order, then bins."""
    if height == 0 or width == 0:
        return
    for i in range(r.shape[0]):
        count, bins = _roi_align_bins(r[i], spatial_scale, output_size, height, width,
                                      sampling_ratio, aligned)
        for ph, row in enumerate(bins):
            for pw, samples in enumerate(row):
                for smp in samples:
                    if smp is not None:
                        (y0, x0, y1, x1), ws = smp
                        yield (i, int(r[i, 0]), ph, pw, count,
                               ((y0, x0), (y0, x1), (y1, x0), (y1, x1)), ws)


def roi_align_reference(features, rois, output_size, spatial_scale, sampling_ratio, aligned):
    """RoIAlign, one sample at a time (bilinear interpolation written out).

    features: [B, C, H, W]; rois: [R, 5] (batch_idx, x1, y1, x2, y2), float32 or float64
    returns: [R, C, ph, pw] in the features' dtype. Coordinates in the rois' dtype (float32 for
    any non-float64 rois), values accumulated in float32 for half / bfloat16 features.
    """
    ph_n, pw_n = (output_size, output_size) if isinstance(output_size, int) else output_size
    acc = _acc_dtype(features.dtype)
    x = features.detach().cpu().to(acc)
    B, C, H, W = x.shape
    sums = torch.zeros((rois.shape[0], C, ph_n, pw_n), dtype=acc)
    counts = torch.ones((rois.shape[0], 1, 1, 1), dtype=acc)
    for i, b, ph, pw, count, corners, ws in _roi_align_samples(
            _coords(rois), spatial_scale, (ph_n, pw_n), H, W, sampling_ratio, aligned):
        counts[i] = count
        w = [torch.tensor(float(v), dtype=acc) for v in ws]
        (y0, x0), (_, x1), (y1, _), _ = corners
        sums[i, :, ph, pw] = sums[i, :, ph, pw] + (w[0] * x[b, :, y0, x0] + w[1] * x[b, :, y0, x1]
                                                   + w[2] * x[b, :, y1, x0] + w[3] * x[b, :, y1, x1])
    return (sums / counts).to(features.dtype)


def roi_align_backward_reference(grad, rois, input_shape, spatial_scale, sampling_ratio,
                                 aligned):
    """Each bin's gradient / count, spread over its samples' four corners by their weights.

    grad: [R, C, ph, pw]; returns [B, C, H, W] in grad's dtype (accumulated in float32 for
    half / bfloat16), RoIs in order, then bins, samples, corners.
    """
    B, C, H, W = input_shape
    acc = _acc_dtype(grad.dtype)
    g = grad.detach().cpu().to(acc)
    out = torch.zeros((B, C, H, W), dtype=acc)
    for i, b, ph, pw, count, corners, ws in _roi_align_samples(
            _coords(rois), spatial_scale, tuple(g.shape[2:]), H, W, sampling_ratio, aligned):
        gv = g[i, :, ph, pw] / torch.tensor(count, dtype=acc)
        for (yy, xx), wv in zip(corners, ws):
            out[b, :, yy, xx] += gv * torch.tensor(float(wv), dtype=acc)
    return out.to(grad.dtype)
