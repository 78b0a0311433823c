"""Faster R-CNN by 4-step alternating optimisation (Ren et al. 2015, section 3.2), as a table.

  stage 1 RPN          init ImageNet, train RPN (+ convs but the stage-1 frozen ones)
  stage 1 proposals    RPN 1 on every train image (unflipped)
  stage 1 Fast R-CNN   init ImageNet, train on RPN-1 proposals
  stage 2 RPN          init convs from Fast R-CNN 1, convs frozen, fresh RPN
  stage 2 proposals    RPN 2
  stage 2 Fast R-CNN   convs frozen, fc layers from Fast R-CNN 1, fresh cls_score / bbox_pred
  final                convs of Fast R-CNN 1 + RPN 2 + head of Fast R-CNN 2

Every result lands in output/<EXP_DIR>/<imdb>/ as <net>_stage<N>_{rpn,fast_rcnn}_final.pth,
<net>_stage<N>_rpn_proposals.pkl and <net>_faster_rcnn_final.pth; a rerun skips what exists
and resumes an interrupted stage from its newest snapshot. Under torchrun every stage trains
with DDP, proposals are split over the ranks, rank 0 writes every file.
"""
import copy
import os
import pickle
import time
from dataclasses import dataclass

from frcnn.cli import threads_note
from frcnn.errors import ConfigError
from frcnn.precision import amp_dtype, autocast_context
from frcnn.utils import distributed as du


@dataclass(frozen=True)
class Stage:
    """One training stage of section 3.2 (see the module docstring)."""

    name: str                # file prefix: <net>_<name>_final.pth
    kind: str                # "rpn" or "fast_rcnn": the model part it trains
    init: str                # "imagenet", or the stage whose weights start it
    init_parts: tuple = ()   # the model parts taken from `init` (when not "imagenet")
    fresh: tuple = ()        # layers of those parts that restart from the reference init
    frozen: str = "stage1"   # "stage1" (the net's frozen_prefixes) or "convs" (whole backbone)
    iters_index: int = 0     # entry of ALT_OPT.ITERS / STEPSIZES / BASE_LRS
    proposals: str = ""      # the RPN stage whose proposals it trains on (Fast R-CNN stages)


STAGES = (
    Stage("stage1_rpn", "rpn", "imagenet", iters_index=0),
    Stage("stage1_fast_rcnn", "fast_rcnn", "imagenet", iters_index=1, proposals="stage1_rpn"),
    Stage("stage2_rpn", "rpn", "stage1_fast_rcnn", init_parts=("backbone",), frozen="convs",
          iters_index=2),
    Stage("stage2_fast_rcnn", "fast_rcnn", "stage1_fast_rcnn", init_parts=("backbone", "head"),
          fresh=("head.cls_score", "head.bbox_pred"), frozen="convs", iters_index=3,
          proposals="stage2_rpn"),
)
# final = convs of Fast R-CNN 1 (= those of stage 2, frozen) + RPN 2 + head of Fast R-CNN 2
FINAL_PARTS = (("backbone", "stage1_fast_rcnn"), ("rpn", "stage2_rpn"),
               ("head", "stage2_fast_rcnn"))
MODEL_PARTS = {"rpn": ("rpn",), "fast_rcnn": ("head",)}


def _under(key, names):
    return any(key == n or key.startswith(n + ".") for n in names)


def load_parts(model, path, parts, fresh=()):
    """Copy the weights of the model parts `parts` ("backbone", "rpn", "head") from the model
    file `path` into `model`, except the layers in `fresh` (e.g. "head.cls_score"). -> count."""
    from frcnn.model_file import load_weights

    src = load_weights(path)
    own = model.state_dict()
    unknown = [f for f in fresh if not any(_under(k, (f,)) for k in own)]
    if unknown:
        raise AttributeError(f"the model has no layer {unknown[0]} to re-initialise")
    wanted = [k for k in own if _under(k, parts) and not _under(k, fresh)]
    missing = [k for k in wanted if k not in src]
    if missing:
        raise KeyError(f"{path} lacks {missing[:5]}{'...' if len(missing) > 5 else ''}: "
                       "was it trained with another --net?")
    own.update({k: src[k] for k in wanted})
    model.load_state_dict(own)
    return len(wanted)


