#!/usr/bin/env python
"""Export a trained detector as one program, image blob in, detections out: a torch.export
program (.pt2, needs torch and the frcnn ops) or an ONNX file of standard ops (.onnx, runs in
ONNX Runtime and OpenVINO without torch: frcnn.deploy.OnnxDetector).

  python tools/export.py --model output/.../elite0_faster_rcnn_final.pth --out detector.onnx \
      [--format onnx|pt2] [--int8 --calib voc_folder:/path/VOCcards:trainval] \
      [--score-thresh 0.05] [--nms 0.3] [--max-per-image 100] [--check photo.jpg ...] [--cfg yml]

The program: (images [1, 3, h, w] f32 BGR minus PIXEL_MEANS, resized so the short side is
TEST.SCALES[0] (long side <= TEST.MAX_SIZE); im_info [1, 3] (h, w, scale); image_size [2] (H, W)
of the original) -> (boxes [D, 4] original pixels, scores [D], labels [D] class index).
Thresholds are fixed at export. The .pt2 loads with torch and the frcnn ops library only:

    torch.ops.load_library("lib/frcnn/_C....so"); ep = torch.export.load("detector.pt2", extra_files=x)

x = {"classes.json": ""} receives the class names, test scale, pixel means and thresholds; the
.onnx holds the same JSON in its metadata (key "frcnn").
--int8 (ONNX) also writes <out>-int8.onnx: ONNX Runtime static quantization of the convolutions
and fc layers, calibrated on 100 images of --calib (an image set name, spread over it).
--check runs the exported file and the Detector on images and compares their detections
(ONNX: one-to-one, boxes within 0.5 px, scores within 1e-3).
"""
import argparse
import os
import sys

import _init_paths  # noqa: F401
from frcnn.cli import add_common_args, run_main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="export a Faster R-CNN model (.pt2 or .onnx)")
    p.add_argument("--model", required=True, help="*_faster_rcnn_final.pth")
    p.add_argument("--out", required=True, help=".pt2 or .onnx file to write")
    p.add_argument("--format", choices=("pt2", "onnx"), default=None,
                   help="default: from --out's extension")
    p.add_argument("--int8", action="store_true", help="ONNX: also write <out>-int8.onnx")
    p.add_argument("--calib", default=None, help="image set for --int8 calibration (100 images)")
    p.add_argument("--net", default=None, help="only for model files that do not store it")
    p.add_argument("--score-thresh", type=float, default=None, help="default TEST.SCORE_THRESH")
    p.add_argument("--nms", type=float, default=None, help="default TEST.NMS")
    p.add_argument("--max-per-image", type=int, default=None, help="default TEST.MAX_PER_IMAGE")
    p.add_argument("--check", nargs="*", default=[], help="images to compare export vs Detector on")
    add_common_args(p)
    args = p.parse_args(argv)
    args.format = args.format or ("onnx" if args.out.lower().endswith(".onnx") else "pt2")
    from frcnn.errors import ConfigError

    if args.int8 and (args.format != "onnx" or not args.calib):
        raise ConfigError(f"{args.out}: --int8 quantizes the ONNX export; give an .onnx --out "
                          "(or --format onnx) and --calib IMAGE_SET (e.g. voc_folder:PATH:trainval)")
    return args


def main(argv=None):
    args = parse_args(argv)
    import time

    from frcnn.api import Detector, model_cfg
    from frcnn.export import export_detector, export_onnx

    cfg = model_cfg(args.model, args.cfg_file, args.set_cfgs)
    det = Detector.from_file(args.model, device="cpu", cfg=cfg, net=args.net,
                             score_thresh=args.score_thresh, nms_thresh=args.nms,
                             max_per_image=args.max_per_image)
    calib = _calibration_images(args, cfg) if args.int8 else []
    t = time.perf_counter()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    if args.format == "onnx":
        export_onnx(det, args.out)
    else:
        export_detector(det, args.out)
    print(f"exported {det} to {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB) in "
          f"{time.perf_counter() - t:.0f} s")
    outs = [args.out]
    if args.int8:
        from frcnn.export import quantize_int8

        q = os.path.splitext(args.out)[0] + "-int8.onnx"
        t = time.perf_counter()
        quantize_int8(args.out, q, calib)
        print(f"int8: {q} ({os.path.getsize(q) / 1e6:.1f} MB), calibrated on {len(calib)} images "
              f"of {args.calib} in {time.perf_counter() - t:.0f} s")
        outs.append(q)
    bad = 0
    for out in outs if args.check else []:
        bad += not check_export(out, det, args.check)
    return 1 if bad else 0


def _calibration_images(args, cfg):
    from frcnn.datasets.factory import get_imdb
    from frcnn.export import calibration_images

    return calibration_images(get_imdb(args.calib, cfg), 100)


def check_export(path, det, images):
    """Detections of the exported file vs the Detector on each image; prints one line each.
    -> True when every image agrees (.pt2: to 1e-3 px / 1e-5; .onnx: match_detections)."""
    import numpy as np
    import torch

    from frcnn.detections import read_any_image
    from frcnn.fast_rcnn.test import get_test_blob

    if path.endswith(".onnx"):
        from frcnn.deploy import OnnxDetector, match_detections

        onnx_det = OnnxDetector(path)
    else:
        prog = torch.export.load(path).module()
    ok = True
    for image in images:
        im = read_any_image(image)
        d = det(im)
        if path.endswith(".onnx"):
            e = onnx_det(im)
            matched = match_detections(d, e)
            same = matched == len(d) == len(e)
            what = f"{matched} matched"
        else:
            images_t, im_info, _ = get_test_blob(im, det.cfg)
            with torch.no_grad():
                b, s, l = prog(images_t, im_info, torch.tensor(im.shape[:2], dtype=torch.float32))
            e = type(d)(b.numpy(), s.numpy(), l.numpy())
            same = (len(d) == len(s) and np.array_equal(d.labels, l.numpy())
                    and np.allclose(d.boxes, b.numpy(), atol=1e-3)
                    and np.allclose(d.scores, s.numpy(), atol=1e-5))
            what = "program"
        print(f"{image}: {os.path.basename(path)} {len(e)} detections, Detector {len(d)}, {what}: "
              + ("same" if same else "DIFFERENT"))
        ok &= bool(same)
    return ok


if __name__ == "__main__":
    sys.exit(run_main(main))
