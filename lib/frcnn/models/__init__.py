"""Detection models: `build_model(net, num_classes, cfg, parts)` over the VGG16, ZF, TINY, ELITE0 backbones."""
import numpy as np

from frcnn.models.faster_rcnn import FasterRCNN
from frcnn.models.roi_heads import RoIHeads
from frcnn.models.rpn import RPN
from frcnn.roi_data.proposal_target import ProposalTargetParams

NETS = ("VGG16", "ZF", "TINY", "ELITE0")
# Nets that train faster under bf16 autocast on a CPU with bf16 matrix units (SOLVER.AMP 'auto';
# measured in docs/PERFORMANCE.md: VGG16 2.6-3.8x, ZF 1.6x); TINY's small convs gain nothing and
# ELITE0's depthwise convs train 1.6x slower in bf16.
BF16_PAYS_ON_CPU = ("VGG16", "ZF")


def build_backbone(net, cfg=None, pretrained=True):
    """Shared convs of `net` (random init, except ELITE0 which loads its ImageNet weights when
    `pretrained`)."""
    name = net.upper()
    if name == "VGG16":
        from frcnn.models.vgg16 import VGG16
        return VGG16()
    if name == "ZF":
        from frcnn.models.zf import ZF
        return ZF()
    if name == "TINY":
        from frcnn.models.tiny import Tiny
        return Tiny()
    if name == "ELITE0":
        from frcnn.models.elite0 import Elite0
        means = cfg.PIXEL_MEANS if cfg is not None else (102.9801, 115.9465, 122.7717)
        return Elite0(pixel_means=np.asarray(means).reshape(3), pretrained=pretrained)
    raise ValueError(f"unknown net {net!r}: choose one of {', '.join(NETS)}")


def pooling_kwargs(cfg):
    """RoIHeads' RoI feature arguments from cfg POOLING_MODE / _ALIGNED / _SAMPLING_RATIO."""
    return {"pooling_mode": str(cfg.POOLING_MODE).lower(),
            "pooling_aligned": bool(cfg.POOLING_ALIGNED),
            "sampling_ratio": int(cfg.POOLING_SAMPLING_RATIO)}


def pooling_meta(cfg):
    """What a final model file records about its RoI features (merged into its `extra`)."""
    kw = pooling_kwargs(cfg)
    return {"pooling": {"mode": kw["pooling_mode"], "aligned": kw["pooling_aligned"],
                        "sampling_ratio": kw["sampling_ratio"]}}


def check_pooling(saved, cfg, path):
    """Raises ValueError when the model file's RoI feature mode (`saved`: the file's dict) is not
    the cfg's. Files without the record predate the option: RoI pooling."""
    rec = saved.get("pooling") if isinstance(saved, dict) else None
    rec = rec or {"mode": "pool"}
    want = pooling_meta(cfg)["pooling"]

    def key(r):  # aligned / sampling_ratio matter for align only
        return (r["mode"],) if r["mode"] == "pool" else (r["mode"], bool(r["aligned"]),
                                                          int(r["sampling_ratio"]))

    def text(r):
        if r["mode"] == "pool":
            return "POOLING_MODE pool"
        return (f"POOLING_MODE align POOLING_ALIGNED {r['aligned']} "
                f"POOLING_SAMPLING_RATIO {r['sampling_ratio']}")

    if key(rec) != key(want):
        raise ValueError(f"{path} was trained with {text(rec)}, but the cfg has {text(want)}: "
                         f"test with the cfg it was trained with, e.g. --set {text(rec)}")


def build_model(net, num_classes, cfg, parts=("rpn", "head"), pretrained=True, ims_per_batch=None):
    """FasterRCNN for `net` with the parts named in `parts` ("rpn", "head").

    num_classes: K+1 including background. RPN and predictors get the reference init.
    ims_per_batch: images per forward in training (default TRAIN.IMS_PER_BATCH); the caller
    gives the data loader the same number; RoIs per image = TRAIN.BATCH_SIZE / it.
    The cfg is read here, once: the stages get parameter records.
    With TRAIN.BBOX_NORMALIZE_TARGETS_PRECOMPUTED (end2end) the bbox normalisation buffers are
    set to the cfg BBOX_NORMALIZE_MEANS/STDS; otherwise they start as identity (alt-opt sets the
    empirical stats with model.set_bbox_normalization).
    """
    unknown = set(parts) - {"rpn", "head"}
    if unknown:
        raise ValueError(f"unknown model parts {sorted(unknown)}: use 'rpn' and/or 'head'")
    backbone = build_backbone(net, cfg, pretrained)
    if int(cfg.FEAT_STRIDE) != backbone.feat_stride:
        from frcnn.errors import ConfigError

        raise ConfigError(f"FEAT_STRIDE {cfg.FEAT_STRIDE} does not match {net}'s conv stride "
                         f"{backbone.feat_stride}: remove FEAT_STRIDE from the cfg (the net sets it)")
    rpn = RPN.from_cfg(backbone, cfg) if "rpn" in parts else None
    head = None
    if "head" in parts:
        head = backbone.make_head(num_classes, **pooling_kwargs(cfg))
        ims = cfg.TRAIN.IMS_PER_BATCH if ims_per_batch is None else ims_per_batch
        head.set_training_params(ProposalTargetParams.from_cfg(cfg, ims),
                                 sigma=float(cfg.TRAIN.BBOX_SMOOTH_L1_SIGMA),
                                 bbox_reg=cfg.TRAIN.BBOX_REG)
    model = FasterRCNN(backbone, rpn, head)
    if head is not None and cfg.TRAIN.BBOX_NORMALIZE_TARGETS and cfg.TRAIN.BBOX_NORMALIZE_TARGETS_PRECOMPUTED:
        model.set_bbox_normalization(np.asarray(cfg.TRAIN.BBOX_NORMALIZE_MEANS, dtype=np.float32),
                                     np.asarray(cfg.TRAIN.BBOX_NORMALIZE_STDS, dtype=np.float32))
    return model


__all__ = ["build_model", "build_backbone", "pooling_kwargs", "pooling_meta", "check_pooling",
           "FasterRCNN", "RPN", "RoIHeads", "NETS"]
