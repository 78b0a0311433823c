"""Fast R-CNN training RoIs and targets (py-faster-rcnn proposal_target_layer / minibatch), per image."""
import torch

from frcnn.fast_rcnn.bbox_transform import bbox_transform
from frcnn.rpn.anchor_target import _weights, box_iou


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


def proposal_target(rois, gt_boxes, num_classes, cfg, means=None, stds=None, generator=None):
    """Sample RoIs of one image and build their Fast R-CNN targets.

    rois: [R, 4] candidate boxes (scaled image coords, gt not included); gt_boxes: [G, 5]
    (x1, y1, x2, y2, cls); num_classes: K+1 including background; means, stds: [K+1, 4] per-class
    target normalisation (None: none).
    Returns dict: 'rois' [S, 4], 'labels' [S] int64, 'bbox_targets' [S, 4(K+1)],
    'bbox_inside_weights' [S, 4(K+1)], 'bbox_outside_weights' [S, 4(K+1)]; fg rows first.

    gt is appended; rois_per_image = BATCH_SIZE / IMS_PER_BATCH; fg (IoU >= FG_THRESH) up to
    round(FG_FRACTION * rois_per_image), bg (IoU in [BG_THRESH_LO, BG_THRESH_HI)) fills the rest;
    both without replacement, so S may be smaller than rois_per_image.
    """
    T = cfg.TRAIN
    device = rois.device
    gt = gt_boxes.to(device=device, dtype=rois.dtype)
    all_rois = torch.cat((rois[:, :4], gt[:, :4]), dim=0)
    rois_per_image = T.BATCH_SIZE / T.IMS_PER_BATCH
    fg_per_image = int(round(T.FG_FRACTION * rois_per_image))  # reference: np.round

    if gt.shape[0] > 0:
        overlaps = box_iou(all_rois, gt[:, :4])
        max_ov, assign = overlaps.max(dim=1)
        labels = gt[assign, 4].long()
    else:
        max_ov = all_rois.new_zeros(all_rois.shape[0])
        assign = torch.zeros(all_rois.shape[0], dtype=torch.long, device=device)
        labels = torch.zeros(all_rois.shape[0], dtype=torch.long, device=device)

    fg_inds = _choice(max_ov >= T.FG_THRESH, fg_per_image, generator)
    num_fg = fg_inds.numel()
    bg_mask = (max_ov < T.BG_THRESH_HI) & (max_ov >= T.BG_THRESH_LO)
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
        inside_w[rows, cols] = torch.ones_like(t) * _weights(T.BBOX_INSIDE_WEIGHTS, t)
    return {"rois": out_rois, "labels": labels, "bbox_targets": targets,
            "bbox_inside_weights": inside_w, "bbox_outside_weights": (inside_w > 0).to(inside_w.dtype)}
