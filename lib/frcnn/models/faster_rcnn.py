"""Faster R-CNN: shared convs (backbone), RPN head and Fast R-CNN head, as in py-faster-rcnn.

Channel layouts follow the reference so Caffe weights map 1:1: rpn_cls_score has 2A channels,
bg scores 0..A-1 then fg A..2A-1 (softmax over channel pairs (a, A+a)); rpn_bbox_pred channel
4a+k; bbox_pred column 4c+k. Anchors are ordered (h, w, a).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from frcnn.models.losses import fast_rcnn_losses, rpn_losses
from frcnn.rpn.anchor_target import AnchorTargetParams, anchor_target
from frcnn.rpn.generate_anchors import generate_anchors, shifted_anchors
from frcnn.rpn.proposal_layer import ProposalParams, proposal_layer
from frcnn.roi_data.proposal_target import ProposalTargetParams, proposal_target


def normal_init(module, std):
    nn.init.normal_(module.weight, 0.0, std)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class RPNHead(nn.Module):
    """rpn_conv (3x3, ReLU) -> rpn_cls_score (1x1, 2A) and rpn_bbox_pred (1x1, 4A).

    anchors: [A, 4] reference anchors (non-persistent buffer).
    """

    def __init__(self, in_channels, mid_channels, anchors):
        super().__init__()
        anchors = torch.as_tensor(anchors, dtype=torch.float32)
        self.num_anchors = A = anchors.shape[0]
        self.register_buffer("anchors", anchors, persistent=False)
        self.rpn_conv = nn.Conv2d(in_channels, mid_channels, 3, padding=1)
        self.rpn_cls_score = nn.Conv2d(mid_channels, 2 * A, 1)
        self.rpn_bbox_pred = nn.Conv2d(mid_channels, 4 * A, 1)
        self.reset_parameters()

    def reset_parameters(self):
        """Reference init: N(0, 0.01) weights, zero biases."""
        for m in (self.rpn_conv, self.rpn_cls_score, self.rpn_bbox_pred):
            normal_init(m, 0.01)

    def anchors_for(self, height, width, feat_stride):
        """Shifted anchors [height * width * A, 4] of a feature map, cached by its size: training
        sees few distinct blob sizes (aspect grouping), testing often one."""
        def make():
            return shifted_anchors(height, width, feat_stride, self.anchors, device=self.anchors.device)

        if torch.compiler.is_compiling() or not (isinstance(height, int) and isinstance(width, int)):
            return make()  # traced / exported with symbolic sizes: int() would specialise them
        key = (height, width, int(feat_stride), self.anchors.device)
        cache = self.__dict__.setdefault("_anchor_cache", {})
        if key not in cache:
            if len(cache) >= 64:
                cache.clear()
            cache[key] = make()
        return cache[key]

    def forward(self, feats):
        """feats: [B, C, H, W] -> (cls logits [B, H*W*A, 2] (bg, fg), deltas [B, H*W*A, 4])."""
        x = F.relu(self.rpn_conv(feats))
        cls = self.rpn_cls_score(x)
        box = self.rpn_bbox_pred(x)
        B, _, H, W = cls.shape
        A = self.num_anchors
        cls = cls.view(B, 2, A, H, W).permute(0, 3, 4, 2, 1).reshape(B, H * W * A, 2)
        box = box.view(B, A, 4, H, W).permute(0, 3, 4, 1, 2).reshape(B, H * W * A, 4)
        return cls, box


class FastRCNNHead(nn.Module):
    """RoI pooling, a net-specific `top` (fc layers), cls_score and bbox_pred.

    num_classes: K+1 including background. Subclasses define `top(pooled [R, C, h, w]) -> [R, D]`.
    pooling_mode: "pool" (the paper's RoI max pooling) or "align" (RoIAlign with
    `pooling_aligned` and `sampling_ratio`); cfg POOLING_* via frcnn.models.pooling_kwargs.
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
        self.reset_predictors()

    def reset_predictors(self):
        """Reference init: cls_score N(0, 0.01), bbox_pred N(0, 0.001), zero biases."""
        normal_init(self.cls_score, 0.01)
        normal_init(self.bbox_pred, 0.001)

    def top(self, pooled):
        raise NotImplementedError

    def forward(self, feats, rois):
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


