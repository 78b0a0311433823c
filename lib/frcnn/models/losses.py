"""Losses of Faster R-CNN as Caffe computes them (SoftmaxWithLoss, SmoothL1Loss)."""
import torch
import torch.nn.functional as F


def smooth_l1(pred, targets, inside_w, outside_w, sigma):
    """Elementwise outside_w * smoothL1_sigma(inside_w * (pred - targets)), not reduced.

    smoothL1(x) = 0.5 (sigma x)^2 if |x| < 1/sigma^2 else |x| - 0.5/sigma^2.
    """
    s2 = sigma * sigma
    d = inside_w * (pred - targets)
    ad = d.abs()
    return outside_w * torch.where(ad < 1.0 / s2, 0.5 * s2 * d * d, ad - 0.5 / s2)


def rpn_losses(cls_logits, deltas, labels, targets, inside_w, outside_w, sigma=3.0):
    """RPN losses of a batch: the per-image Caffe losses averaged over the images that have
    sampled anchors (as Caffe's iter_size averages the 1-image batches of the reference).

    cls_logits: [B, N, 2] (bg, fg); deltas, targets, weights: [B, N, 4]; labels: [B, N] in {-1, 0, 1}.
    Per image: CE averaged over sampled anchors (label >= 0); smooth L1 (sigma 3) weighted by
    outside_w (1/#sampled) and summed. No sampled anchor at all gives zero losses.
    """
    valid = (labels >= 0)
    ce = F.cross_entropy(cls_logits.reshape(-1, 2), labels.clamp(min=0).reshape(-1), reduction="none")
    ce = (ce.view_as(labels) * valid).sum(1) / valid.sum(1).clamp(min=1)
    box = smooth_l1(deltas, targets, inside_w, outside_w, sigma).sum(dim=(1, 2))
    n_img = valid.any(dim=1).sum().clamp(min=1)
    return ce.sum() / n_img, box.sum() / n_img


def fast_rcnn_losses(cls_logits, bbox_pred, labels, targets, inside_w, outside_w, sigma=1.0):
    """Fast R-CNN losses over all RoIs of a batch.

    cls_logits: [R, K+1]; bbox_pred, targets, weights: [R, 4(K+1)]; labels: [R] int64.
    CE averaged over RoIs; smooth L1 (sigma 1) summed over all slots (non-zero only on each fg
    RoI's class) and divided by R. R == 0 gives zero losses that still reach the parameters.
    """
    R = labels.shape[0]
    if R == 0:
        z = cls_logits.sum() * 0.0 + bbox_pred.sum() * 0.0
        return z, z.clone()
    ce = F.cross_entropy(cls_logits, labels)
    box = smooth_l1(bbox_pred, targets, inside_w, outside_w, sigma).sum() / R
    return ce, box
