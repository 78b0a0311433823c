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
from dataclasses import dataclass

import _init_paths  # noqa: F401  (puts lib/ on sys.path)
from _init_paths import (add_common_args, amp_dtype, apply_runtime_args, autocast_context,
                         setup_cfg, threads_note)

from frcnn.utils import distributed as du


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Faster R-CNN 4-step alternating optimisation")
    p.add_argument("--net", required=True, help="VGG16, ZF, TINY or ELITE0")
    p.add_argument("--weights", default=None,
                   help="ImageNet-pretrained weights (.pth or .caffemodel); none = random init "
                        "(fine for TINY; ELITE0 brings its own)")
    p.add_argument("--imdb", default="voc_2007_trainval", help="training image set")
    p.add_argument("--no-resume", action="store_true",
                   help="retrain every stage from scratch (existing files are overwritten)")
    p.add_argument("--final-file", default=None, help="write the final model's path into this file")
    add_common_args(p, training=True)
    return p.parse_args(argv)


@dataclass(frozen=True)
class Stage:
    """One training stage of the paper's Table / section 3.2 (see the module docstring)."""

    name: str            # file prefix: <net>_<name>_final.pth
    kind: str            # "rpn" or "fast_rcnn": the model parts it trains
    init: str            # "imagenet", or the stage whose weights start it
    frozen: str          # "stage1" (the net's frozen_prefixes) or "convs" (the whole backbone)
    iters_index: int     # entry of ALT_OPT.ITERS / STEPSIZES / BASE_LRS
    proposals: str = ""  # the proposals file it trains on (Fast R-CNN stages)


STAGES = (
    Stage("stage1_rpn", "rpn", init="imagenet", frozen="stage1", iters_index=0),
    Stage("stage1_fast_rcnn", "fast_rcnn", init="imagenet", frozen="stage1", iters_index=1,
          proposals="stage1_rpn"),
    Stage("stage2_rpn", "rpn", init="stage1_fast_rcnn", frozen="convs", iters_index=2),
    Stage("stage2_fast_rcnn", "fast_rcnn", init="stage1_fast_rcnn", frozen="convs",
          iters_index=3, proposals="stage2_rpn"),
)
# final = convs of Fast R-CNN 1 (= those of stage 2, frozen) + RPN 2 + head of Fast R-CNN 2
FINAL_PARTS = (("backbone.", "stage1_fast_rcnn"), ("rpn.", "stage2_rpn"),
               ("head.", "stage2_fast_rcnn"))


