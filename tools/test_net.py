#!/usr/bin/env python
"""Test a Faster R-CNN model on an image set: detections, results files, AP per class and mAP.

  python tools/test_net.py --net VGG16 --model output/faster_rcnn_alt_opt/voc_2007_trainval/vgg16_faster_rcnn_final.pth \
      --imdb voc_2007_test --cfg experiments/cfgs/faster_rcnn_alt_opt.yml

A Fast R-CNN model without RPN (an alt-opt stage file) can be tested with --proposals PKL
(from tools/rpn_generate.py) and --set TEST.HAS_RPN False.
Under torchrun the images are split over the ranks; rank 0 gathers, writes and evaluates.
"""
import argparse
import os
import sys
import time

import _init_paths  # noqa: F401
from frcnn.cli import add_common_args, apply_runtime_args, run_main, setup_cfg, threads_note
from frcnn.precision import amp_dtype, autocast_context


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Test a Faster R-CNN network")
    p.add_argument("--net", required=True, help="VGG16, ZF, TINY or ELITE0")
    p.add_argument("--model", required=True, help=".pth written by the training tools")
    p.add_argument("--imdb", default="voc_2007_test", help="image set to test on")
    p.add_argument("--comp", action="store_true", help="competition mode (no salt in file names, keep results)")
    p.add_argument("--proposals", default=None, help="pickle of per-image boxes (no-RPN testing)")
    p.add_argument("--max-per-image", type=int, default=None, help="default TEST.MAX_PER_IMAGE (100)")
    p.add_argument("--num-images", type=int, default=None, help="test only the first N images")
    p.add_argument("--vis", default=None, help="folder to write PNGs with the detections")
    p.add_argument("--map-file", default=None,
                   help="write the mAP (line 1) and the AP@0.5 area under the precision-recall "
                        "curve (line 2) into this file")
    add_common_args(p)
    return p.parse_args(argv)


def main(argv=None):
    import torch

    from frcnn.config import get_output_dir
    from frcnn.datasets.factory import get_imdb
    from frcnn.datasets.voc_eval import strict_iou_report
    from frcnn.fast_rcnn.test import test_net
    from frcnn.model_file import ModelFile
    from frcnn.utils import distributed as du

    args = parse_args(argv)
    cfg = setup_cfg(args)
    apply_runtime_args(args, cfg)
    du.setup_for_tool(cfg)  # torchrun: images split over ranks, rank 0 evaluates
    model_file = ModelFile.load(args.model)  # a bad or unsafe file fails before the data loads
    imdb = get_imdb(args.imdb, cfg)
    if args.comp and hasattr(imdb, "competition_mode"):
        imdb.competition_mode(True)
    if args.num_images:
        imdb._image_index = imdb.image_index[:args.num_images]
    proposals = None
    parts = ("rpn", "head")
    if args.proposals:
        from frcnn.roi_data.roidb import load_proposals

        try:  # dedup + min size, as the reference loads external proposals
            proposals = load_proposals(args.proposals, imdb.num_images, cfg.PROPOSAL_MIN_SIZE,
                                       imdb=imdb)
        except (OSError, ValueError) as e:
            sys.exit(str(e))
        parts = ("head",)
    elif not cfg.TEST.HAS_RPN:
        sys.exit("TEST.HAS_RPN is False: give --proposals (tools/rpn_generate.py)")
    model = model_file.build(cfg, parts, cfg.DEVICE, args.net, imdb.num_classes)
    name = os.path.splitext(os.path.basename(args.model))[0]
    out = get_output_dir(imdb.name.replace(":", "_").replace("/", "_"), cfg, name)
    print(f"testing {args.model} on {imdb.name} ({imdb.num_images} images), device {cfg.DEVICE}, "
          f"{threads_note()}; results in {out}")
    t0, timings = time.perf_counter(), {}
    with autocast_context(cfg.DEVICE, amp_dtype(cfg, cfg.DEVICE, args.net)):
        mAP = test_net(model, imdb, cfg, out, max_per_image=args.max_per_image,
                       proposals=proposals, vis_dir=args.vis, timings=timings)
    if du.is_main_process():  # AP@0.75, AP@[.5:.95] per class -> log + <out>/metrics.json
        table = strict_iou_report(imdb, out, voc_map=mAP, extra={
            "model": args.model, "pooling": cfg.POOLING_MODE, "pooling_aligned":
            cfg.POOLING_ALIGNED, "pooling_sampling_ratio": cfg.POOLING_SAMPLING_RATIO})
        if args.map_file:  # the devkit mAP, then AP@0.5 as the area under the PR curve
            with open(args.map_file, "w") as f:
                f.write(f"{mAP:.4f}\n{table['mean']['AP50']:.4f}\n")
        from frcnn.evaluation.report import after_test_net  # COCO, confusion, TIDE, report.html

        after_test_net(imdb, out, args.net, args.model, cfg, args.cfg_file, {
            "im_detect": f"{1000 * timings['im_detect']:.1f} ms/image",
            "misc (NMS, ...)": f"{1000 * timings['misc']:.1f} ms/image",
            "test_net until the report": f"{time.perf_counter() - t0:.1f} s"}, args.imdb,
            args.set_cfgs)
    print(f"test_net total {time.perf_counter() - t0:.1f}s")
    du.cleanup()
    return mAP


if __name__ == "__main__":
    sys.exit(run_main(main))
