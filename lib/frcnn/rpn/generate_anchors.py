"""Reference anchors (py-faster-rcnn generate_anchors) and their shifts over a feature map."""
import numpy as np
import torch


def _whctrs(anchor):
    """anchor: [4] (x1, y1, x2, y2) -> (w, h, x_ctr, y_ctr) with the +1 convention."""
    w = anchor[2] - anchor[0] + 1
    h = anchor[3] - anchor[1] + 1
    return w, h, anchor[0] + 0.5 * (w - 1), anchor[1] + 0.5 * (h - 1)


def _make(ws, hs, x_ctr, y_ctr):
    """ws, hs: [n] -> [n, 4] boxes centred on (x_ctr, y_ctr)."""
    ws = np.asarray(ws, dtype=np.float64)[:, None]
    hs = np.asarray(hs, dtype=np.float64)[:, None]
    return np.hstack((x_ctr - 0.5 * (ws - 1), y_ctr - 0.5 * (hs - 1),
                      x_ctr + 0.5 * (ws - 1), y_ctr + 0.5 * (hs - 1)))


def generate_anchors(base_size=16, ratios=(0.5, 1, 2), scales=(8, 16, 32)):
    """The reference anchors: [len(ratios) * len(scales), 4] float64, ratio-major.

    Each ratio keeps the base area (np.round, half to even, as the reference), then each
    scale multiplies width and height. Default: the 9 rows listed in docs/DESIGN.md (reference facts).
    """
    ratios = np.asarray(ratios, dtype=np.float64)
    scales = np.asarray(scales, dtype=np.float64)
    base = np.array([0, 0, base_size - 1, base_size - 1], dtype=np.float64)
    w, h, xc, yc = _whctrs(base)
    size_ratios = (w * h) / ratios
    ws = np.round(np.sqrt(size_ratios))
    hs = np.round(ws * ratios)
    ratio_anchors = _make(ws, hs, xc, yc)
    out = []
    for a in ratio_anchors:
        w, h, xc, yc = _whctrs(a)
        out.append(_make(w * scales, h * scales, xc, yc))
    return np.vstack(out)


def shifted_anchors(height, width, feat_stride, anchors, device=None, dtype=torch.float32):
    """All anchors of a [height, width] feature map: [height * width * A, 4], order (h, w, a).

    anchors: [A, 4] numpy or tensor; shift of cell (y, x) = feat_stride * (x, y, x, y).
    """
    anchors = torch.as_tensor(anchors, dtype=dtype, device=device)
    sx = torch.arange(width, dtype=dtype, device=device) * feat_stride
    sy = torch.arange(height, dtype=dtype, device=device) * feat_stride
    yy, xx = torch.meshgrid(sy, sx, indexing="ij")
    shifts = torch.stack((xx, yy, xx, yy), dim=-1).reshape(-1, 1, 4)
    return (shifts + anchors.view(1, -1, 4)).reshape(-1, 4)
