"""The Region Proposal Network as one stage: its layers, anchors, training targets, losses and
proposals (py-faster-rcnn's rpn/ layers composed as torchvision's RegionProposalNetwork).

Channel layouts follow the reference so Caffe weights map 1:1: rpn_cls_score has 2A channels,
bg scores 0..A-1 then fg A..2A-1 (softmax over channel pairs (a, A+a)); rpn_bbox_pred channel
4a+k. Anchors are ordered (h, w, a).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from frcnn.models.losses import rpn_losses
from frcnn.rpn.anchor_target import AnchorTargetParams, anchor_target
from frcnn.rpn.generate_anchors import generate_anchors, shifted_anchors
from frcnn.rpn.proposal_layer import ProposalParams, proposal_layer


def normal_init(module, std):
    nn.init.normal_(module.weight, 0.0, std)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def make_anchors(ratios, scales, base_size=16):
    """Reference anchors [A, 4] (ANCHOR_RATIOS, ANCHOR_SCALES of the cfg)."""
    return generate_anchors(base_size, ratios, scales)


class RPN(nn.Module):
    """rpn_conv (3x3, ReLU) -> rpn_cls_score (1x1, 2A) and rpn_bbox_pred (1x1, 4A), and the
    stage's logic: anchors of a feature map, anchor targets, losses, proposals.

    anchors: [A, 4] reference anchors (non-persistent buffer); feat_stride: the backbone's.
    The numbers come in as parameter records (`from_cfg` reads the cfg once).
    """

    def __init__(self, in_channels, mid_channels, anchors, feat_stride=16, *,
                 anchor_target_params=AnchorTargetParams(),
                 train_proposal_params=ProposalParams(12000, 2000, 0.7, 16),
                 test_proposal_params=ProposalParams(6000, 300, 0.7, 16),
                 sigma=3.0, bbox_loss_weight=1.0):
        super().__init__()
        anchors = torch.as_tensor(anchors, dtype=torch.float32)
        self.num_anchors = A = anchors.shape[0]
        self.feat_stride = int(feat_stride)
        self.register_buffer("anchors", anchors, persistent=False)
        self.rpn_conv = nn.Conv2d(in_channels, mid_channels, 3, padding=1)
        self.rpn_cls_score = nn.Conv2d(mid_channels, 2 * A, 1)
        self.rpn_bbox_pred = nn.Conv2d(mid_channels, 4 * A, 1)
        self.anchor_target_params = anchor_target_params
        self.train_proposal_params = train_proposal_params
        self.test_proposal_params = test_proposal_params
        self.sigma = float(sigma)
        self.bbox_loss_weight = float(bbox_loss_weight)
        self.reset_parameters()

    @classmethod
    def from_cfg(cls, backbone, cfg):
        """ANCHOR_RATIOS / ANCHOR_SCALES, TRAIN.RPN_* and TEST.RPN_* read once."""
        anchors = make_anchors(cfg.ANCHOR_RATIOS, cfg.ANCHOR_SCALES, backbone.feat_stride)
        return cls(backbone.out_channels, backbone.rpn_channels, anchors, backbone.feat_stride,
                   anchor_target_params=AnchorTargetParams.from_cfg(cfg),
                   train_proposal_params=ProposalParams.from_cfg(cfg, train=True),
                   test_proposal_params=ProposalParams.from_cfg(cfg, train=False),
                   bbox_loss_weight=cfg.TRAIN.RPN_BBOX_LOSS_WEIGHT)

    def reset_parameters(self):
        """Reference init: N(0, 0.01) weights, zero biases."""
        for m in (self.rpn_conv, self.rpn_cls_score, self.rpn_bbox_pred):
            normal_init(m, 0.01)

    def anchors_for(self, height, width):
        """Shifted anchors [height * width * A, 4] of a feature map, cached by its size: training
        sees few distinct blob sizes (aspect grouping), testing often one."""
        def make():
            return shifted_anchors(height, width, self.feat_stride, self.anchors,
                                   device=self.anchors.device)

        if torch.compiler.is_compiling() or not (isinstance(height, int) and isinstance(width, int)):
            return make()  # traced / exported with symbolic sizes: int() would specialise them
        key = (height, width, self.feat_stride, self.anchors.device)
        cache = self.__dict__.setdefault("_anchor_cache", {})
        if key not in cache:
            if len(cache) >= 64:
                cache.clear()
            cache[key] = make()
        return cache[key]

    def predict(self, feats):
        """feats: [B, C, H, W] -> (cls logits [B, H*W*A, 2] (bg, fg), deltas [B, H*W*A, 4])."""
        x = F.relu(self.rpn_conv(feats))
        cls = self.rpn_cls_score(x)
        box = self.rpn_bbox_pred(x)
        B, _, H, W = cls.shape
        A = self.num_anchors
        cls = cls.view(B, 2, A, H, W).permute(0, 3, 4, 2, 1).reshape(B, H * W * A, 2)
        box = box.view(B, A, 4, H, W).permute(0, 3, 4, 1, 2).reshape(B, H * W * A, 4)
        return cls, box

    def compute_loss(self, cls, deltas, anchors, im_info, gt_boxes, generators):
        """Anchor targets of every image (sampled with its generator), then the paper's losses."""
        tg = [anchor_target(anchors, gt_boxes[i].to(cls.device), im_info[i],
                            self.anchor_target_params, generators[i]) for i in range(len(gt_boxes))]
        labels, targets, in_w, out_w = (torch.stack(t) for t in zip(*tg))
        cls_loss, bbox_loss = rpn_losses(cls, deltas, labels, targets, in_w, out_w, sigma=self.sigma)
        if self.bbox_loss_weight != 1.0:  # Table 9's lambda (docs/EXPERIMENTS.md)
            bbox_loss = bbox_loss * self.bbox_loss_weight
        return {"rpn_cls_loss": cls_loss, "rpn_bbox_loss": bbox_loss}

    @torch.no_grad()
    def filter_proposals(self, cls, deltas, anchors, im_info):
        """fg scores -> per image (boxes [P, 4], scores [P]) by the train or test parameters."""
        fg = torch.softmax(cls.detach(), dim=2)[..., 1]
        params = self.train_proposal_params if self.training else self.test_proposal_params
        props = [proposal_layer(fg[i], deltas[i].detach(), anchors, im_info[i], params)
                 for i in range(fg.shape[0])]
        return [p[0] for p in props], [p[1] for p in props]

    def forward(self, feats, im_info, gt_boxes=None, generators=None, want_proposals=True):
        """-> (boxes list of [P, 4] or None, scores list of [P] or None, losses dict).

        Training computes the losses (gt_boxes: list of [G, 5]; generators: one per image);
        proposals are made only when `want_proposals`.
        """
        cls, deltas = self.predict(feats)
        cls, deltas = cls.float(), deltas.float()
        anchors = self.anchors_for(feats.shape[2], feats.shape[3])
        losses = {}
        if self.training:
            losses = self.compute_loss(cls, deltas, anchors, im_info, gt_boxes, generators)
        if not want_proposals:
            return None, None, losses
        boxes, scores = self.filter_proposals(cls, deltas, anchors, im_info)
        return boxes, scores, losses