class AltOpt:
    """Walks STAGES: train each stage, write RPN proposals after each RPN stage, assemble."""

    def __init__(self, args, cfg):
        import torch

        from frcnn.config import get_output_dir
        from frcnn.datasets.factory import get_imdb
        from frcnn.fast_rcnn.train import seed_all

        self.args, self.cfg = args, cfg
        self.net = args.net.upper()
        self.device = torch.device(cfg.DEVICE)
        self.seed = cfg.RNG_SEED  # --seed is folded into it
        seed_all(self.seed)  # before anything random (the synthetic data set included)
        self.imdb = get_imdb(args.imdb, cfg)
        self.out = get_output_dir(self.imdb.name.replace(":", "_").replace("/", "_"), cfg)
        self.resume = not args.no_resume
        lrs = tuple(cfg.ALT_OPT.BASE_LRS) or (cfg.SOLVER.BASE_LR,) * 4
        if len(lrs) != 4 or len(cfg.ALT_OPT.ITERS) != 4 or len(cfg.ALT_OPT.STEPSIZES) != 4:
            from frcnn.errors import ConfigError

            raise ConfigError("ALT_OPT.ITERS, ALT_OPT.STEPSIZES (and BASE_LRS if given) need 4 "
                             "values: stage1 RPN, stage1 Fast R-CNN, stage2 RPN, stage2 Fast R-CNN")
        self.lrs = lrs
        self.amp = amp_dtype(cfg, self.device, self.net)
        from frcnn.fast_rcnn.validation import validation_images

        self.val = validation_images(self.imdb, cfg, self.out)  # [] under SOLVER.SCHEDULE fixed
        print(f"alt-opt {self.net} on {self.imdb.name} ({self.imdb.num_images} images, "
              f"{self.imdb.num_classes - 1} classes) -> {self.out}; device {self.device}, "
              f"seed {self.seed}, {threads_note()}")

    # -- files --------------------------------------------------------------------------------
    def path(self, name):
        return os.path.join(self.out, f"{self.net.lower()}_{name}")

    def weights_file(self, stage_name):
        return self.path(f"{stage_name}_final.pth")

    def proposals_file(self, rpn_stage_name):
        return self.path(f"{rpn_stage_name}_proposals.pkl")

    def done(self, path):
        if not (self.resume and os.path.exists(path)):
            return False
        if path.endswith(".pth"):  # a stage model of another seed must not be reused silently
            import torch
            from frcnn.engine import ConfigMismatch

            old = torch.load(path, map_location="cpu", mmap=True, weights_only=False).get("seed")
            if old is not None and int(old) != self.seed:
                raise ConfigMismatch(
                    f"{path} was trained with seed {old}, this run has seed {self.seed}: give the "
                    "run another EXP_DIR (--set EXP_DIR name), or --no-resume to overwrite it")
        print(f"skip: {path} exists")
        return True

    def meta(self):
        from frcnn.models import pooling_meta

        return {"net": self.net, "classes": list(self.imdb.classes), "imdb": self.imdb.name,
                "seed": self.seed, **pooling_meta(self.cfg)}

    # -- models -------------------------------------------------------------------------------
    def build(self, parts, cfg=None, pretrained=False, ims_per_batch=None):
        """pretrained: let the backbone load its own ImageNet weights (ELITE0 bundles them)."""
        from frcnn.models import build_model

        return build_model(self.net, self.imdb.num_classes, cfg or self.cfg, parts=parts,
                           pretrained=pretrained, ims_per_batch=ims_per_batch)

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

    # -- one stage ----------------------------------------------------------------------------
    def stage_cfg(self, stage):
        """The reference's per-stage cfg: RPN stages train on gt boxes, 1 image per batch, no
        Fast R-CNN regression targets; Fast R-CNN stages on proposals, TRAIN.IMS_PER_BATCH."""
        cfg = copy.deepcopy(self.cfg)
        if stage.kind == "rpn":
            cfg.TRAIN.HAS_RPN, cfg.TRAIN.BBOX_REG, cfg.TRAIN.IMS_PER_BATCH = True, False, 1
        else:
            cfg.TRAIN.HAS_RPN = False
        return cfg

    def train_stage(self, stage):
        from frcnn.fast_rcnn.train import SolverParams, seed_all, train_model
        from frcnn.engine.checkpoint import roidb_signature
        from frcnn.roi_data.loader import loader_factory
        from frcnn.roi_data.roidb import (add_bbox_regression_stats, filter_roidb,
                                          get_training_roidb, merge_proposals)

        out = self.weights_file(stage.name)
        if self.done(out):
            return out
        print(f"\n===== {stage.name.replace('_', ' ').replace('stage', 'Stage ')} "
              f"(init {stage.init}, frozen {stage.frozen}) =====")
        cfg = self.stage_cfg(stage)
        ims = cfg.TRAIN.IMS_PER_BATCH  # one number for the loader and proposal_target
        seed_all(self.seed)  # the same initialisation whether or not earlier stages ran here
        parts = ("rpn",) if stage.kind == "rpn" else ("head",)
        model = self.build(parts, cfg, pretrained=stage.init == "imagenet", ims_per_batch=ims)
        if stage.init == "imagenet":
            self.load_imagenet(model)
        elif stage.kind == "rpn":
            n = self.load_parts(model, self.weights_file(stage.init), ["backbone."])
            print(f"convs ({n} tensors) from {stage.init}; RPN head fresh")
        else:
            fresh = fresh_head_layers(model)
            n = self.load_parts(model, self.weights_file(stage.init), ["backbone.", "head."],
                                skip=fresh)
            print(f"convs and fc layers ({n} tensors) from {stage.init}; "
                  f"{', '.join(p.rstrip('.') for p in fresh)} fresh")
        frozen = (["backbone"] if stage.frozen == "convs" else
                  ["backbone." + p for p in getattr(model.backbone, "frozen_prefixes", ())])
        if stage.kind == "fast_rcnn" and not cfg.TRAIN.BBOX_REG:
            frozen.append("head.bbox_pred")  # no box regression loss, nothing to learn
        roidb = get_training_roidb(self.imdb, cfg)
        extra = self.meta()
        if stage.proposals:
            with open(self.proposals_file(stage.proposals), "rb") as f:
                roidb = merge_proposals(roidb, pickle.load(f))
        held_out = {self.imdb.image_index[i] for i in self.val}
        roidb = filter_roidb([e for e in roidb if e["index"] not in held_out], cfg)
        if stage.kind == "fast_rcnn":
            means, stds = add_bbox_regression_stats(roidb, self.imdb.num_classes, cfg)
            model.set_bbox_normalization(means, stds)
            extra.update(bbox_means=means, bbox_stds=stds)
        k = stage.iters_index
        iters, step = cfg.ALT_OPT.ITERS[k], cfg.ALT_OPT.STEPSIZES[k]
        if self.val:  # plateau: lr steps placed by the data, up to a ceiling
            iters, step = int(round(iters * cfg.SOLVER.PLATEAU.CEILING)), 0
        solver = SolverParams.from_cfg(cfg, iters, step, base_lr=self.lrs[k])
        return train_model(
            model, loader_factory(roidb, cfg, ims, self.seed, bool(stage.proposals),
                                  self.args.workers),
            solver, self.out, f"{self.net.lower()}_{stage.name}", ims_per_batch=ims,
            seed=self.seed, data_signature=roidb_signature(roidb), frozen=frozen,
            resume=self.resume, device=self.device, amp=self.amp, extra=extra,
            find_unused_parameters=bool(cfg.DIST.FIND_UNUSED_PARAMETERS),
            plateau=self.plateau(stage, cfg, solver.max_iters) if self.val else None)

    def plateau(self, stage, cfg, ceiling):
        """The stage's own measure on the held-out images: RPN average recall, or Fast R-CNN
        mAP (area) on this stage's proposals."""
        from frcnn.fast_rcnn import validation as V

        if stage.kind == "rpn":
            name, fn = "rpn_ar300", lambda m: V.rpn_average_recall(m, self.imdb, self.val, cfg)
        else:
            with open(self.proposals_file(stage.proposals), "rb") as f:
                props = pickle.load(f)
            name, fn = "map_area", lambda m: V.detection_map(m, self.imdb, self.val, cfg, props)
        return V.plateau_hook_factory(cfg, fn, name, ceiling, self.out,
                                      f"{self.net.lower()}_{stage.name}")

    def write_proposals(self, rpn_stage):
        """RPN proposals of every train image (unflipped), as the reference's rpn_generate."""
        from frcnn.fast_rcnn.test import imdb_proposals

        out = self.proposals_file(rpn_stage.name)
        if self.done(out):
            return out
        print(f"\n===== {rpn_stage.name.replace('_', ' ').replace('stage', 'Stage ')}, "
              "generate proposals =====")
        cfg = rpn_generate_cfg(self.cfg)
        model = self.build(("rpn",), cfg)
        self.load_parts(model, self.weights_file(rpn_stage.name), ["backbone.", "rpn."])
        model.to(self.device).eval()
        with autocast_context(self.device, self.amp):
            boxes = imdb_proposals(model, self.imdb, cfg)  # gathered on rank 0 (None elsewhere)
        if du.is_main_process():
            save_pickle_atomic(boxes, out)
            print(f"wrote {out}")
        du.barrier()
        return out

    def assemble(self):
        out = self.path("faster_rcnn_final.pth")
        if self.done(out):
            return out
        model = self.build(("rpn", "head"))
        for prefix, stage_name in FINAL_PARTS:
            self.load_parts(model, self.weights_file(stage_name), [prefix])
        state = {"model": model.state_dict()}
        state.update(self.meta())
        if du.is_main_process():
            from frcnn.engine.checkpoint import save_atomic

            save_atomic(state, out)
            print(f"final model: {out}")
        du.barrier()
        return out

    def run(self):
        t0 = time.perf_counter()
        times = {}
        for stage in STAGES:
            t = time.perf_counter()
            self.train_stage(stage)
            times[stage.name] = time.perf_counter() - t
            if stage.kind == "rpn":
                t = time.perf_counter()
                self.write_proposals(stage)
                times[stage.name.replace("rpn", "proposals")] = time.perf_counter() - t
        final = self.assemble()
        print("stage times: " + ", ".join(f"{k} {v:.1f}s" for k, v in times.items())
              + f"; total {time.perf_counter() - t0:.1f}s")
        return final


def save_pickle_atomic(obj, path):
    with open(path + ".tmp", "wb") as f:
        pickle.dump(obj, f, pickle.HIGHEST_PROTOCOL)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


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
    apply_runtime_args(args, cfg)
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
