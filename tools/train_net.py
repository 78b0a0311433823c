#!/usr/bin/env python
"""End-to-end (approximate joint) training of Faster R-CNN: RPN and Fast R-CNN in one net.

  python tools/train_net.py --net VGG16 --weights data/imagenet_models/vgg16.pth \
      --imdb voc_2007_trainval --cfg experiments/cfgs/faster_rcnn_end2end.yml [--iters N] [--set K V ...]

Iterations END2END.MAX_ITERS (70k), lr step END2END.STEPSIZE (50k), END2END.ITER_SIZE images
accumulated per update (2, as the reference's iter_size). Writes
output/<EXP_DIR>/<imdb>/<net>_faster_rcnn_end2end_final.pth; reruns resume from snapshots.
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
    if not cfg.TRAIN.HAS_RPN:
        print("note: TRAIN.HAS_RPN is False; end2end trains the RPN anyway "
              "(use experiments/cfgs/faster_rcnn_end2end.yml)")
    net = args.net.upper()
    imdb = get_imdb(args.imdb, cfg)
    out = get_output_dir(imdb.name.replace(":", "_").replace("/", "_"), cfg)
    roidb = filter_roidb(get_training_roidb(imdb, cfg), cfg)
    model = build_model(net, imdb.num_classes, cfg, parts=("rpn", "head"))
    if args.weights:
        from frcnn.models.weights import load_pretrained

        load_pretrained(model, args.weights)
    means, stds = add_bbox_regression_stats(roidb, imdb.num_classes, cfg)
    model.set_bbox_normalization(means, stds)
    frozen = ["backbone." + p for p in getattr(model.backbone, "frozen_prefixes", ())]
    if rank == 0:
        print(f"end2end {net} on {imdb.name} ({len(roidb)} roidb entries) -> {out}; "
              f"device {device}, {threads_note()}")
    iters = args.iters or cfg.END2END.MAX_ITERS
    final = train_model(model, roidb, cfg, out, iters, cfg.END2END.STEPSIZE,
                        cfg.TRAIN.IMS_PER_BATCH, False, frozen=frozen,
                        resume=not args.no_resume, device=device,
                        prefix=f"{net.lower()}_faster_rcnn_end2end",
                        iter_size=cfg.END2END.ITER_SIZE, seed=args.seed,
                        amp=args.amp or None, num_workers=args.workers,
                        extra={"net": net, "classes": list(imdb.classes), "imdb": imdb.name})
    if rank == 0:
        print(f"FINAL_MODEL {final}")
        if args.final_file:
            with open(args.final_file, "w") as f:
                f.write(final)
    du.cleanup()
    return final


if __name__ == "__main__":
    sys.exit(_init_paths.run_main(main))
