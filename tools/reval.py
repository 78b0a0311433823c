#!/usr/bin/env python
"""Re-evaluate a saved detections file with other settings, without running the net.

  python tools/reval.py output/<EXP_DIR>/<imdb>/<model>/ --imdb voc_2007_test [--nms 0.3]
      [--metric 07|area] [--classes dog,cat] [--out-dir DIR]

DETECTIONS: test_net's detections.pkl or the folder holding it. Writes the results files, per-class
PR curves (<out-dir>/pr/<class>.png) and reval.txt (AP per class, mAP) into --out-dir
(default: <folder of the detections>/reval).
"""
import argparse
import os
import sys

import _init_paths  # noqa: F401
from frcnn.cli import add_common_args, setup_cfg, run_main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Re-evaluate saved detections")
    p.add_argument("detections", help="detections.pkl or the test output folder holding it")
    p.add_argument("--imdb", default="voc_2007_test")
    p.add_argument("--nms", type=float, default=None, help="re-apply per-class NMS at this IoU")
    p.add_argument("--metric", choices=("07", "area"), default=None,
                   help="07: VOC07 11-point AP; area: area under the PR curve (VOC2010+)")
    p.add_argument("--classes", default=None, help="comma-separated class subset")
    p.add_argument("--out-dir", default=None)
    add_common_args(p)
    return p.parse_args(argv)


def main(argv=None):
    from frcnn.datasets.factory import get_imdb
    from frcnn.fast_rcnn.reval import load_detections, reevaluate, write_pr_curves

    args = parse_args(argv)
    cfg = setup_cfg(args)
    all_boxes = load_detections(args.detections)
    src = args.detections if os.path.isdir(args.detections) else os.path.dirname(args.detections)
    out = args.out_dir or os.path.join(src, "reval")
    os.makedirs(out, exist_ok=True)
    imdb = get_imdb(args.imdb, cfg)
    classes = [c.strip().lower() for c in args.classes.split(",")] if args.classes else None
    metric = None if args.metric is None else args.metric == "07"
    mAP, aps = reevaluate(imdb, all_boxes, out, nms_thresh=args.nms, use_07_metric=metric,
                          classes=classes)
    try:
        write_pr_curves(imdb, out, classes)
    except ImportError as e:
        print(f"no PR plots: {e}")
    with open(os.path.join(out, "reval.txt"), "w") as f:
        f.write(f"detections {args.detections}, imdb {imdb.name}, nms {args.nms}, "
                f"metric {args.metric or 'imdb default'}, classes {classes or 'all'}\n")
        for c, a in aps.items():
            f.write(f"AP {c} {a:.4f}\n")
        f.write(f"mAP {mAP:.4f}\n")
    print(f"mAP {mAP:.4f}; wrote {out}/reval.txt")
    return mAP


if __name__ == "__main__":
    sys.exit(run_main(main))
