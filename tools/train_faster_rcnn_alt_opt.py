#!/usr/bin/env python
"""Faster R-CNN by 4-step alternating optimisation (Ren et al. 2015, section 3.2).

  stage 1 RPN          init ImageNet (--weights), train RPN (+ convs but the stage-1 frozen ones)
  stage 1 proposals    RPN 1 on every train image (unflipped)
  stage 1 Fast R-CNN   init ImageNet, train on RPN-1 proposals
  stage 2 RPN          init convs from Fast R-CNN 1, convs frozen, fresh RPN head
  stage 2 proposals    RPN 2
  stage 2 Fast R-CNN   convs frozen, fc6/fc7 from Fast R-CNN 1, fresh cls_score / bbox_pred
  final                convs of Fast R-CNN 1 + RPN 2 + head of Fast R-CNN 2

Every result lands in output/<EXP_DIR>/<imdb>/ as <net>_stage<N>_{rpn,fast_rcnn}_final.pth,
<net>_stage<N>_rpn_proposals.pkl and <net>_faster_rcnn_final.pth; a rerun skips what exists
and resumes an interrupted stage from its newest snapshot.

  python tools/train_faster_rcnn_alt_opt.py --net VGG16 --weights data/imagenet_models/vgg16.pth \
      --imdb voc_2007_trainval --cfg experiments/cfgs/faster_rcnn_alt_opt.yml [--set K V ...]

Multi-GPU: the same command under `torchrun --nproc_per_node N` (docs/MULTI_GPU.md): every
stage trains with DDP, proposals are split over the ranks, rank 0 writes every file.
"""
import argparse
import copy
import os
import pickle
import sys
import time

import _init_paths  # noqa: F401  (puts lib/ on sys.path)
from _init_paths import add_common_args, setup_cfg, threads_note

from frcnn.utils import distributed as du


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Faster R-CNN 4-step alternating optimisation")
    p.add_argument("--net", required=True, help="VGG16, ZF, TINY or ELITE0")
    p.add_argument("--weights", default=None,
                   help="ImageNet-pretrained weights (.pth or .caffemodel); none = random init "
                        "(fine for TINY; ELITE0 brings its own)")
    p.add_argument("--imdb", default="voc_2007_trainval", help="training image set")
    p.add_argument("--seed", type=int, default=None, help="default cfg.RNG_SEED")
    p.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    p.add_argument("--workers", type=int, default=None, help="data loader workers (TRAIN.NUM_WORKERS)")
    p.add_argument("--no-resume", action="store_true",
                   help="retrain every stage from scratch (existing files are overwritten)")
    p.add_argument("--num-threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--final-file", default=None, help="write the final model's path into this file")
    add_common_args(p)
    return p.parse_args(argv)


