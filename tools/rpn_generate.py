#!/usr/bin/env python
"""Generate RPN proposals for every image of an image set (pickle of per-image [P, 4] boxes).

The alt-opt tool runs this between stages with the reference's settings: each image unflipped,
no pre-NMS cut (ALT_OPT.PROPOSAL_PRE_NMS_TOP_N -1), NMS TEST.RPN_NMS_THRESH 0.7, top
ALT_OPT.PROPOSAL_POST_NMS_TOP_N 2000, min size TEST.RPN_MIN_SIZE 16, original-image coords.

  python tools/rpn_generate.py --net ZF --model output/.../zf_stage1_rpn_final.pth \
      --imdb voc_2007_trainval --cfg experiments/cfgs/faster_rcnn_alt_opt.yml --out props.pkl

Under torchrun the images are split over the ranks; rank 0 gathers and writes the pickle.
"""
import argparse
import os
import pickle

import _init_paths  # noqa: F401
from frcnn.cli import add_common_args, apply_runtime_args, run_main, setup_cfg
from frcnn.precision import amp_dtype, autocast_context


def main(argv=None):
    p = argparse.ArgumentParser(description="RPN proposals for an image set")
    p.add_argument("--net", required=True)
    p.add_argument("--model", required=True, help="a .pth with backbone + rpn weights")
    p.add_argument("--imdb", default="voc_2007_trainval")
    p.add_argument("--out", default=None, help="default: <model>_proposals_<imdb>.pkl")
    add_common_args(p)
    args = p.parse_args(argv)
    cfg = setup_cfg(args)
    apply_runtime_args(args, cfg)

    from frcnn.datasets.factory import get_imdb
    from frcnn.fast_rcnn.test import imdb_proposals
    from frcnn.models import build_model
    from frcnn.utils import distributed as du
    from frcnn.recipes.alt_opt import load_parts, rpn_generate_cfg

    du.setup_for_tool(cfg)
    cfg = rpn_generate_cfg(cfg)
    imdb = get_imdb(args.imdb, cfg)
    model = build_model(args.net.upper(), imdb.num_classes, cfg, parts=("rpn",), pretrained=False)
    load_parts(model, args.model, ("backbone", "rpn"))
    model.to(cfg.DEVICE).eval()
    with autocast_context(cfg.DEVICE, amp_dtype(cfg, cfg.DEVICE, args.net)):
        boxes = imdb_proposals(model, imdb, cfg)
    out = args.out or (os.path.splitext(args.model)[0] + "_proposals_"
                       + imdb.name.replace(":", "_").replace("/", "_") + ".pkl")
    if du.is_main_process():
        with open(out + ".tmp", "wb") as f:
            pickle.dump(boxes, f, pickle.HIGHEST_PROTOCOL)
        os.replace(out + ".tmp", out)
        print(f"wrote {out}")
    du.cleanup()
    return out


if __name__ == "__main__":
    raise SystemExit(run_main(main))
