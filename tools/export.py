#!/usr/bin/env python
"""Export a trained detector as one torch.export program (.pt2): image blob in, detections out.

  python tools/export.py --model output/.../elite0_faster_rcnn_final.pth --out detector.pt2 \
      [--score-thresh 0.05] [--nms 0.3] [--max-per-image 100] [--check photo.jpg] [--cfg yml]

The program: (images [1, 3, h, w] f32 BGR minus PIXEL_MEANS, resized so the short side is
TEST.SCALES[0] (long side <= TEST.MAX_SIZE); im_info [1, 3] (h, w, scale); image_size [2] (H, W)
of the original) -> (boxes [D, 4] original pixels, scores [D], labels [D] class index).
Loading needs torch and the frcnn ops library only:

    torch.ops.load_library("lib/frcnn/_C....so"); ep = torch.export.load("detector.pt2", extra_files=x)

x = {"classes.json": ""} receives the class names, test scale, pixel means and thresholds.
--check runs the program and the Detector on an image and compares their detections.
"""
import argparse
import os
import sys

import _init_paths  # noqa: F401
from frcnn.cli import add_common_args, run_main


def main(argv=None):
    p = argparse.ArgumentParser(description="torch.export a Faster R-CNN model (.pt2)")
    p.add_argument("--model", required=True, help="*_faster_rcnn_final.pth")
    p.add_argument("--out", required=True, help=".pt2 file to write")
    p.add_argument("--net", default=None, help="only for model files that do not store it")
    p.add_argument("--score-thresh", type=float, default=None, help="default TEST.SCORE_THRESH")
    p.add_argument("--nms", type=float, default=None, help="default TEST.NMS")
    p.add_argument("--max-per-image", type=int, default=None, help="default TEST.MAX_PER_IMAGE")
    p.add_argument("--check", nargs="*", default=[], help="images to compare program vs Detector on")
    add_common_args(p)
    args = p.parse_args(argv)
    import time

    import numpy as np
    import torch

    from frcnn.api import Detector, model_cfg, read_any_image
    from frcnn.export import export_detector

    cfg = model_cfg(args.model, args.cfg_file, args.set_cfgs)
    det = Detector.from_file(args.model, device="cpu", cfg=cfg, net=args.net,
                             score_thresh=args.score_thresh, nms_thresh=args.nms,
                             max_per_image=args.max_per_image)
    t = time.perf_counter()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    ep = export_detector(det, args.out)
    print(f"exported {det} to {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB) in "
          f"{time.perf_counter() - t:.0f} s")
    from frcnn.fast_rcnn.test import get_test_blob

    prog = ep.module()
    for path in args.check:
        im = read_any_image(path)
        images, im_info, _ = get_test_blob(im, det.cfg)
        with torch.no_grad():
            b, s, l = prog(images, im_info, torch.tensor(im.shape[:2], dtype=torch.float32))
        d = det(im)
        same = (len(d) == len(s) and np.array_equal(d.labels, l.numpy())
                and np.allclose(d.boxes, b.numpy(), atol=1e-3) and np.allclose(d.scores, s.numpy(), atol=1e-5))
        print(f"{path}: program {len(s)} detections, Detector {len(d)}: "
              + ("same" if same else "DIFFERENT"))
        if not same:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