class AltOpt:
    """The four stages; each method returns the path of what it produced."""

    def __init__(self, args, cfg):
        import torch

        from frcnn.config import get_output_dir
        from frcnn.datasets.factory import get_imdb

        self.args, self.cfg = args, cfg
        self.net = args.net.upper()
        self.device = torch.device(cfg.DEVICE)
        self.imdb = get_imdb(args.imdb, cfg)
        self.out = get_output_dir(self.imdb.name.replace(":", "_").replace("/", "_"), cfg)
        self.resume = not args.no_resume
        self.seed = cfg.RNG_SEED if args.seed is None else args.seed
        lrs = tuple(cfg.ALT_OPT.BASE_LRS) or (cfg.SOLVER.BASE_LR,) * 4
        if len(lrs) != 4 or len(cfg.ALT_OPT.ITERS) != 4 or len(cfg.ALT_OPT.STEPSIZES) != 4:
            raise ValueError("ALT_OPT.ITERS, ALT_OPT.STEPSIZES (and BASE_LRS if given) need 4 "
                             "values: stage1 RPN, stage1 Fast R-CNN, stage2 RPN, stage2 Fast R-CNN")
        self.lrs = lrs
        print(f"alt-opt {self.net} on {self.imdb.name} ({self.imdb.num_images} images, "
              f"{self.imdb.num_classes - 1} classes) -> {self.out}; device {self.device}, "
              f"{threads_note()}")

    # -- helpers ------------------------------------------------------------------------------
    def path(self, name):
        return os.path.join(self.out, f"{self.net.lower()}_{name}")

    def done(self, path):
        if self.resume and os.path.exists(path):
            print(f"skip: {path} exists")
            return True
        return False

    def build(self, parts, cfg=None, pretrained=False):
        """pretrained: let the backbone load its own ImageNet weights (ELITE0 bundles them)."""
        from frcnn.models import build_model

        return build_model(self.net, self.imdb.num_classes, cfg or self.cfg, parts=parts,
                           pretrained=pretrained)

    def load_imagenet(self, model):
        if self.args.weights:
            from frcnn.models.weights import load_pretrained

            load_pretrained(model, self.args.weights)
            print(f"initialised from {self.args.weights}")
        else:
            print("no --weights: ImageNet initialisation is the model's own "
                  "(random for TINY, bundled weights for ELITE0)")

    @staticmethod
    def load_parts(model, path, prefixes, skip=()):
        """Copy the tensors under `prefixes` (e.g. 'backbone.') from a saved file into `model`."""
        from frcnn.fast_rcnn.train import load_weights

        src = load_weights(path)
        own = model.state_dict()
        picked = {k: v for k, v in src.items()
                  if k.startswith(tuple(prefixes)) and not k.startswith(tuple(skip)) and k in own}
        missing = [k for k in own if k.startswith(tuple(prefixes))
                   and not k.startswith(tuple(skip)) and k not in picked]
        if missing:
            raise KeyError(f"{path} lacks {missing[:5]}{'...' if len(missing) > 5 else ''}: "
                           "was it trained with another --net?")
        own.update(picked)
        model.load_state_dict(own)
        return len(picked)

    def stage_cfg(self, **train):
        cfg = copy.deepcopy(self.cfg)
        for k, v in train.items():
            cfg.TRAIN[k] = v
        return cfg

    def frozen_stage1(self, model):
        return ["backbone." + p for p in getattr(model.backbone, "frozen_prefixes", ())]

    def train(self, model, roidb, cfg, idx, prefix, ims_per_batch, with_proposals, frozen,
              extra=None):
        from frcnn.fast_rcnn.train import train_model

        return train_model(model, roidb, cfg, self.out, cfg.ALT_OPT.ITERS[idx],
                           cfg.ALT_OPT.STEPSIZES[idx], ims_per_batch, with_proposals,
                           frozen=frozen, resume=self.resume, device=self.device,
                           prefix=f"{self.net.lower()}_{prefix}", seed=self.seed,
                           amp=self.args.amp or None, num_workers=self.args.workers,
                           base_lr=self.lrs[idx], extra=extra)

    def meta(self):
        return {"net": self.net, "classes": list(self.imdb.classes), "imdb": self.imdb.name}

    # -- stages -------------------------------------------------------------------------------
    def rpn(self, stage, init_from=None):
        """Stage 1: ImageNet init; stage 2: convs of Fast R-CNN 1, frozen; fresh RPN head."""
        from frcnn.roi_data.roidb import filter_roidb, get_training_roidb

        out = self.path(f"stage{stage}_rpn_final.pth")
        if self.done(out):
            return out
        print(f"\n===== Stage {stage} RPN =====")
        # RPN stages: 1 image per batch, no Fast R-CNN bbox targets (reference's stage cfg).
        cfg = self.stage_cfg(HAS_RPN=True, BBOX_REG=False, IMS_PER_BATCH=1)
        model = self.build(("rpn",), cfg, pretrained=stage == 1)
        if stage == 1:
            self.load_imagenet(model)
            frozen = self.frozen_stage1(model)
        else:
            n = self.load_parts(model, init_from, ["backbone."])
            print(f"convs ({n} tensors) from {init_from}, frozen; RPN head fresh")
            frozen = ["backbone"]
        roidb = filter_roidb(get_training_roidb(self.imdb, cfg), cfg)
        return self.train(model, roidb, cfg, 0 if stage == 1 else 2, f"stage{stage}_rpn", 1,
                          False, frozen, extra=self.meta())

    def proposals(self, stage, rpn_path):
        from frcnn.fast_rcnn.test import imdb_proposals

        out = self.path(f"stage{stage}_rpn_proposals.pkl")
        if self.done(out):
            return out
        print(f"\n===== Stage {stage} RPN, generate proposals =====")
        cfg = rpn_generate_cfg(self.cfg)
        model = self.build(("rpn",), cfg)
        self.load_parts(model, rpn_path, ["backbone.", "rpn."])
        model.to(self.device).eval()
        boxes = imdb_proposals(model, self.imdb, cfg)  # gathered on rank 0 (None elsewhere)
        if du.is_main_process():
            with open(out + ".tmp", "wb") as f:
                pickle.dump(boxes, f, pickle.HIGHEST_PROTOCOL)
            os.replace(out + ".tmp", out)
            print(f"wrote {out}")
        du.barrier()
        return out

    def fast_rcnn(self, stage, proposals_path, init_from=None):
        """Stage 1: ImageNet init; stage 2: convs frozen, fc layers from stage 1, fresh outputs."""
        from frcnn.roi_data.roidb import (add_bbox_regression_stats, filter_roidb,
                                          get_training_roidb, merge_proposals)

        out = self.path(f"stage{stage}_fast_rcnn_final.pth")
        if self.done(out):
            return out
        print(f"\n===== Stage {stage} Fast R-CNN =====")
        cfg = self.stage_cfg(HAS_RPN=False)
        model = self.build(("head",), cfg, pretrained=stage == 1)
        if stage == 1:
            self.load_imagenet(model)
            frozen = self.frozen_stage1(model)
        else:
            fresh = fresh_head_layers(model)
            n = self.load_parts(model, init_from, ["backbone.", "head."], skip=fresh)
            print(f"convs and fc layers ({n} tensors) from {init_from}; "
                  f"{', '.join(p.rstrip('.') for p in fresh)} fresh; convs frozen")
            frozen = ["backbone"]
        with open(proposals_path, "rb") as f:
            boxes = pickle.load(f)
        roidb = merge_proposals(get_training_roidb(self.imdb, cfg), boxes)
        roidb = filter_roidb(roidb, cfg)
        means, stds = add_bbox_regression_stats(roidb, self.imdb.num_classes, cfg)
        model.set_bbox_normalization(means, stds)
        extra = self.meta()
        extra.update(bbox_means=means, bbox_stds=stds)
        return self.train(model, roidb, cfg, 1 if stage == 1 else 3, f"stage{stage}_fast_rcnn",
                          cfg.TRAIN.IMS_PER_BATCH, True, frozen, extra=extra)

    def assemble(self, frcn1, rpn2, frcn2):
        """Convs of Fast R-CNN 1 (= those of stage 2, frozen) + RPN 2 + head of Fast R-CNN 2."""
        import torch

        out = self.path("faster_rcnn_final.pth")
        if self.done(out):
            return out
        model = self.build(("rpn", "head"))
        self.load_parts(model, frcn1, ["backbone."])
        self.load_parts(model, rpn2, ["rpn."])
        self.load_parts(model, frcn2, ["head."])
        state = {"model": model.state_dict()}
        state.update(self.meta())
        if du.is_main_process():
            torch.save(state, out + ".tmp")
            os.replace(out + ".tmp", out)
            print(f"final model: {out}")
        du.barrier()
        return out

    def run(self):
        t0 = time.perf_counter()
        times = {}

        def timed(name, fn, *a, **k):
            t = time.perf_counter()
            r = fn(*a, **k)
            times[name] = time.perf_counter() - t
            return r

        rpn1 = timed("stage1_rpn", self.rpn, 1)
        props1 = timed("stage1_proposals", self.proposals, 1, rpn1)
        frcn1 = timed("stage1_fast_rcnn", self.fast_rcnn, 1, props1)
        rpn2 = timed("stage2_rpn", self.rpn, 2, init_from=frcn1)
        props2 = timed("stage2_proposals", self.proposals, 2, rpn2)
        frcn2 = timed("stage2_fast_rcnn", self.fast_rcnn, 2, props2, init_from=frcn1)
        final = self.assemble(frcn1, rpn2, frcn2)
        print("stage times: " + ", ".join(f"{k} {v:.1f}s" for k, v in times.items())
              + f"; total {time.perf_counter() - t0:.1f}s")
        return final