class FasterRCNN(nn.Module):
    """backbone (shared convs) + optional rpn (RPNHead) + optional head (FastRCNNHead).

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
    The layers' numbers come in as parameter records (see `from_cfg`), never from a cfg.
    """

    def __init__(self, backbone, rpn=None, head=None, *,
                 anchor_target_params=AnchorTargetParams(),
                 train_proposal_params=ProposalParams(12000, 2000, 0.7, 16),
                 test_proposal_params=ProposalParams(6000, 300, 0.7, 16),
                 proposal_target_params=ProposalTargetParams(),
                 rpn_sigma=3.0, fast_rcnn_sigma=1.0, bbox_reg=True, rpn_bbox_loss_weight=1.0):
        super().__init__()
        self.backbone = backbone
        self.rpn = rpn
        self.head = head
        self.anchor_target_params = anchor_target_params
        self.train_proposal_params = train_proposal_params
        self.test_proposal_params = test_proposal_params
        self.proposal_target_params = proposal_target_params
        self.rpn_sigma = float(rpn_sigma)
        self.fast_rcnn_sigma = float(fast_rcnn_sigma)
        self.bbox_reg = bool(bbox_reg)
        self.rpn_bbox_loss_weight = float(rpn_bbox_loss_weight)
        k = head.num_classes if head is not None else 1
        self.register_buffer("bbox_means", torch.zeros(k, 4))
        self.register_buffer("bbox_stds", torch.ones(k, 4))

    @classmethod
    def from_cfg(cls, backbone, rpn, head, cfg, ims_per_batch=None):
        """The cfg read once: TRAIN.RPN_* / TEST.RPN_* / TRAIN fg-bg keys, TRAIN.BBOX_REG.

        ims_per_batch: images per forward of the data loader (default TRAIN.IMS_PER_BATCH);
        it sets RoIs per image = TRAIN.BATCH_SIZE / ims_per_batch.
        """
        ims = cfg.TRAIN.IMS_PER_BATCH if ims_per_batch is None else ims_per_batch
        return cls(backbone, rpn, head,
                   anchor_target_params=AnchorTargetParams.from_cfg(cfg),
                   train_proposal_params=ProposalParams.from_cfg(cfg, train=True),
                   test_proposal_params=ProposalParams.from_cfg(cfg, train=False),
                   proposal_target_params=ProposalTargetParams.from_cfg(cfg, ims),
                   bbox_reg=cfg.TRAIN.BBOX_REG,
                   rpn_bbox_loss_weight=cfg.TRAIN.RPN_BBOX_LOSS_WEIGHT)

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
        B, _, H, W = feats.shape
        if generators is None:
            generators = [None] * B
        elif len(generators) != B:
            raise ValueError(f"{len(generators)} sampling generators for {B} images")
        out = {}
        boxes = scores = None
        if self.rpn is not None:
            cls, deltas = self.rpn(feats)
            cls, deltas = cls.float(), deltas.float()
            anchors = self.rpn.anchors_for(H, W, self.backbone.feat_stride)
            if self.training:
                if gt_boxes is None:
                    raise ValueError("training forward needs gt_boxes (list of [G, 5] tensors)")
                tg = [anchor_target(anchors, gt_boxes[i].to(feats.device), im_info[i],
                                    self.anchor_target_params, generators[i]) for i in range(B)]
                labels, targets, in_w, out_w = (torch.stack(t) for t in zip(*tg))
                out["rpn_cls_loss"], out["rpn_bbox_loss"] = rpn_losses(
                    cls, deltas, labels, targets, in_w, out_w, sigma=self.rpn_sigma)
                if self.rpn_bbox_loss_weight != 1.0:  # Table 9's lambda (docs/EXPERIMENTS.md)
                    out["rpn_bbox_loss"] = out["rpn_bbox_loss"] * self.rpn_bbox_loss_weight
            if proposals is None and (self.head is not None or not self.training):
                with torch.no_grad():
                    fg = torch.softmax(cls.detach(), dim=2)[..., 1]
                    params = self.train_proposal_params if self.training \
                        else self.test_proposal_params
                    props = [proposal_layer(fg[i], deltas[i].detach(), anchors, im_info[i], params)
                             for i in range(B)]
                boxes = [p[0] for p in props]
                scores = [p[1] for p in props]
        if proposals is not None:
            boxes = [torch.as_tensor(p, device=feats.device).float()[:, :4] for p in proposals]
            scores = None
        if boxes is None and self.head is not None:
            raise ValueError("a model without an RPN needs `proposals`")

        if self.head is None:
            if not self.training:
                out["rois"] = _with_batch_index(boxes)
                if scores is not None:
                    out["rpn_scores"] = torch.cat(scores)
            return out

        if self.training:
            k = self.head.num_classes
            pts = [proposal_target(boxes[i], gt_boxes[i].to(feats.device).float(), k,
                                   self.proposal_target_params, self.bbox_means, self.bbox_stds,
                                   generators[i]) for i in range(B)]
            rois = _with_batch_index([p["rois"] for p in pts])
            cls_logits, bbox_pred = self.head(feats, rois)
            cat = lambda key: torch.cat([p[key] for p in pts])  # noqa: E731
            cls_loss, bbox_loss = fast_rcnn_losses(
                cls_logits.float(), bbox_pred.float(), cat("labels"), cat("bbox_targets"),
                cat("bbox_inside_weights"), cat("bbox_outside_weights"), sigma=self.fast_rcnn_sigma)
            out["cls_loss"] = cls_loss
            if self.bbox_reg:  # TRAIN.BBOX_REG False: the head learns no box regression
                out["bbox_loss"] = bbox_loss
            return out

        rois = _with_batch_index(boxes)
        cls_logits, bbox_pred = self.head(feats, rois)
        out["rois"] = rois
        if scores is not None:
            out["rpn_scores"] = torch.cat(scores)
        out["cls_prob"] = torch.softmax(cls_logits.float(), dim=1)
        out["bbox_pred"] = bbox_pred.float() * self.bbox_stds.reshape(1, -1) + self.bbox_means.reshape(1, -1)
        return out


def _with_batch_index(boxes):
    """list of [P_i, 4] -> [sum P_i, 5] with the image index in column 0."""
    return torch.cat([torch.cat((b.new_full((b.shape[0], 1), float(i)), b[:, :4]), dim=1)
                      for i, b in enumerate(boxes)])


def make_anchors(ratios, scales, base_size=16):
    """Reference anchors [A, 4] (ANCHOR_RATIOS, ANCHOR_SCALES of the cfg)."""
    return generate_anchors(base_size, ratios, scales)