def rpn_generate_cfg(cfg):
    """Settings of the reference's rpn_generate between stages: no pre-NMS cut, top 2000."""
    cfg = copy.deepcopy(cfg)
    cfg.TEST.RPN_PRE_NMS_TOP_N = cfg.ALT_OPT.PROPOSAL_PRE_NMS_TOP_N
    cfg.TEST.RPN_POST_NMS_TOP_N = cfg.ALT_OPT.PROPOSAL_POST_NMS_TOP_N
    return cfg


def stage_cfg(cfg, stage):
    """The reference's per-stage settings: RPN stages train 1 image per batch with no Fast R-CNN
    box regression; Fast R-CNN stages TRAIN.IMS_PER_BATCH images on proposals."""
    cfg = copy.deepcopy(cfg)
    if stage.kind == "rpn":
        cfg.TRAIN.BBOX_REG, cfg.TRAIN.IMS_PER_BATCH = False, 1
    return cfg


def save_pickle_atomic(obj, path):
    with open(path + ".tmp", "wb") as f:
        pickle.dump(obj, f, pickle.HIGHEST_PROTOCOL)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def _title(name):
    return name.replace("_", " ").replace("stage", "Stage ")


class AltOpt:
    """Walks STAGES: train each stage, write RPN proposals after each RPN stage, assemble.

    cfg: the run's cfg (RNG_SEED, DEVICE, ALT_OPT.*, SOLVER.*, TRAIN.*); net: VGG16, ZF, TINY or
    ELITE0; imdb_name: the training image set; weights: ImageNet weights (.pth / .caffemodel) or
    None (the net's own initialisation); resume: skip finished stages and resume snapshots;
    workers: data loader processes (None: TRAIN.NUM_WORKERS).
    """

    def __init__(self, cfg, net, imdb_name, weights=None, resume=True, workers=None):
        import torch

        from frcnn.config import get_output_dir
        from frcnn.datasets.factory import get_imdb
        from frcnn.fast_rcnn.train import seed_all

        self.cfg, self.weights, self.resume, self.workers = cfg, weights, resume, workers
        self.net = net.upper()
        self.device = torch.device(cfg.DEVICE)
        self.seed = cfg.RNG_SEED
        seed_all(self.seed)  # before anything random (the synthetic data set included)
        self.imdb = get_imdb(imdb_name, cfg)
        self.out = get_output_dir(self.imdb.name.replace(":", "_").replace("/", "_"), cfg)
        lrs = tuple(cfg.ALT_OPT.BASE_LRS) or (cfg.SOLVER.BASE_LR,) * 4
        if len(lrs) != 4 or len(cfg.ALT_OPT.ITERS) != 4 or len(cfg.ALT_OPT.STEPSIZES) != 4:
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
            from frcnn.engine import ConfigMismatch
            from frcnn.model_file import ModelFile

            old = ModelFile.load(path, mmap=True).seed
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

    def init_weights(self, model, stage):
        """ImageNet weights, or the stage's `init_parts` from the stage it starts from."""
        if stage.init != "imagenet":
            n = load_parts(model, self.weights_file(stage.init), stage.init_parts, stage.fresh)
            fresh = ", ".join(stage.fresh) or "+".join(MODEL_PARTS[stage.kind])
            print(f"{' and '.join(stage.init_parts)} ({n} tensors) from {stage.init}; {fresh} fresh")
        elif self.weights:
            from frcnn.models.weights import load_pretrained

            load_pretrained(model, self.weights)
            print(f"initialised from {self.weights}")
        else:
            print("no ImageNet weights given: the model's own initialisation "
                  "(random for TINY, bundled weights for ELITE0)")

    def frozen(self, model, stage, cfg):
        frozen = (["backbone"] if stage.frozen == "convs" else
                  ["backbone." + p for p in getattr(model.backbone, "frozen_prefixes", ())])
        if stage.kind == "fast_rcnn" and not cfg.TRAIN.BBOX_REG:
            frozen.append("head.bbox_pred")  # no box regression loss, nothing to learn
        return frozen

    def stage_roidb(self, model, stage, cfg, extra):
        """The stage's training roidb (gt, + the RPN stage's proposals for Fast R-CNN stages);
        Fast R-CNN stages set the model's bbox target normalisation and record it in `extra`."""
        from frcnn.roi_data.roidb import (add_bbox_regression_stats, filter_roidb,
                                          get_training_roidb, merge_proposals)

        roidb = get_training_roidb(self.imdb, cfg)
        if stage.proposals:
            roidb = merge_proposals(roidb, self.proposals_file(stage.proposals))
        held_out = {self.imdb.image_index[i] for i in self.val}  # SOLVER.SCHEDULE plateau
        roidb = filter_roidb([e for e in roidb if e["index"] not in held_out], cfg)
        if stage.kind == "fast_rcnn":
            means, stds = add_bbox_regression_stats(roidb, self.imdb.num_classes, cfg)
            model.set_bbox_normalization(means, stds)
            extra.update(bbox_means=means, bbox_stds=stds)
        return roidb

    # -- one stage ----------------------------------------------------------------------------
    def train_stage(self, stage):
        from frcnn.engine.checkpoint import roidb_signature
        from frcnn.fast_rcnn.train import SolverParams, seed_all, train_model
        from frcnn.roi_data.loader import loader_factory

        out = self.weights_file(stage.name)
        if self.done(out):
            return out
        print(f"\n===== {_title(stage.name)} (init {stage.init}, frozen {stage.frozen}) =====")
        cfg = stage_cfg(self.cfg, stage)
        ims = cfg.TRAIN.IMS_PER_BATCH  # one number for the loader and proposal_target
        seed_all(self.seed)  # the same initialisation whether or not earlier stages ran here
        model = self.build(MODEL_PARTS[stage.kind], cfg, pretrained=stage.init == "imagenet",
                           ims_per_batch=ims)
        self.init_weights(model, stage)
        extra = self.meta()
        roidb = self.stage_roidb(model, stage, cfg, extra)
        k = stage.iters_index
        iters, step = cfg.ALT_OPT.ITERS[k], cfg.ALT_OPT.STEPSIZES[k]
        if self.val:  # plateau: lr steps placed by the data, up to a ceiling
            iters, step = int(round(iters * cfg.SOLVER.PLATEAU.CEILING)), 0
        solver = SolverParams.from_cfg(cfg, iters, step, base_lr=self.lrs[k])
        return train_model(
            model, loader_factory(roidb, cfg, ims, self.seed, bool(stage.proposals), self.workers),
            solver, self.out, f"{self.net.lower()}_{stage.name}", ims_per_batch=ims,
            seed=self.seed, data_signature=roidb_signature(roidb),
            frozen=self.frozen(model, stage, cfg), resume=self.resume, device=self.device,
            amp=self.amp, extra=extra, find_unused_parameters=bool(cfg.DIST.FIND_UNUSED_PARAMETERS),
            plateau=self.plateau(stage, cfg, solver.max_iters) if self.val else None)

    def plateau(self, stage, cfg, ceiling):
        """The stage's own measure on the held-out images: RPN average recall, or Fast R-CNN
        mAP (area) on this stage's proposals."""
        from frcnn.fast_rcnn import validation as V
        from frcnn.safe_io import load_pickle

        if stage.kind == "rpn":
            name, fn = "rpn_ar300", lambda m: V.rpn_average_recall(m, self.imdb, self.val, cfg)
        else:
            props = load_pickle(self.proposals_file(stage.proposals), "proposals")
            name, fn = "map_area", lambda m: V.detection_map(m, self.imdb, self.val, cfg, props)
        return V.plateau_hook_factory(cfg, fn, name, ceiling, self.out,
                                      f"{self.net.lower()}_{stage.name}")

    def write_proposals(self, rpn_stage):
        """RPN proposals of every train image (unflipped), as the reference's rpn_generate."""
        from frcnn.fast_rcnn.test import imdb_proposals

        out = self.proposals_file(rpn_stage.name)
        if self.done(out):
            return out
        print(f"\n===== {_title(rpn_stage.name)}, generate proposals =====")
        cfg = rpn_generate_cfg(self.cfg)
        model = self.build(("rpn",), cfg)
        load_parts(model, self.weights_file(rpn_stage.name), ("backbone", "rpn"))
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
        for part, stage_name in FINAL_PARTS:
            load_parts(model, self.weights_file(stage_name), (part,))
        if du.is_main_process():
            from frcnn.model_file import ModelFile

            ModelFile.from_flat(model.state_dict(), self.meta()).save(out)
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