def rpn_generate_cfg(cfg):
    """Settings of the reference's rpn_generate between stages: no pre-NMS cut, top 2000."""
    cfg = copy.deepcopy(cfg)
    cfg.TEST.RPN_PRE_NMS_TOP_N = cfg.ALT_OPT.PROPOSAL_PRE_NMS_TOP_N
    cfg.TEST.RPN_POST_NMS_TOP_N = cfg.ALT_OPT.PROPOSAL_POST_NMS_TOP_N
    return cfg


def fresh_head_layers(model):
    """State-dict prefixes of the head's output layers (re-initialised in stage 2)."""
    names = [n for n, _ in model.head.named_children()]
    fresh = [f"head.{n}." for n in names if n in ("cls_score", "bbox_pred")]
    if len(fresh) != 2:
        raise AttributeError(f"head has no cls_score/bbox_pred children (has {names})")
    return fresh


def main(argv=None):
    args = parse_args(argv)
    cfg = setup_cfg(args)
    if args.workers is not None:
        cfg.TRAIN.NUM_WORKERS = args.workers
    if args.num_threads:
        import torch

        torch.set_num_threads(args.num_threads)
    du.setup_for_tool(cfg)  # torchrun: join the process group, cfg.DEVICE = this rank's device
    final = AltOpt(args, cfg).run()
    print(f"FINAL_MODEL {final}")
    if args.final_file and du.is_main_process():
        with open(args.final_file, "w") as f:
            f.write(final)
    du.cleanup()
    return final


if __name__ == "__main__":
    sys.exit(_init_paths.run_main(main))
