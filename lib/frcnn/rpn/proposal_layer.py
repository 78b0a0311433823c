"""Object proposals from RPN outputs (py-faster-rcnn proposal_layer), per image, on device."""
from dataclasses import dataclass

import torch

from frcnn.utils.bbox_transform import bbox_transform_inv, clip_boxes


@dataclass(frozen=True)
class ProposalParams:
    """The numbers of proposal_layer; TRAIN.RPN_* or TEST.RPN_* (`from_cfg(cfg, train)`)."""

    pre_nms_top_n: int = 6000             # <= 0: no cut before NMS
    post_nms_top_n: int = 300             # <= 0: keep all after NMS
    nms_thresh: float = 0.7
    min_size: float = 16                  # in original-image pixels

    @classmethod
    def from_cfg(cls, cfg, train):
        c = cfg.TRAIN if train else cfg.TEST
        return cls(int(c.RPN_PRE_NMS_TOP_N), int(c.RPN_POST_NMS_TOP_N),
                   float(c.RPN_NMS_THRESH), float(c.RPN_MIN_SIZE))


def proposal_layer(fg_scores, deltas, anchors, im_info, params=ProposalParams()):
    """Proposals of one image.

    fg_scores: [N] fg probabilities; deltas: [N, 4]; anchors: [N, 4] (same (h, w, a) order);
    im_info: [3] (h, w, scale); params: ProposalParams.
    Returns (boxes [P, 4] scaled image coords, scores [P]) in descending score order.
    Steps as the reference: decode, clip, drop w or h < min_size * scale, sort, keep top
    pre_nms_top_n (<= 0: all), NMS at nms_thresh, keep top post_nms_top_n (<= 0: all).
    """
    from frcnn.ops import nms

    pre_n, post_n, thresh, min_size = (params.pre_nms_top_n, params.post_nms_top_n,
                                       params.nms_thresh, params.min_size)
    im_info = im_info.to(device=deltas.device, dtype=deltas.dtype)
    boxes = clip_boxes(bbox_transform_inv(anchors.to(deltas.dtype), deltas), im_info)
    ms = min_size * im_info[2]
    ws = boxes[:, 2] - boxes[:, 0] + 1
    hs = boxes[:, 3] - boxes[:, 1] + 1
    keep = (ws >= ms) & (hs >= ms)
    boxes, scores = boxes[keep], fg_scores[keep]
    order = torch.sort(scores, descending=True, stable=True).indices
    if pre_n > 0:
        order = order[:pre_n]
    boxes, scores = boxes[order], scores[order]
    keep = nms(boxes, scores, thresh)
    if post_n > 0:
        keep = keep[:post_n]
    return boxes[keep], scores[keep]
