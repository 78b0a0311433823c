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
from _init_paths import add_common_args, setup_cfg, threads_note


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Faster R-CNN end-to-end training")
    p.add_argument("--net", required=True, help="VGG16, ZF, TINY or ELITE0")
    p.add_argument("--weights", default=None, help="ImageNet-pretrained weights (.pth / .caffemodel)")
    p.add_argument("--imdb", default="voc_2007_trainval")
    p.add_argument("--iters", type=int, default=None, help="default END2END.MAX_ITERS")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--num-threads", type=int, default=None)
    p.add_argument("--final-file", default=None, help="write the final model's path into this file")
    p.add_argument("--proposals", default=None,
                   help="Fast R-CNN on these proposals (pickle of per-image [P, 4] boxes, e.g. "
                        "tools/selective_search.py), no RPN; iterations ALT_OPT.ITERS[1]")
    add_common_args(p)
    return p.parse_args(argv)


def main(argv=None):
    import torch

    from frcnn.config import get_output_dir
    from frcnn.datasets.factory import get_imdb
    from frcnn.fast_rcnn.train import train_model
    from frcnn.models import build_model
    from frcnn.roi_data.roidb import add_bbox_regression_stats, filter_roidb, get_training_roidb
    from frcnn.utils import distributed as du

    args = parse_args(argv)
    cfg = setup_cfg(args)
    if args.workers is not None:
        cfg.TRAIN.NUM_WORKERS = args.workers
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    rank, world, device = du.setup_for_tool(cfg)  # torchrun: DDP over world processes
    if args.proposals:  # Fast R-CNN without RPN, trained as alt-opt stage-1 Fast R-CNN
        cfg.TRAIN.HAS_RPN = False
    elif not cfg.TRAIN.HAS_RPN:
        print("note: TRAIN.HAS_RPN is False; end2end trains the RPN anyway "
              "(use experiments/cfgs/faster_rcnn_end2end.yml)")
    net = args.net.upper()
    imdb = get_imdb(args.imdb, cfg)
    out = get_output_dir(imdb.name.replace(":", "_").replace("/", "_"), cfg)
    if args.proposals:
        from frcnn.roi_data.roidb import fast_rcnn_roidb, load_proposals

        props = load_proposals(args.proposals, imdb.num_images, cfg.PROPOSAL_MIN_SIZE)
        roidb = fast_rcnn_roidb(imdb, cfg, props)
        parts, kind = ("head",), "fast_rcnn"
        iters_default, stepsize, ims, iter_size = (cfg.ALT_OPT.ITERS[1], cfg.ALT_OPT.STEPSIZES[1],
                                                   cfg.TRAIN.IMS_PER_BATCH, 1)
    else:
        roidb = filter_roidb(get_training_roidb(imdb, cfg), cfg)
        parts, kind = ("rpn", "head"), "faster_rcnn_end2end"
        iters_default, stepsize, ims, iter_size = (cfg.END2END.MAX_ITERS, cfg.END2END.STEPSIZE,
                                                   cfg.TRAIN.IMS_PER_BATCH, cfg.END2END.ITER_SIZE)
    model = build_model(net, imdb.num_classes, cfg, parts=parts)
    if args.weights:
        from frcnn.models.weights import load_pretrained

        load_pretrained(model, args.weights)
    means, stds = add_bbox_regression_stats(roidb, imdb.num_classes, cfg)
    model.set_bbox_normalization(means, stds)
    frozen = ["backbone." + p for p in getattr(model.backbone, "frozen_prefixes", ())]
    if rank == 0:
        print(f"{kind} {net} on {imdb.name} ({len(roidb)} roidb entries) -> {out}; "
              f"device {device}, {threads_note()}")
    iters = args.iters or iters_default
    extra = {"net": net, "classes": list(imdb.classes), "imdb": imdb.name}
    if args.proposals:
        extra.update(bbox_means=means, bbox_stds=stds, proposals=os.path.abspath(args.proposals))
    final = train_model(model, roidb, cfg, out, iters, stepsize, ims, bool(args.proposals),
                        frozen=frozen, resume=not args.no_resume, device=device,
                        prefix=f"{net.lower()}_{kind}", iter_size=iter_size, seed=args.seed,
                        amp=args.amp or None, num_workers=args.workers, extra=extra)
    if rank == 0:
        print(f"FINAL_MODEL {final}")
        if args.final_file:
            with open(args.final_file, "w") as f:
                f.write(final)
    du.cleanup()
    return final


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
