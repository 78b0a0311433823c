#!/usr/bin/env python
"""Detect objects in images or folders: one JSON file (COCO results format, class names included)
and, with --vis, PNGs with labelled boxes.

  python tools/detect.py --model output/.../elite0_faster_rcnn_final.pth photos/ a.jpg \
      --out detections.json [--vis vis_out/] [--score-thresh 0.5] [--cfg yml] [--set K V ...]

JSON: a list of {"image_id", "file_name", "category_id", "category_name", "bbox": [x, y, w, h],
"score"}; image_id numbers the images in the order listed (folders sorted), category_id is the
class index (1..K) of the model. The net, class names and test cfg come from the model file
(cfg.yml beside it when the training scripts wrote one); --net / --imdb / --cfg override.
tools/demo.py is this tool with --vis (its --out is the PNG folder).
"""
import argparse
import json
import os
import sys

import _init_paths  # noqa: F401
from frcnn.detections import list_images
from frcnn.cli import add_common_args, run_main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Faster R-CNN detection: images -> COCO-style JSON "
                                "(+ PNGs with --vis)")
    p.add_argument("inputs", nargs="+", help="images or folders (every .jpg/.jpeg/.png/.bmp)")
    p.add_argument("--model", required=True, help="*_faster_rcnn_final.pth, or an .onnx from "
                   "tools/export.py (run by ONNX Runtime)")
    p.add_argument("--net", default=None, help="only for model files that do not store it")
    p.add_argument("--imdb", default=None, help="take class names from this image set")
    p.add_argument("--out", default="detections.json", help="JSON file to write")
    p.add_argument("--vis", default=None, help="folder for PNGs with the detections drawn")
    p.add_argument("--thresh", type=float, default=None, help="min score drawn in --vis PNGs "
                   "(default: the F1-best score test_net stored in the model file, else 0.8)")
    p.add_argument("--score-thresh", type=float, default=None,
                   help="min score written (default cfg TEST.SCORE_THRESH, 0.05)")
    p.add_argument("--nms", type=float, default=None, help="per-class NMS IoU (default TEST.NMS)")
    p.add_argument("--max-per-image", type=int, default=None, help="default TEST.MAX_PER_IMAGE")
    add_common_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import cv2

    from frcnn.api import Detector, model_cfg
    from frcnn.detections import read_any_image
    from frcnn.fast_rcnn.test import vis_detections
    from frcnn.utils.timer import Timer

    images = list_images(args.inputs)
    thresholds = dict(score_thresh=args.score_thresh, nms_thresh=args.nms,
                      max_per_image=args.max_per_image)
    if args.model.lower().endswith(".onnx"):  # classes, blob and thresholds are in the file
        det = Detector.from_file(args.model, **thresholds)
    else:
        cfg = model_cfg(args.model, args.cfg_file, args.set_cfgs, args.device)
        classes = None
        if args.imdb:
            from frcnn.datasets.factory import get_imdb

            classes = list(get_imdb(args.imdb, cfg).classes)
        det = Detector.from_file(args.model, device=cfg.DEVICE, cfg=cfg, net=args.net,
                                 classes=classes, **thresholds)
    print(f"{det} on {len(images)} image(s)")
    args.thresh = det.draw_thresh if args.thresh is None else args.thresh
    if args.vis:
        os.makedirs(args.vis, exist_ok=True)
    results, t = [], Timer()
    for image_id, path in enumerate(images, 1):
        im = read_any_image(path)
        t.tic()
        d = det(im)
        t.toc()
        results += d.to_coco(image_id, file_name=path)
        shown = [(n, s) for n, s in zip(d.class_names, d.scores) if s >= args.thresh]
        line = (f"{path}: {len(d)} detections ({len(shown)} >= {args.thresh}) in "
                f"{1000 * t.diff:.0f} ms" + ("" if not shown else ": " + ", ".join(
                    f"{n} {s:.2f}" for n, s in shown[:10])))
        if args.vis:
            per_class = [[] for _ in det.classes]
            for b, s, c in zip(d.boxes, d.scores, d.labels):
                per_class[c].append([*b, s])
            out = os.path.join(args.vis, os.path.splitext(os.path.basename(path))[0] + ".png")
            cv2.imwrite(out, vis_detections(im, per_class, det.classes, args.thresh))
            line += f" -> {out}"
        print(line)
    d = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(d, exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f)
    print(f"wrote {len(results)} detections of {len(images)} image(s) to {args.out} "
          f"({1000 * t.average_time:.0f} ms/image)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
