#!/usr/bin/env python
"""Time the detection path per image, split like Table 5 of the paper:
conv (shared convs), proposal (RPN head + proposal layer), region-wise (RoI pooling, fc layers,
softmax, box decoding, per-class NMS), total. Median over images after warm-up.

  python tools/bench_proposals.py --net VGG16 --height 600 --width 1000 [--device cuda] [--model PTH]

Random weights are fine for timing (the proposal layer still keeps TEST.RPN_POST_NMS_TOP_N boxes
when the RPN is random); --model times trained weights, --images times real images.
"""
import argparse
import json
import os
import sys

import _init_paths  # noqa: F401
from _init_paths import add_common_args, apply_runtime_args, setup_cfg, threads_note


def main(argv=None):
    p = argparse.ArgumentParser(description="ms/image of the Faster R-CNN detection path")
    p.add_argument("--net", default="VGG16")
    p.add_argument("--model", default=None, help="weights (.pth); default random init")
    p.add_argument("--num-classes", type=int, default=21, help="K+1 (VOC: 21)")
    p.add_argument("--height", type=int, default=600)
    p.add_argument("--width", type=int, default=1000)
    p.add_argument("--images", default=None, help="folder of images (resized as TEST.SCALES)")
    p.add_argument("--iters", type=int, default=10, help="timed images")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the medians here")
    add_common_args(p)
    args = p.parse_args(argv)
    cfg = setup_cfg(args)

    import numpy as np
    import torch

    from frcnn.fast_rcnn.bbox_transform import bbox_transform_inv, clip_boxes
    from frcnn.fast_rcnn.test import detections_for_image, get_test_blob
    from frcnn.models import build_model
    from frcnn.rpn.generate_anchors import shifted_anchors
    from frcnn.rpn.proposal_layer import proposal_layer
    from frcnn.utils.timer import Timer

    apply_runtime_args(args, cfg)
    device = torch.device(cfg.DEVICE)
    torch.manual_seed(0)
    if args.model:
        from frcnn.model_file import ModelFile

        model = ModelFile.load(args.model).build(cfg, ("rpn", "head"), device, args.net,
                                                 args.num_classes)
    else:
        model = build_model(args.net.upper(), args.num_classes, cfg, parts=("rpn", "head"), pretrained=False)
        model.to(device).eval()

    rng = np.random.default_rng(0)
    if args.images:
        import cv2

        from demo import list_images

        paths = list_images([args.images])
        blobs = [get_test_blob(cv2.imread(pth), cfg)[:2] for pth in paths]
    else:
        h, w = args.height, args.width
        blobs = [(torch.from_numpy(rng.normal(0, 50, (1, 3, h, w)).astype(np.float32)),
                  torch.tensor([[h, w, 1.0]])) for _ in range(4)]
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    timers = {k: Timer(sync) for k in ("conv", "proposal", "region-wise", "total")}
    n_rois = []
    with torch.inference_mode():
        for i in range(args.warmup + args.iters):
            images, im_info = blobs[i % len(blobs)]
            images, im_info = images.to(device), im_info.to(device)
            im_shape = (float(im_info[0, 0]), float(im_info[0, 1]))
            timers["total"].tic()
            timers["conv"].tic()
            feats = model.backbone(images)
            timers["conv"].toc()
            timers["proposal"].tic()
            cls, deltas = model.rpn(feats)
            H, W = feats.shape[2:]
            anchors = shifted_anchors(H, W, model.backbone.feat_stride, model.rpn.anchors, device=device)
            fg = torch.softmax(cls.float(), dim=2)[..., 1]
            boxes, _ = proposal_layer(fg[0], deltas[0].float(), anchors, im_info[0],
                                      model.test_proposal_params)
            timers["proposal"].toc()
            timers["region-wise"].tic()
            rois = torch.cat((boxes.new_zeros((boxes.shape[0], 1)), boxes[:, :4]), dim=1)
            logits, bbox_pred = model.head(feats, rois)
            prob = torch.softmax(logits.float(), dim=1)
            bbox_pred = bbox_pred.float() * model.bbox_stds.reshape(1, -1) + model.bbox_means.reshape(1, -1)
            pred = clip_boxes(bbox_transform_inv(rois[:, 1:], bbox_pred), im_shape)
            detections_for_image(prob.cpu().numpy(), pred.cpu().numpy(), args.num_classes,
                                 cfg.TEST.SCORE_THRESH, cfg.TEST.NMS, cfg.TEST.MAX_PER_IMAGE)
            timers["region-wise"].toc()
            timers["total"].toc()
            n_rois.append(rois.shape[0])
    med = {k: 1000 * t.median(skip=args.warmup) for k, t in timers.items()}
    shape = tuple(blobs[0][0].shape[2:])
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{args.net} {shape[0]}x{shape[1]} on {dev_name} ({threads_note()}), "
          f"{'weights ' + args.model if args.model else 'random weights'}, "
          f"{int(np.median(n_rois))} proposals/image, median of {args.iters} after {args.warmup} warm-up:")
    print("  " + "  ".join(f"{k} {v:.1f} ms" for k, v in med.items()))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"net": args.net, "shape": shape, "device": dev_name, "ms": med,
                       "proposals": int(np.median(n_rois))}, f, indent=1)
    return med


if __name__ == "__main__":
    sys.exit(_init_paths.run_main(main))
