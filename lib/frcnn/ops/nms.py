"""Non-maximum suppression (torch.ops.frcnn.nms: C++ on CPU, bitmask kernel on CUDA)."""
import torch

from . import _ext


def nms(boxes, scores, iou_threshold, offset=1):
    """Greedy NMS.

    boxes: [N, 4] float, (x1, y1, x2, y2) in pixels
    scores: [N] float, same dtype and device as boxes
    iou_threshold: a box is suppressed when its IoU with a kept box is > this
    offset: 1 (w = x2 - x1 + 1, py-faster-rcnn) or 0 (continuous coordinates)
    returns: [K] int64 indices into boxes, by descending score (ties: lower index first)
    """
    _ext.require(boxes, scores)
    return torch.ops.frcnn.nms(boxes, scores, float(iou_threshold), int(offset))


if _ext.LOADED:
    @torch.library.register_fake("frcnn::nms")
    def _nms_fake(boxes, scores, iou_threshold, offset=1):
        torch._check(boxes.dim() == 2 and boxes.size(1) == 4, lambda: "boxes must be [N, 4]")
        torch._check(scores.dim() == 1 and scores.size(0) == boxes.size(0),
                     lambda: "scores must be [N]")
        n = torch.library.get_ctx().new_dynamic_size()
        return boxes.new_empty((n,), dtype=torch.long)
