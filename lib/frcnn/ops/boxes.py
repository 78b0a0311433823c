"""Box IoU in plain torch (runs on any device; used by the target layers)."""
import torch


def box_iou(a, b, offset=1):
    """IoU of every box in a with every box in b.

    a: [N, 4] float tensor, (x1, y1, x2, y2) in pixels
    b: [K, 4] float tensor, same dtype and device
    offset: 1 (w = x2 - x1 + 1, py-faster-rcnn) or 0 (continuous coordinates)
    returns: [N, K]; 0 where the boxes do not overlap (or the union is <= 0)
    """
    area_a = (a[:, 2] - a[:, 0] + offset) * (a[:, 3] - a[:, 1] + offset)
    area_b = (b[:, 2] - b[:, 0] + offset) * (b[:, 3] - b[:, 1] + offset)
    iw = (torch.minimum(a[:, None, 2], b[None, :, 2])
          - torch.maximum(a[:, None, 0], b[None, :, 0]) + offset).clamp(min=0)
    ih = (torch.minimum(a[:, None, 3], b[None, :, 3])
          - torch.maximum(a[:, None, 1], b[None, :, 1]) + offset).clamp(min=0)
    inter = iw * ih
    union = area_a[:, None] + area_b[None, :] - inter
    # where() keeps 0/0 (degenerate boxes) out of the result without a NaN.
    return torch.where((inter > 0) & (union > 0), inter / union.clamp(min=torch.finfo(union.dtype).tiny),
                       torch.zeros_like(inter))
