#!/usr/bin/env python
"""Time the detection path per image, split like Table 5 of the paper:
conv (shared convs), proposal (RPN + proposal layer), region-wise (RoI pooling, fc layers,
softmax, box decoding, per-class NMS), total. Median over images after warm-up.

  python tools/bench_proposals.py --net VGG16 --height 600 --width 1000 [--device cuda]
  python tools/bench_proposals.py --model output/.../tiny_faster_rcnn_final.pth --images data/demo

It runs in the precision the detector runs in (test_net's: cfg SOLVER.AMP, 'auto' = bf16 autocast
for VGG16 / ZF on a CPU with bf16 matrix units; --amp / --no-amp override) and prints it.
Random weights are fine for timing (the proposal layer still keeps TEST.RPN_POST_NMS_TOP_N boxes
when the RPN is random); --model times trained weights (net and classes from the file),
--images times real images (resized as TEST.SCALES).
"""
import argparse
import json
import os
import sys

import _init_paths  # noqa: F401
from frcnn.cli import add_common_args, apply_runtime_args, run_main, setup_cfg, threads_note
from frcnn.precision import amp_dtype, autocast_context


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="ms/image of the Faster R-CNN detection path")
    p.add_argument("--net", default=None, help="VGG16 (default), ZF, TINY or ELITE0; with "
                   "--model: only for files that do not record it")
    p.add_argument("--model", default=None, help="a final model file (.pth); default random init")
    p.add_argument("--num-classes", type=int, default=21,
                   help="K+1 of the random-weight model (VOC: 21); --model: from the file")
    p.add_argument("--height", type=int, default=600)
    p.add_argument("--width", type=int, default=1000)
    p.add_argument("--images", nargs="+", default=None,
                   help="image files or folders (resized as TEST.SCALES); default random blobs")
    p.add_argument("--iters", type=int, default=10, help="timed images")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the medians here")
    add_common_args(p)
    return p.parse_args(argv)


def load_detector(args, cfg, device):
    """-> (FasterRCNN in eval mode on device, classes, net name)."""
    import torch

    from frcnn.models import build_model

    if args.model:
        from frcnn.api import Detector

        det = Detector.from_file(args.model, device=str(device), cfg=cfg, net=args.net)
        return det.model, det.classes, det.net
    net = (args.net or "VGG16").upper()
    torch.manual_seed(0)
    model = build_model(net, args.num_classes, cfg, parts=("rpn", "head"), pretrained=False)
    classes = ["__background__"] + [f"class{i}" for i in range(1, args.num_classes)]
    return model.to(device).eval(), classes, net


def bench_blobs(args, cfg):
    """[(images [1, 3, H, W], im_info [1, 3])]: the given images, else 4 random ones."""
    import numpy as np
    import torch

    if args.images:
        from frcnn.detections import list_images, read_any_image
        from frcnn.fast_rcnn.test import get_test_blob

        return [get_test_blob(read_any_image(p), cfg)[:2] for p in list_images(args.images)]
    rng = np.random.default_rng(0)
    h, w = args.height, args.width
    return [(torch.from_numpy(rng.normal(0, 50, (1, 3, h, w)).astype(np.float32)),
             torch.tensor([[h, w, 1.0]])) for _ in range(4)]


def detect_timed(model, images, im_info, num_classes, cfg, timers):
    """One image through the stages, each timed; -> number of RoIs."""
    import torch

    from frcnn.fast_rcnn.test import detections_for_image
    from frcnn.utils.bbox_transform import bbox_transform_inv, clip_boxes

    im_shape = (float(im_info[0, 0]), float(im_info[0, 1]))
    timers["total"].tic()
    timers["conv"].tic()
    if images.device.type == "cpu":  # the layout FasterRCNN.forward gives the backbone
        images = images.contiguous(memory_format=torch.channels_last)
    feats = model.backbone(images)
    timers["conv"].toc()
    timers["proposal"].tic()
    boxes, _, _ = model.rpn(feats, im_info)
    timers["proposal"].toc()
    timers["region-wise"].tic()
    out = model.head(feats, boxes, model.bbox_means, model.bbox_stds)
    rois = out["rois"]
    pred = clip_boxes(bbox_transform_inv(rois[:, 1:], out["bbox_pred"]), im_shape)
    detections_for_image(out["cls_prob"].cpu().numpy(), pred.cpu().numpy(), num_classes,
                         cfg.TEST.SCORE_THRESH, cfg.TEST.NMS, cfg.TEST.MAX_PER_IMAGE)
    timers["region-wise"].toc()
    timers["total"].toc()
    return rois.shape[0]


def precision_name(amp):
    return "float32" if amp is None else f"{str(amp).replace('torch.', '')} autocast"


def main(argv=None):
    args = parse_args(argv)
    cfg = setup_cfg(args)
    apply_runtime_args(args, cfg)

    import numpy as np
    import torch

    from frcnn.utils.timer import Timer

    device = torch.device(cfg.DEVICE)
    model, classes, net = load_detector(args, cfg, device)
    amp = amp_dtype(cfg, device, net)  # prints the choice, as test_net does
    blobs = bench_blobs(args, cfg)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    timers = {k: Timer(sync) for k in ("conv", "proposal", "region-wise", "total")}
    with torch.inference_mode(), autocast_context(device, amp):
        n_rois = [detect_timed(model, *(t.to(device) for t in blobs[i % len(blobs)]),
                               len(classes), cfg, timers)
                  for i in range(args.warmup + args.iters)]
    med = {k: 1000 * t.median(skip=args.warmup) for k, t in timers.items()}
    shape = tuple(blobs[0][0].shape[2:])
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{net} {shape[0]}x{shape[1]} on {dev_name} ({threads_note()}), {precision_name(amp)}, "
          f"{'weights ' + args.model if args.model else 'random weights'}, {len(classes)} classes, "
          f"{int(np.median(n_rois))} proposals/image, median of {args.iters} after {args.warmup} warm-up:")
    print("  " + "  ".join(f"{k} {v:.1f} ms" for k, v in med.items()))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"net": net, "shape": shape, "device": dev_name, "ms": med,
                       "precision": precision_name(amp), "classes": len(classes),
                       "proposals": int(np.median(n_rois))}, f, indent=1)
    return med


if __name__ == "__main__":
    sys.exit(run_main(main))
