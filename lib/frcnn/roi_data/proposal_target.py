"""Fast R-CNN training RoIs and targets (py-faster-rcnn proposal_target_layer; the fg/bg RoI
sampling its roi_data_layer/minibatch did), per image, on device."""
from dataclasses import dataclass

import torch

from frcnn.utils.bbox_transform import bbox_transform
from frcnn.rpn.anchor_target import _weights, box_iou


@dataclass(frozen=True)
class ProposalTargetParams:
    """The numbers of proposal_target. rois_per_image = TRAIN.BATCH_SIZE / images per batch,
    where the images per batch are the ones the data loader really uses (one source)."""

    rois_per_image: float = 64.0
    fg_fraction: float = 0.25
    fg_thresh: float = 0.5
    bg_thresh_hi: float = 0.5
    bg_thresh_lo: float = 0.1
    bbox_inside_weights: tuple = (1.0, 1.0, 1.0, 1.0)

    @classmethod
    def from_cfg(cls, cfg, ims_per_batch):
        T = cfg.TRAIN
        if int(ims_per_batch) < 1:
            raise ValueError(f"images per batch must be >= 1, got {ims_per_batch}")
        return cls(rois_per_image=T.BATCH_SIZE / int(ims_per_batch),
                   fg_fraction=float(T.FG_FRACTION), fg_thresh=float(T.FG_THRESH),
                   bg_thresh_hi=float(T.BG_THRESH_HI), bg_thresh_lo=float(T.BG_THRESH_LO),
                   bbox_inside_weights=tuple(float(v) for v in T.BBOX_INSIDE_WEIGHTS))


def _choice(mask, n, generator):
    """Indices of a uniformly random subset of size min(n, mask.sum()) of mask's True entries."""
    idx = torch.nonzero(mask).squeeze(1)
    if idx.numel() > n:
        if generator is None:
            perm = torch.randperm(idx.numel(), device=idx.device)
        else:
            perm = torch.randperm(idx.numel(), generator=generator, device=generator.device).to(idx.device)
        idx = idx[perm[:n]]
    return idx


def proposal_target(rois, gt_boxes, num_classes, params=ProposalTargetParams(), means=None,
                    stds=None, generator=None):
    """Sample RoIs of one image and build their Fast R-CNN targets.

    rois: [R, 4] candidate boxes (scaled image coords, gt not included); gt_boxes: [G, 5]
    (x1, y1, x2, y2, cls); num_classes: K+1 including background; means, stds: [K+1, 4] per-class
    target normalisation (None: none).
    Returns dict: 'rois' [S, 4], 'labels' [S] int64, 'bbox_targets' [S, 4(K+1)],
    'bbox_inside_weights' [S, 4(K+1)], 'bbox_outside_weights' [S, 4(K+1)]; fg rows first.

    gt is appended; fg (IoU >= fg_thresh) up to round(fg_fraction * rois_per_image), bg (IoU in
    [bg_thresh_lo, bg_thresh_hi)) fills the rest;
    both without replacement, so S may be smaller than rois_per_image. With no gt (a background
    image) every RoI is a bg candidate, whatever bg_thresh_lo.
    """
    P = params
    device = rois.device
    gt = gt_boxes.to(device=device, dtype=rois.dtype)
    all_rois = torch.cat((rois[:, :4], gt[:, :4]), dim=0)
    rois_per_image = P.rois_per_image
    fg_per_image = int(round(P.fg_fraction * rois_per_image))  # reference: np.round

    if gt.shape[0] > 0:
        overlaps = box_iou(all_rois, gt[:, :4])
        max_ov, assign = overlaps.max(dim=1)
        labels = gt[assign, 4].long()
    else:
        max_ov = all_rois.new_zeros(all_rois.shape[0])
        assign = torch.zeros(all_rois.shape[0], dtype=torch.long, device=device)
        labels = torch.zeros(all_rois.shape[0], dtype=torch.long, device=device)

    fg_inds = _choice(max_ov >= P.fg_thresh, fg_per_image, generator)
    num_fg = fg_inds.numel()
    bg_mask = (max_ov < P.bg_thresh_hi) & (max_ov >= P.bg_thresh_lo)
    if gt.shape[0] == 0:  # a background image: every RoI is a negative (no gt to be near)
        bg_mask = torch.ones_like(max_ov, dtype=torch.bool)
    bg_inds = _choice(bg_mask, int(rois_per_image - num_fg), generator)
    keep = torch.cat((fg_inds, bg_inds))
    labels = labels[keep].clone()
    labels[num_fg:] = 0
    out_rois = all_rois[keep]

    S = keep.numel()
    targets = out_rois.new_zeros((S, 4 * num_classes))
    inside_w = out_rois.new_zeros((S, 4 * num_classes))
    if num_fg > 0:
        fg_lab = labels[:num_fg]
        t = bbox_transform(out_rois[:num_fg], gt[assign[fg_inds], :4])
        if means is not None:
            t = (t - means.to(t)[fg_lab]) / stds.to(t)[fg_lab]
        cols = (4 * fg_lab)[:, None] + torch.arange(4, device=device)
        rows = torch.arange(num_fg, device=device)[:, None].expand(-1, 4)
        targets[rows, cols] = t
        inside_w[rows, cols] = torch.ones_like(t) * _weights(P.bbox_inside_weights, t)
    return {"rois": out_rois, "labels": labels, "bbox_targets": targets,
            "bbox_inside_weights": inside_w, "bbox_outside_weights": (inside_w > 0).to(inside_w.dtype)}
