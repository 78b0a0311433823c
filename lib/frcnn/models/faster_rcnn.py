"""Faster R-CNN: shared convs (backbone) -> RPN (models/rpn.py) -> RoI heads (models/roi_heads.py),
as in py-faster-rcnn. Each stage owns its logic; FasterRCNN only composes them and holds the
bbox target normalisation (state-dict keys unchanged since the first model files:
backbone.*, rpn.*, head.*, bbox_means, bbox_stds).
"""
import torch
import torch.nn as nn

from frcnn.models.roi_heads import with_batch_index


class FasterRCNN(nn.Module):
    """backbone (shared convs) + optional rpn (RPN) + optional head (RoIHeads).

    train: forward(images [B,3,H,W], im_info [B,3], gt_boxes list of [G,5], proposals=None,
      generators=None) -> {'rpn_cls_loss', 'rpn_bbox_loss'} (if rpn) and {'cls_loss',
      'bbox_loss'} (if head; no 'bbox_loss' when bbox_reg is False); the head trains on
      `proposals` (list of [P,4] scaled) when given, else on detached RPN proposals.
    eval: forward(images, im_info, proposals=None) -> {'rois' [R,5], 'rpn_scores' [R] (RPN
      proposals only), 'cls_prob' [R,K+1], 'bbox_pred' [R,4(K+1)] un-normalised} (head outputs
      only with a head).
    generators: None (the global RNG) or a list of B torch.Generators, one per image, that draw
      the anchor and RoI samples (the Trainer seeds each from the image's place in the global
      batch, so samples do not depend on how images are spread over processes).
    The stages' numbers are their own parameter records (`RPN.from_cfg`, head
    `set_training_params`; `frcnn.models.build_model` reads the cfg), never a cfg.
    """

    def __init__(self, backbone, rpn=None, head=None):
        super().__init__()
        self.backbone = backbone
        self.rpn = rpn
        self.head = head
        k = head.num_classes if head is not None else 1
        self.register_buffer("bbox_means", torch.zeros(k, 4))
        self.register_buffer("bbox_stds", torch.ones(k, 4))

    # --- bbox target normalisation -------------------------------------------------------
    def set_bbox_normalization(self, means, stds):
        """means, stds: [K+1, 4] (or [4], tiled) used by proposal_target; applied inverse at eval."""
        means = torch.as_tensor(means, dtype=torch.float32).reshape(-1, 4)
        stds = torch.as_tensor(stds, dtype=torch.float32).reshape(-1, 4)
        k = self.bbox_means.shape[0]
        self.bbox_means.copy_(means.expand(k, 4))
        self.bbox_stds.copy_(stds.expand(k, 4))

    def unnormalized_state_dict(self):
        """state_dict with bbox_pred folded by the means/stds (and identity buffers), so the saved
        weights predict raw deltas, as py-faster-rcnn's snapshots."""
        sd = {k: v.detach().clone() for k, v in self.state_dict().items()}
        if self.head is not None:
            s = self.bbox_stds.reshape(-1)
            m = self.bbox_means.reshape(-1)
            sd["head.bbox_pred.weight"] = sd["head.bbox_pred.weight"] * s[:, None]
            sd["head.bbox_pred.bias"] = sd["head.bbox_pred.bias"] * s + m
            sd["bbox_means"] = torch.zeros_like(self.bbox_means)
            sd["bbox_stds"] = torch.ones_like(self.bbox_stds)
        return sd

    def frozen_parameter_names(self):
        """Names of backbone parameters under backbone.frozen_prefixes (module paths)."""
        pre = tuple(getattr(self.backbone, "frozen_prefixes", ()))
        out = []
        for n, _ in self.backbone.named_parameters():
            if any(n == p or n.startswith(p + ".") for p in pre):
                out.append("backbone." + n)
        return out

    # --- forward -------------------------------------------------------------------------
    def forward(self, images, im_info, gt_boxes=None, proposals=None, generators=None):
        im_info = im_info.to(images.device).float()
        if images.device.type == "cpu":
            # oneDNN convolutions run 1.2-1.4x faster channels-last on the CPU (ELITE0's
            # depthwise backward most); roi_pool reads that layout without a copy
            images = images.contiguous(memory_format=torch.channels_last)
        feats = self.backbone(images)
        generators = self._check_inputs(feats.shape[0], gt_boxes, generators)
        out, boxes, scores = {}, None, None
        if self.rpn is not None:
            want = proposals is None and (self.head is not None or not self.training)
            boxes, scores, losses = self.rpn(feats, im_info, gt_boxes, generators, want)
            out.update(losses)
        if proposals is not None:
            boxes = [torch.as_tensor(p, device=feats.device).float()[:, :4] for p in proposals]
            scores = None
        if self.head is None:
            return out if self.training else self._eval_outputs(with_batch_index(boxes), scores)
        if boxes is None:
            raise ValueError("a model without an RPN needs `proposals`")
        head_out = self.head(feats, boxes, self.bbox_means, self.bbox_stds, gt_boxes, generators)
        if self.training:
            return {**out, **head_out}
        return self._eval_outputs(head_out.pop("rois"), scores, head_out)

    def _check_inputs(self, num_images, gt_boxes, generators):
        if self.training and gt_boxes is None:
            raise ValueError("training forward needs gt_boxes (list of [G, 5] tensors)")
        if generators is None:
            return [None] * num_images
        if len(generators) != num_images:
            raise ValueError(f"{len(generators)} sampling generators for {num_images} images")
        return generators

    @staticmethod
    def _eval_outputs(rois, scores, head_out=None):
        out = {"rois": rois}
        if scores is not None:
            out["rpn_scores"] = torch.cat(scores)
        out.update(head_out or {})
        return out
