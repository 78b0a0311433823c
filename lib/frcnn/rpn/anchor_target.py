"""RPN training targets (py-faster-rcnn anchor_target_layer), per image, in torch on device.

Sampling picks a uniformly random subset through random keys and a sort, so nothing leaves
the device (no .item()/nonzero sync): the same distribution as the reference's
npr.choice(..., replace=False).
"""
from dataclasses import dataclass

import torch

from frcnn.utils.bbox_transform import bbox_transform


@dataclass(frozen=True)
class AnchorTargetParams:
    """The numbers of anchor_target (TRAIN.RPN_* in the cfg; `from_cfg` reads them once)."""

    positive_overlap: float = 0.7
    negative_overlap: float = 0.3
    clobber_positives: bool = False
    fg_fraction: float = 0.5
    batch_size: int = 256                 # sampled anchors per image
    bbox_inside_weights: tuple = (1.0, 1.0, 1.0, 1.0)
    positive_weight: float = -1.0         # <0: every sampled anchor weighs 1/#sampled
    allowed_border: int = 0

    def __post_init__(self):
        if self.positive_weight >= 0 and not 0 < self.positive_weight < 1:
            raise ValueError("TRAIN.RPN_POSITIVE_WEIGHT must be in (0, 1) or negative, got "
                             f"{self.positive_weight}")

    @classmethod
    def from_cfg(cls, cfg):
        T = cfg.TRAIN
        return cls(positive_overlap=float(T.RPN_POSITIVE_OVERLAP),
                   negative_overlap=float(T.RPN_NEGATIVE_OVERLAP),
                   clobber_positives=bool(T.RPN_CLOBBER_POSITIVES),
                   fg_fraction=float(T.RPN_FG_FRACTION), batch_size=int(T.RPN_BATCHSIZE),
                   bbox_inside_weights=tuple(float(v) for v in T.RPN_BBOX_INSIDE_WEIGHTS),
                   positive_weight=float(T.RPN_POSITIVE_WEIGHT))


def box_iou(a, b):
    from frcnn.ops import box_iou as _box_iou  # late import: the ops package may be built later
    return _box_iou(a, b, offset=1)


def uniform(n, device, generator=None):
    """n uniform numbers on `device`, drawn from `generator` (on its own device) or the global RNG."""
    if generator is None:
        return torch.rand(n, device=device)
    return torch.rand(n, generator=generator, device=generator.device).to(device)


def subsample(mask, keep, generator=None):
    """Keep a uniformly random subset of at most `keep` True entries of `mask`.

    mask: [N] bool; keep: int or 0-dim tensor -> [N] bool subset of mask. No host sync.
    """
    n = mask.shape[0]
    if n == 0:
        return mask
    key = torch.where(mask, uniform(n, mask.device, generator), torch.full_like(mask, 2, dtype=torch.float32))
    order = torch.argsort(key)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n, device=mask.device)
    return mask & (rank < keep)


def _weights(w, like):
    """[4] weights as a python float when uniform (no host-to-device copy), else a tensor."""
    w = [float(v) for v in w]
    return w[0] if len(set(w)) == 1 else like.new_tensor(w)


def anchor_target(anchors, gt_boxes, im_info, params=AnchorTargetParams(), generator=None):
    """Labels and regression targets of every anchor of one image.

    anchors: [N, 4] all shifted anchors, order (h, w, a); gt_boxes: [G, 5] (x1, y1, x2, y2, cls)
    scaled image coords; im_info: [3] (h, w, scale) tensor.
    Returns labels [N] int64 (1 fg, 0 bg, -1 ignore), bbox_targets [N, 4] (not normalised),
    bbox_inside_weights [N, 4], bbox_outside_weights [N, 4] (1/#sampled on sampled anchors).

    params: AnchorTargetParams; generator: torch.Generator of the sampling (None: global RNG).

    Only anchors fully inside the image (with `allowed_border`) get a label. Labels: max IoU <
    negative_overlap -> 0, every anchor tying a gt's best IoU -> 1, IoU >= positive_overlap
    -> 1 (bg first unless clobber_positives). Then at most fg_fraction * batch_size fg
    and batch_size - #fg bg survive. A gt whose best IoU is 0 marks no anchor (the reference
    would mark every zero-IoU anchor fg); with no gt all inside anchors are bg candidates.
    """
    P = params
    allowed_border = P.allowed_border
    device = anchors.device
    n = anchors.shape[0]
    im_info = im_info.to(device=device, dtype=anchors.dtype)
    inside = ((anchors[:, 0] >= -allowed_border) & (anchors[:, 1] >= -allowed_border) &
              (anchors[:, 2] < im_info[1] + allowed_border) & (anchors[:, 3] < im_info[0] + allowed_border))
    gt = gt_boxes[:, :4].to(device=device, dtype=anchors.dtype)
    if gt.shape[0] > 0:
        overlaps = box_iou(anchors, gt)                                   # [N, G]
        overlaps = torch.where(inside[:, None], overlaps, overlaps.new_full((), -1.0))
        max_ov, argmax_ov = overlaps.max(dim=1)
        gt_max = overlaps.max(dim=0).values                               # [G], over inside anchors
        best = ((overlaps == gt_max[None, :]) & (gt_max[None, :] > 0)).any(dim=1) & inside
        targets = bbox_transform(anchors, gt[argmax_ov])
    else:
        max_ov = torch.zeros(n, dtype=anchors.dtype, device=device)
        best = torch.zeros(n, dtype=torch.bool, device=device)
        targets = anchors.new_zeros((n, 4))
    neg = inside & (max_ov < P.negative_overlap)
    pos = inside & (max_ov >= P.positive_overlap)
    # torch.where, not masked assignment: no nonzero() sync on CUDA
    if P.clobber_positives:
        fg_cand, bg_cand = (best | pos) & ~neg, neg
    else:
        fg_cand = best | pos
        bg_cand = neg & ~fg_cand

    num_fg = int(P.fg_fraction * P.batch_size)
    fg = subsample(fg_cand, num_fg, generator)
    num_bg = P.batch_size - fg.sum()
    bg = subsample(bg_cand, num_bg, generator)
    labels = torch.where(fg, 1, torch.where(bg, 0, -1))

    inside_w, outside_w = _loss_weights(fg, bg, P, anchors.dtype)
    targets = targets * inside[:, None].to(anchors.dtype)   # zero outside, as the reference's unmap
    return labels, targets, inside_w, outside_w


def _loss_weights(fg, bg, params, dtype):
    """bbox_inside_weights (fg anchors) and bbox_outside_weights (1/#sampled, or
    RPN_POSITIVE_WEIGHT split over fg and bg), both [N, 4]."""
    n = fg.shape[0]
    fgf = fg.to(dtype)[:, None]
    inside_w = fgf.expand(n, 4) * _weights(params.bbox_inside_weights, fgf)
    if params.positive_weight < 0:
        w = 1.0 / (fg | bg).to(dtype).sum().clamp(min=1.0)
        pos_w, neg_w = w, w
    else:
        pos_w = params.positive_weight / fg.sum().clamp(min=1)
        neg_w = (1.0 - params.positive_weight) / bg.sum().clamp(min=1)
    outside_w = (fgf * pos_w + bg.to(dtype)[:, None] * neg_w).expand(n, 4).contiguous()
    return inside_w, outside_w
