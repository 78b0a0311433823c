#!/usr/bin/env python
"""Convert pretrained weights to a frcnn state dict (.pth in our parameter names).

  tools/convert_weights.py data/imagenet_models/vgg16-397923af.pth data/imagenet_models/VGG16.pth
  tools/convert_weights.py VGG16.v2.caffemodel data/imagenet_models/VGG16.v2.pth
  tools/convert_weights.py ZF_faster_rcnn_final.caffemodel output/ZF_final.pth

Inputs: torchvision vgg16 .pth (RGB/255/std folded into conv1_1 so the net takes Caffe's BGR
minus PIXEL_MEANS), Caffe .caffemodel (ImageNet VGG16.v2 / ZF.v2 or py-faster-rcnn's trained
models), EfficientNet-Lite0 .pth. --net checks that the result loads into that network.
"""
import argparse
import os
import sys

import _init_paths  # noqa: F401  (puts lib/ on sys.path)
import torch
from frcnn.cli import TrustFile, run_main

from frcnn.models.weights import convert_to_state_dict


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="torchvision .pth, .caffemodel or EfficientNet-Lite0 .pth")
    p.add_argument("output", help="output .pth (state dict in frcnn names)")
    p.add_argument("--net", default=None, help="VGG16, ZF, TINY or ELITE0: check the result loads into it")
    p.add_argument("--num-classes", type=int, default=21, help="classes incl. background for --net (default 21)")
    p.add_argument("--trust-file", metavar="PATH", action=TrustFile, default=None,
                   help="load this file even if it asks to run code (only a file you trust)")
    args = p.parse_args(argv)

    sd = convert_to_state_dict(args.input)
    if args.net:
        from frcnn.config import get_default_cfg
        from frcnn.models import build_model
        from frcnn.models.weights import load_pretrained
        model = build_model(args.net, args.num_classes, get_default_cfg(), pretrained=False)
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        torch.save(sd, args.output)
        rep = load_pretrained(model, args.output)
        print(f"{args.net}: {len(rep['loaded'])} tensors loaded, {len(rep['skipped'])} unused "
              f"({', '.join(rep['skipped'][:6])}), {len(rep['missing'])} left at init")
    else:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        torch.save(sd, args.output)
    print(f"wrote {len(sd)} tensors to {args.output}")


if __name__ == "__main__":
    sys.exit(run_main(main))
