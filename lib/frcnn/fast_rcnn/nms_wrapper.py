"""NMS on numpy detections (py-faster-rcnn's nms_wrapper), backed by frcnn.ops.nms."""
import numpy as np
import torch


def nms(dets, thresh):
    """dets: [N, 5] (x1, y1, x2, y2, score) np or tensor -> keep: np int64 indices, by score.

    A box is suppressed when its IoU (+1 pixel convention) with a kept box is > thresh.
    """
    from frcnn.ops import nms as _nms

    if len(dets) == 0:
        return np.zeros((0,), dtype=np.int64)
    d = dets if torch.is_tensor(dets) else torch.from_numpy(np.ascontiguousarray(dets))
    d = d.float()
    keep = _nms(d[:, :4].contiguous(), d[:, 4].contiguous(), float(thresh))
    return keep.cpu().numpy()
