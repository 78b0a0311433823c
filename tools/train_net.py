#!/usr/bin/env python
"""End-to-end (approximate joint) training of Faster R-CNN: RPN and Fast R-CNN in one net.

  python tools/train_net.py --net VGG16 --weights data/imagenet_models/vgg16.pth \
      --imdb voc_2007_trainval --cfg experiments/cfgs/faster_rcnn_end2end.yml [--iters N] [--set K V ...]

Iterations END2END.MAX_ITERS (70k), lr step END2END.STEPSIZE (50k), END2END.ITER_SIZE images
accumulated per update (2, as the reference's iter_size). Writes
output/<EXP_DIR>/<imdb>/<net>_faster_rcnn_end2end_final.pth; reruns resume from snapshots.

With --proposals PKL: Fast R-CNN without RPN on those proposals (Selective Search etc.), trained
as alt-opt stage-1 Fast R-CNN (ALT_OPT.ITERS[1] / STEPSIZES[1], TRAIN.IMS_PER_BATCH images), the
reference's handling: dedup, min size PROPOSAL_MIN_SIZE, gt appended, flips mirrored. Writes
<net>_fast_rcnn_final.pth; test it with tools/test_net.py --proposals <test pickle>.
"""
import argparse
import os
import sys

import _init_paths  # noqa: F401
from frcnn.cli import add_common_args, apply_runtime_args, run_main, setup_cfg, threads_note
from frcnn.precision import amp_dtype


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Faster R-CNN end-to-end training")
    p.add_argument("--net", required=True, help="VGG16, ZF, TINY or ELITE0")
    p.add_argument("--weights", default=None, help="ImageNet-pretrained weights (.pth / .caffemodel)")
    p.add_argument("--imdb", default="voc_2007_trainval")
    p.add_argument("--iters", type=int, default=None, help="default END2END.MAX_ITERS")
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--eval-every", type=int, default=0,
                   help="mAP on --eval-imdb every N iterations (0: never)")
    p.add_argument("--eval-imdb", default=None, help="held-out image set for --eval-every")
    p.add_argument("--final-file", default=None, help="write the final model's path into this file")
    p.add_argument("--proposals", default=None,
                   help="Fast R-CNN on these proposals (pickle of per-image [P, 4] boxes, e.g. "
                        "tools/selective_search.py), no RPN (TRAIN.HAS_RPN False); iterations "
                        "ALT_OPT.ITERS[1]")
    add_common_args(p, training=True)
    return p.parse_args(argv)


def main(argv=None):
    from frcnn.config import get_output_dir
    from frcnn.datasets.factory import get_imdb
    from frcnn.engine.checkpoint import roidb_signature
    from frcnn.fast_rcnn.train import SolverParams, seed_all, train_model
    from frcnn.models import build_model, pooling_meta
    from frcnn.roi_data.loader import loader_factory
    from frcnn.roi_data.roidb import add_bbox_regression_stats
    from frcnn.utils import distributed as du

    args = parse_args(argv)
    cfg = setup_cfg(args)
    apply_runtime_args(args, cfg)
    rank, world, device = du.setup_for_tool(cfg)  # torchrun: DDP over world processes
    check_has_rpn(args, cfg)
    seed = cfg.RNG_SEED
    seed_all(seed)  # before anything random: synthetic data, model initialisation
    net = args.net.upper()
    imdb = get_imdb(args.imdb, cfg)
    out = get_output_dir(imdb.name.replace(":", "_").replace("/", "_"), cfg)
    ims = cfg.TRAIN.IMS_PER_BATCH  # one number for the loader and proposal_target
    roidb, val, parts, kind, (iters, stepsize, iter_size) = training_set(args, imdb, cfg, out)
    seed_all(seed)
    model = build_model(net, imdb.num_classes, cfg, parts=parts, ims_per_batch=ims)
    if args.weights:
        from frcnn.models.weights import load_pretrained

        load_pretrained(model, args.weights)
    extra = {"net": net, "classes": list(imdb.classes), "imdb": imdb.name, **pooling_meta(cfg)}
    if cfg.TRAIN.BBOX_REG:
        means, stds = add_bbox_regression_stats(roidb, imdb.num_classes, cfg)
        model.set_bbox_normalization(means, stds)
        if args.proposals:
            extra.update(bbox_means=means, bbox_stds=stds)
    if args.proposals:
        extra["proposals"] = os.path.abspath(args.proposals)
    frozen = frozen_layers(model, cfg)
    if rank == 0:
        print(f"{kind} {net} on {imdb.name} ({len(roidb)} roidb entries) -> {out}; "
              f"device {device}, seed {seed}, {threads_note()}")
    solver = SolverParams.from_cfg(cfg, args.iters or iters, stepsize)
    hooks = []
    if args.eval_every > 0:
        hooks.append(eval_hook(args, cfg, net, device))
    final = train_model(model, loader_factory(roidb, cfg, ims, seed, bool(args.proposals)),
                        solver, out, f"{net.lower()}_{kind}", ims_per_batch=ims, seed=seed,
                        data_signature=roidb_signature(roidb), iter_size=iter_size,
                        frozen=frozen, resume=not args.no_resume, device=device,
                        amp=amp_dtype(cfg, device, net), extra=extra, hooks=hooks,
                        find_unused_parameters=bool(cfg.DIST.FIND_UNUSED_PARAMETERS),
                        plateau=plateau_factory(imdb, val, cfg, solver, out,
                                                f"{net.lower()}_{kind}") if val else None)
    if rank == 0:
        print(f"FINAL_MODEL {final}")
        if args.final_file:
            with open(args.final_file, "w") as f:
                f.write(final)
    du.cleanup()
    return final


