"""The Fast R-CNN stage: RoI sampling for training, RoI features, the net's fc layers, the
predictors, the losses and the eval outputs (torchvision's RoIHeads shape, py-faster-rcnn's
numbers). Each net's head subclasses RoIHeads and defines `top`.

bbox_pred column 4c+k is class c's delta k (the reference's layout).
"""
import torch
import torch.nn as nn

from frcnn.models.losses import fast_rcnn_losses
from frcnn.models.rpn import normal_init
from frcnn.roi_data.proposal_target import ProposalTargetParams, proposal_target


def with_batch_index(boxes):
    """list of [P_i, 4] -> [sum P_i, 5] with the image index in column 0."""
    return torch.cat([torch.cat((b.new_full((b.shape[0], 1), float(i)), b[:, :4]), dim=1)
                      for i, b in enumerate(boxes)])


class RoIHeads(nn.Module):
    """RoI pooling, a net-specific `top` (fc layers), cls_score and bbox_pred, and their logic.

    num_classes: K+1 including background. Subclasses define `top(pooled [R, C, h, w]) -> [R, D]`.
    pooling_mode: "pool" (the paper's RoI max pooling) or "align" (RoIAlign with
    `pooling_aligned` and `sampling_ratio`); cfg POOLING_* via frcnn.models.pooling_kwargs.
    Training numbers (`set_training_params`): proposal_target_params, the loss sigma, bbox_reg.
    """

    def __init__(self, num_classes, roi_size, spatial_scale, top_dim, pooling_mode="pool",
                 pooling_aligned=True, sampling_ratio=2):
        super().__init__()
        if pooling_mode not in ("pool", "align"):
            raise ValueError(f"pooling_mode {pooling_mode!r}: use 'pool' or 'align' "
                             "(cfg POOLING_MODE)")
        self.num_classes = num_classes
        self.roi_size = roi_size
        self.spatial_scale = spatial_scale
        self.pooling_mode = pooling_mode
        self.pooling_aligned = bool(pooling_aligned)
        self.sampling_ratio = int(sampling_ratio)
        self.cls_score = nn.Linear(top_dim, num_classes)
        self.bbox_pred = nn.Linear(top_dim, 4 * num_classes)
        self.set_training_params()
        self.reset_predictors()

    def set_training_params(self, proposal_target_params=ProposalTargetParams(), sigma=1.0,
                            bbox_reg=True):
        """bbox_reg False (TRAIN.BBOX_REG): no 'bbox_loss', the head learns no box regression."""
        self.proposal_target_params = proposal_target_params
        self.sigma = float(sigma)
        self.bbox_reg = bool(bbox_reg)

    def reset_predictors(self):
        """Reference init: cls_score N(0, 0.01), bbox_pred N(0, 0.001), zero biases."""
        normal_init(self.cls_score, 0.01)
        normal_init(self.bbox_pred, 0.001)

    def top(self, pooled):
        raise NotImplementedError

    def predict(self, feats, rois):
        """feats: [B, C, H, W]; rois: [R, 5] (batch idx, x1, y1, x2, y2) scaled image coords
        -> (cls logits [R, K+1], bbox deltas [R, 4(K+1)])."""
        from frcnn.ops import roi_align, roi_pool

        if self.pooling_mode == "align":  # float32 rois whatever the features' dtype
            pooled = roi_align(feats, rois, self.roi_size, self.spatial_scale,
                               self.sampling_ratio, self.pooling_aligned)
        else:
            pooled = roi_pool(feats, rois.to(feats.dtype), self.roi_size, self.spatial_scale)
        x = self.top(pooled)
        return self.cls_score(x), self.bbox_pred(x)

    def select_training_samples(self, boxes, gt_boxes, means, stds, generators):
        """Per image: + gt, fg/bg sampling, class-specific targets (normalised by means/stds)."""
        return [proposal_target(boxes[i], gt_boxes[i].to(boxes[i].device).float(),
                                self.num_classes, self.proposal_target_params, means, stds,
                                generators[i]) for i in range(len(boxes))]

    def compute_loss(self, cls_logits, bbox_pred, samples):
        def cat(key):
            return torch.cat([s[key] for s in samples])

        cls_loss, bbox_loss = fast_rcnn_losses(
            cls_logits.float(), bbox_pred.float(), cat("labels"), cat("bbox_targets"),
            cat("bbox_inside_weights"), cat("bbox_outside_weights"), sigma=self.sigma)
        return {"cls_loss": cls_loss, "bbox_loss": bbox_loss} if self.bbox_reg \
            else {"cls_loss": cls_loss}

    @staticmethod
    def eval_outputs(cls_logits, bbox_pred, means, stds):
        """-> {'cls_prob' [R, K+1], 'bbox_pred' [R, 4(K+1)] un-normalised raw deltas}."""
        return {"cls_prob": torch.softmax(cls_logits.float(), dim=1),
                "bbox_pred": bbox_pred.float() * stds.reshape(1, -1) + means.reshape(1, -1)}

    def forward(self, feats, boxes, means, stds, gt_boxes=None, generators=None):
        """boxes: list of [P, 4] per image (scaled coords); means, stds: [K+1, 4] target
        normalisation. Training -> losses; eval -> {'rois' [R, 5], 'cls_prob', 'bbox_pred'}."""
        if self.training:
            samples = self.select_training_samples(boxes, gt_boxes, means, stds, generators)
            cls_logits, bbox_pred = self.predict(feats, with_batch_index([s["rois"] for s in samples]))
            return self.compute_loss(cls_logits, bbox_pred, samples)
        rois = with_batch_index(boxes)
        cls_logits, bbox_pred = self.predict(feats, rois)
        return {"rois": rois, **self.eval_outputs(cls_logits, bbox_pred, means, stds)}
