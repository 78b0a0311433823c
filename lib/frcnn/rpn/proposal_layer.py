"""Object proposals from RPN outputs (py-faster-rcnn proposal_layer), per image, on device."""
import torch

from frcnn.fast_rcnn.bbox_transform import bbox_transform_inv, clip_boxes


def proposal_params(cfg, train):
    """(pre_nms_top_n, post_nms_top_n, nms_thresh, min_size) from cfg.TRAIN or cfg.TEST."""
    c = cfg.TRAIN if train else cfg.TEST
    return c.RPN_PRE_NMS_TOP_N, c.RPN_POST_NMS_TOP_N, c.RPN_NMS_THRESH, c.RPN_MIN_SIZE


def proposal_layer(fg_scores, deltas, anchors, im_info, cfg, train):
    """Proposals of one image.

    fg_scores: [N] fg probabilities; deltas: [N, 4]; anchors: [N, 4] (same (h, w, a) order);
    im_info: [3] (h, w, scale). train picks the TRAIN or TEST RPN_* keys.
    Returns (boxes [P, 4] scaled image coords, scores [P]) in descending score order.
    Steps as the reference: decode, clip, drop w or h < RPN_MIN_SIZE * scale, sort, keep top
    PRE_NMS_TOP_N (<= 0: all), NMS at RPN_NMS_THRESH, keep top POST_NMS_TOP_N (<= 0: all).
    """
    from frcnn.ops import nms

    pre_n, post_n, thresh, min_size = proposal_params(cfg, train)
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