def check_has_rpn(args, cfg):
    """TRAIN.HAS_RPN False means Fast R-CNN on external proposals: --proposals is needed."""
    from frcnn.errors import ConfigError

    if args.proposals:  # Fast R-CNN without RPN, trained as alt-opt stage-1 Fast R-CNN
        cfg.TRAIN.HAS_RPN = False
        if cfg.SOLVER.SCHEDULE != "fixed":
            raise ConfigError("SOLVER.SCHEDULE plateau is for end2end and alt-opt training; "
                              "with --proposals use --set SOLVER.SCHEDULE fixed")
    elif not cfg.TRAIN.HAS_RPN:
        raise ConfigError("TRAIN.HAS_RPN is False: Fast R-CNN without an RPN trains on external "
                          "proposals (--proposals PKL); for end2end training use "
                          "experiments/cfgs/faster_rcnn_end2end.yml (HAS_RPN True)")


def frozen_layers(model, cfg):
    """The net's stage-1 frozen convs, and bbox_pred when TRAIN.BBOX_REG is off (no loss)."""
    frozen = ["backbone." + p for p in getattr(model.backbone, "frozen_prefixes", ())]
    return frozen + ([] if cfg.TRAIN.BBOX_REG else ["head.bbox_pred"])


def training_set(args, imdb, cfg, out):
    """-> (roidb, held-out imdb indices, model parts, kind, (iterations, stepsize, iter_size)):
    Fast R-CNN on --proposals (as alt-opt stage-1 Fast R-CNN), else end2end on the gt roidb less
    the images held out under SOLVER.SCHEDULE plateau (its lr steps placed by the data, up to a
    ceiling)."""
    from frcnn.fast_rcnn.validation import validation_images
    from frcnn.roi_data.roidb import filter_roidb, get_training_roidb

    if args.proposals:
        from frcnn.roi_data.roidb import fast_rcnn_roidb, load_proposals

        props = load_proposals(args.proposals, imdb.num_images, cfg.PROPOSAL_MIN_SIZE,
                               imdb=imdb)
        return (fast_rcnn_roidb(imdb, cfg, props), [], ("head",), "fast_rcnn",
                (cfg.ALT_OPT.ITERS[1], cfg.ALT_OPT.STEPSIZES[1], 1))
    val = validation_images(imdb, cfg, out)
    held_out = {imdb.image_index[i] for i in val}
    roidb = filter_roidb([e for e in get_training_roidb(imdb, cfg)
                          if e["index"] not in held_out], cfg)
    iters, stepsize = cfg.END2END.MAX_ITERS, cfg.END2END.STEPSIZE
    if val:
        iters, stepsize = int(round(iters * cfg.SOLVER.PLATEAU.CEILING)), 0
    return roidb, val, ("rpn", "head"), "faster_rcnn_end2end", (iters, stepsize,
                                                                cfg.END2END.ITER_SIZE)


def plateau_factory(imdb, val, cfg, solver, out, prefix):
    """SOLVER.SCHEDULE plateau: mAP (area) of the model with its own RPN on the held-out images."""
    from frcnn.fast_rcnn.validation import detection_map, plateau_hook_factory

    return plateau_hook_factory(cfg, lambda m: detection_map(m, imdb, val, cfg), "map_area",
                                solver.max_iters, out, prefix)


def eval_hook(args, cfg, net, device):
    """PeriodicEval: mAP of the model being trained on --eval-imdb (bbox_pred un-normalised
    the way the final file will be)."""
    import copy
    import tempfile

    from frcnn.datasets.factory import get_imdb
    from frcnn.engine import PeriodicEval
    from frcnn.fast_rcnn.test import test_net
    from frcnn.models import build_model

    from frcnn.errors import ConfigError

    if not args.eval_imdb:
        raise ConfigError("--eval-every needs --eval-imdb (a held-out image set)")
    if args.proposals:
        raise ConfigError("--eval-every evaluates with the model's RPN: not with --proposals")
    imdb = get_imdb(args.eval_imdb, cfg)

    def evaluate(model):
        m = build_model(net, imdb.num_classes, cfg, pretrained=False)
        m.load_state_dict(model.unnormalized_state_dict())
        m.to(device).eval()
        with tempfile.TemporaryDirectory() as d:
            return {"mAP": test_net(m, imdb, copy.deepcopy(cfg), d)}
    return PeriodicEval(args.eval_every, evaluate, f"{net.lower()}_eval")


if __name__ == "__main__":
    sys.exit(run_main(main))
