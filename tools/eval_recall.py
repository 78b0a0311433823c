#!/usr/bin/env python
"""Recall of proposals vs IoU for 100/300/1000/2000 proposals per image (the paper's Fig. 4).

  python tools/eval_recall.py --imdb voc_2007_test --net ZF --model output/.../zf_stage1_rpn_final.pth
  python tools/eval_recall.py --imdb voc_2007_test --proposals ss.pkl --proposals rpn.pkl

Sources: each --model (an RPN; proposals generated as the reference's rpn_generate: no pre-NMS
cut, NMS 0.7, top max(N), cached next to the results) and each --proposals pickle (a list of
[P, 4] boxes per image, best first, original-image pixels). Writes recall.md (table), recall.png
(one curve per N and source) and recall.pkl into --out-dir (default
output/<EXP_DIR>/<imdb>/recall).
"""
import argparse
import os
import pickle
import sys

import _init_paths  # noqa: F401
from frcnn.cli import add_common_args, setup_cfg, run_main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Proposal recall vs IoU")
    p.add_argument("--imdb", default="voc_2007_test")
    p.add_argument("--net", default=None, help="VGG16, ZF, TINY or ELITE0 (with --model)")
    p.add_argument("--model", action="append", default=[], help="RPN .pth (repeatable)")
    p.add_argument("--proposals", action="append", default=[], help="proposal pickle (repeatable)")
    p.add_argument("--label", action="append", default=[],
                   help="names of the sources, in order: models first, then pickles")
    p.add_argument("--top-n", default="100,300,1000,2000", help="comma-separated N")
    p.add_argument("--area", default="all", help="gt area range: all, small, medium, large, ...")
    p.add_argument("--num-images", type=int, default=None, help="only the first N images")
    p.add_argument("--out-dir", default=None)
    add_common_args(p)
    args = p.parse_args(argv)
    if not args.model and not args.proposals:
        p.error("give at least one --model or --proposals")
    if args.model and not args.net:
        p.error("--model needs --net")
    return args


def model_proposals(net, path, imdb, cfg, top, out_dir):
    """RPN proposals of `path` on imdb (top `top` after NMS), cached by model file and settings."""
    from frcnn.datasets.imdb import cache_key, cached, file_signature
    from frcnn.fast_rcnn.test import imdb_proposals
    from frcnn.models import build_model
    from frcnn.recipes.alt_opt import load_parts, rpn_generate_cfg

    if not os.path.exists(path):
        sys.exit(f"model file {path} not found; fix --model")
    gcfg = rpn_generate_cfg(cfg)
    gcfg.TEST.RPN_POST_NMS_TOP_N = top
    key = cache_key(file_signature([path]), imdb.name, tuple(imdb.image_index), net,
                    gcfg.TEST.RPN_PRE_NMS_TOP_N, top, gcfg.TEST.RPN_NMS_THRESH,
                    gcfg.TEST.RPN_MIN_SIZE, tuple(gcfg.TEST.SCALES), gcfg.TEST.MAX_SIZE,
                    tuple(gcfg.ANCHOR_SCALES), tuple(gcfg.ANCHOR_RATIOS))

    def build():
        model = build_model(net.upper(), imdb.num_classes, gcfg, parts=("rpn",), pretrained=False)
        load_parts(model, path, ("backbone", "rpn"))
        model.to(gcfg.DEVICE).eval()
        return imdb_proposals(model, imdb, gcfg)

    name = os.path.splitext(os.path.basename(path))[0]
    return cached(os.path.join(out_dir, "cache"), f"{name}_proposals", key, build)


def main(argv=None):
    import numpy as np

    from frcnn.config import get_output_dir
    from frcnn.datasets.factory import get_imdb
    from frcnn.safe_io import load_pickle
    from frcnn.utils.plots import plot_recall_curves
    from frcnn.utils.recall_report import recall_by_n, recall_table

    args = parse_args(argv)
    cfg = setup_cfg(args)
    top_n = tuple(int(x) for x in args.top_n.split(","))
    imdb = get_imdb(args.imdb, cfg)
    if args.num_images:
        imdb._image_index = imdb.image_index[:args.num_images]
    out_dir = args.out_dir or os.path.join(
        get_output_dir(imdb.name.replace(":", "_").replace("/", "_"), cfg), "recall")
    os.makedirs(out_dir, exist_ok=True)
    srcs = [("model", m) for m in args.model] + [("pkl", p) for p in args.proposals]
    labels = list(args.label) + [os.path.splitext(os.path.basename(s[1]))[0]
                                 for s in srcs[len(args.label):]]
    results, curves = {}, []
    for (kind, path), label in zip(srcs, labels):
        if kind == "model":
            boxes = model_proposals(args.net, path, imdb, cfg, max(top_n), out_dir)
        else:
            if not os.path.exists(path):
                sys.exit(f"proposal file {path} not found; fix --proposals")
            boxes = load_pickle(path, "proposals file")
            if len(boxes) < imdb.num_images:
                sys.exit(f"{path} has {len(boxes)} entries, {imdb.name} has {imdb.num_images} "
                         "images: generate proposals for this image set")
        boxes = [np.asarray(b) for b in boxes[:imdb.num_images]]
        results[label] = recall_by_n(imdb, boxes, top_n, args.area)
        for n, r in results[label].items():
            curves.append((label, n, r["thresholds"], r["recalls"]))
    table = recall_table(results)
    print(table)
    with open(os.path.join(out_dir, "recall.md"), "w") as f:
        f.write(f"# Proposal recall on {imdb.name} ({imdb.num_images} images, area {args.area})"
                f"\n\n{table}\n")
    with open(os.path.join(out_dir, "recall.pkl"), "wb") as f:
        pickle.dump(results, f, pickle.HIGHEST_PROTOCOL)
    png = plot_recall_curves(curves, os.path.join(out_dir, "recall.png"),
                             f"Recall vs IoU, {imdb.name}")
    print(f"wrote {out_dir}/recall.md, recall.pkl, {os.path.basename(png)}")
    return results


if __name__ == "__main__":
    sys.exit(run_main(main))
