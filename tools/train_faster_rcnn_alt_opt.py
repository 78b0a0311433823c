#!/usr/bin/env python
"""Faster R-CNN by 4-step alternating optimisation (Ren et al. 2015, section 3.2): the command
line of frcnn.recipes.alt_opt, where the stages are a table (STAGES, FINAL_PARTS).

Every result lands in output/<EXP_DIR>/<imdb>/ as <net>_stage<N>_{rpn,fast_rcnn}_final.pth,
<net>_stage<N>_rpn_proposals.pkl and <net>_faster_rcnn_final.pth; a rerun skips what exists
and resumes an interrupted stage from its newest snapshot.

  python tools/train_faster_rcnn_alt_opt.py --net VGG16 --weights data/imagenet_models/vgg16.pth \
      --imdb voc_2007_trainval --cfg experiments/cfgs/faster_rcnn_alt_opt.yml [--set K V ...]

Multi-GPU: the same command under `torchrun --nproc_per_node N` (docs/MULTI_GPU.md): every
stage trains with DDP, proposals are split over the ranks, rank 0 writes every file.
"""
import argparse
import sys

import _init_paths  # noqa: F401  (puts lib/ on sys.path)
from frcnn.cli import add_common_args, apply_runtime_args, run_main, setup_cfg
from frcnn.recipes.alt_opt import AltOpt
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


def main(argv=None):
    args = parse_args(argv)
    cfg = setup_cfg(args)
    apply_runtime_args(args, cfg)
    du.setup_for_tool(cfg)  # torchrun: join the process group, cfg.DEVICE = this rank's device
    final = AltOpt(cfg, args.net, args.imdb, weights=args.weights, resume=not args.no_resume,
                   workers=args.workers).run()
    print(f"FINAL_MODEL {final}")
    if args.final_file and du.is_main_process():
        with open(args.final_file, "w") as f:
            f.write(final)
    du.cleanup()
    return final


if __name__ == "__main__":
    sys.exit(run_main(main))
