#!/usr/bin/env python
"""Detect objects in images and write PNGs with labelled boxes (CPU is fine).

  python tools/demo.py --net TINY --model output/shapes_alt_opt/shapes_train/tiny_faster_rcnn_final.pth \
      data/demo/ some/image.jpg --out demo_out/ [--thresh 0.8] [--cfg yml] [--set K V ...]

Inputs are image files or folders (every .jpg/.jpeg/.png/.bmp inside). Class names come from the
model file (the training tools store them) or from --imdb.
"""
import argparse
import os
import sys

import _init_paths  # noqa: F401
from _init_paths import add_common_args, setup_cfg

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp")


def list_images(inputs):
    out = []
    for p in inputs:
        if os.path.isdir(p):
            out += sorted(os.path.join(p, f) for f in os.listdir(p) if f.lower().endswith(IMAGE_EXT))
        elif os.path.isfile(p):
            out.append(p)
        else:
            sys.exit(f"{p}: no such image or folder")
    if not out:
        sys.exit(f"no images ({', '.join(IMAGE_EXT)}) in {inputs}")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description="Faster R-CNN demo: images -> PNGs with boxes")
    p.add_argument("--net", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--out", default="demo_out", help="output folder for the PNGs")
    p.add_argument("--thresh", type=float, default=0.8, help="min score drawn (reference demo: 0.8)")
    p.add_argument("--imdb", default=None, help="take class names from this image set")
    p.add_argument("inputs", nargs="+", help="images or folders")
    add_common_args(p)
    args = p.parse_args(argv)
    cfg = setup_cfg(args)

    import cv2
    import torch

    from frcnn.fast_rcnn.test import detections_for_image, im_detect, vis_detections
    from frcnn.utils.timer import Timer
    from test_net import load_model

    raw = torch.load(args.model, map_location="cpu", weights_only=False) if os.path.exists(args.model) else {}
    classes = raw.get("classes") if isinstance(raw, dict) else None
    if args.imdb:
        from frcnn.datasets.factory import get_imdb

        classes = list(get_imdb(args.imdb, cfg).classes)
    if not classes:
        sys.exit(f"{args.model} stores no class names: pass --imdb NAME")
    model = load_model(args.net, args.model, len(classes), cfg, device=cfg.DEVICE)
    os.makedirs(args.out, exist_ok=True)
    t = Timer()
    for path in list_images(args.inputs):
        im = cv2.imread(path)
        if im is None:
            print(f"skip {path}: not a readable image")
            continue
        t.tic()
        scores, boxes = im_detect(model, im, cfg)
        t.toc()
        dets = detections_for_image(scores, boxes, len(classes), cfg.TEST.SCORE_THRESH,
                                    cfg.TEST.NMS, cfg.TEST.MAX_PER_IMAGE)
        found = [(classes[j], float(d[4])) for j in range(1, len(classes)) for d in dets[j]
                 if d[4] >= args.thresh]
        out = os.path.join(args.out, os.path.splitext(os.path.basename(path))[0] + ".png")
        cv2.imwrite(out, vis_detections(im, dets, classes, args.thresh))
        print(f"{path}: {len(found)} detections >= {args.thresh} in {1000 * t.diff:.0f} ms "
              f"({len(boxes)} proposals) -> {out}"
              + ("" if not found else ": " + ", ".join(f"{c} {s:.2f}" for c, s in found)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
