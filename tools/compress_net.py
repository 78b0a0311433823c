#!/usr/bin/env python
"""Compress a trained model's fc6/fc7 by truncated SVD (py-faster-rcnn's tools/compress_net.py).

  python tools/compress_net.py --net VGG16 --model output/.../vgg16_faster_rcnn_final.pth \
      [--fc6 1024] [--fc7 256] [--imdb voc_2007_test [--num-images N] [--proposals PKL]]

Defaults keep 1024 / 256 components of 4096-wide fc6 / fc7 (the reference's VGG16 setting) and a
quarter / a sixteenth of the width for other nets. Writes <model>_svd_fc6_<k>_fc7_<k>.pth (it
loads in tools/test_net.py like any model). With --imdb, tests the model before and after and
writes a table (ms/image, head ms per 300 RoIs, head parameters, mAP) to <out>.md.
"""
import argparse
import copy
import os
import sys
import time

import _init_paths  # noqa: F401
from frcnn.cli import add_common_args, setup_cfg, threads_note, run_main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Truncated-SVD compression of fc6/fc7")
    p.add_argument("--net", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--fc6", type=int, default=None, help="components kept in fc6 (0: keep fc6)")
    p.add_argument("--fc7", type=int, default=None, help="components kept in fc7 (0: keep fc7)")
    p.add_argument("--out", default=None)
    p.add_argument("--imdb", default=None, help="test before/after on this image set")
    p.add_argument("--proposals", default=None, help="test on these proposals (no-RPN model)")
    p.add_argument("--num-images", type=int, default=None)
    p.add_argument("--bench-head", action="store_true",
                   help="time the head (fc layers) on 300 RoIs before/after, models alternating")
    add_common_args(p)
    return p.parse_args(argv)


def head_ms(model, n_rois=300, reps=5):
    """ms for the head's fc layers + predictors on n_rois pooled RoIs (median of reps)."""
    import torch

    h = model.head
    dev = next(h.parameters()).device
    c = {"VGG16Head": 512, "ZFHead": 256, "TinyHead": 128, "Elite0Head": 112}.get(
        type(h).__name__)
    if c is None:
        return float("nan")
    pooled = torch.randn(n_rois, c, *h.roi_size, device=dev)
    ts = []
    with torch.no_grad():
        for _ in range(reps + 1):
            t = time.perf_counter()
            x = h.top(pooled)
            h.cls_score(x), h.bbox_pred(x)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            ts.append(time.perf_counter() - t)
    return 1000 * sorted(ts[1:])[len(ts[1:]) // 2]


def interleaved_ms(models, imdb, cfg, proposals, n=10):
    """Median im_detect ms/image of each model on the first n images, the models alternating
    image by image (after one warm-up image each) so load changes hit both alike."""
    import cv2

    from frcnn.fast_rcnn.test import im_detect

    ims = [cv2.imread(imdb.image_path_at(i)) for i in range(min(n, imdb.num_images))]
    times = [[] for _ in models]
    for k, im in enumerate([ims[0]] + ims):
        for j, m in enumerate(models):
            t = time.perf_counter()
            im_detect(m, im, cfg, None if proposals is None else proposals[max(0, k - 1)])
            if k:
                times[j].append(time.perf_counter() - t)
    return [1000 * sorted(t)[len(t) // 2] for t in times]


def _load_model(args, cfg):
    """The trained model file and its model (head only on given proposals); -> (mf, model)."""
    from frcnn.errors import ConfigError
    from frcnn.model_file import ModelFile

    mf = ModelFile.load(args.model)
    if not mf.classes:
        raise ConfigError(f"{args.model}: no class list inside; compress a *_final.pth of the "
                          "training tools")
    parts = ("head",) if args.proposals else ("rpn", "head")
    if args.proposals:
        cfg.TEST.HAS_RPN = False
    return mf, mf.build(cfg, parts, cfg.DEVICE, args.net)


def _compress_and_save(args, mf, model):
    """Compress a copy of `model` to the asked ranks and save it; -> (small, tag, out path)."""
    from frcnn.model_file import ModelFile
    from frcnn.models.compress import compress_head, default_ranks, head_params

    ranks = default_ranks(model)
    if args.fc6 is not None:
        ranks["fc6"] = args.fc6
    if args.fc7 is not None:
        ranks["fc7"] = args.fc7
    small = copy.deepcopy(model)
    done = compress_head(small, ranks)
    tag = "_".join(f"{k}_{v}" for k, v in done.items())
    out = args.out or os.path.splitext(args.model)[0] + f"_svd_{tag}.pth"
    meta = {k: v for k, v in mf.meta.items() if k != "optimizer"}
    meta.update(svd=done, compressed_from=os.path.abspath(args.model))
    ModelFile(small.state_dict(), mf.net, mf.classes, mf.pooling, mf.seed, meta).save(out)
    p0, p1 = head_params(model), head_params(small)
    print(f"compressed {', '.join(f'{k} to {v} components' for k, v in done.items())}: head "
          f"parameters {p0 / 1e6:.2f}M -> {p1 / 1e6:.2f}M; wrote {out}")
    return small, tag, out


def _print_head_bench(model, small):
    """Print the head's time on 300 RoIs before -> after (--bench-head)."""
    t0, t1 = [], []
    for _ in range(3):  # alternate so load changes hit both alike
        t0.append(head_ms(model))
        t1.append(head_ms(small))
    a, b = sorted(t0)[1], sorted(t1)[1]
    print(f"head (fc layers + predictors) on 300 RoIs: {a:.1f} ms -> {b:.1f} ms (x{a / b:.2f}), "
          f"{threads_note()}, load {os.getloadavg()[0]:.1f}")


def _test_both(args, cfg, model, small, tag, out):
    """Test the original and the compressed model on --imdb; -> (imdb, table rows)."""
    from frcnn.config import get_output_dir
    from frcnn.datasets.factory import get_imdb
    from frcnn.fast_rcnn.test import test_net
    from frcnn.models.compress import head_params
    from frcnn.roi_data.roidb import load_proposals

    imdb = get_imdb(args.imdb, cfg)
    if args.num_images:
        imdb._image_index = imdb.image_index[:args.num_images]
    props = (load_proposals(args.proposals, imdb.num_images, cfg.PROPOSAL_MIN_SIZE, imdb=imdb)
             if args.proposals else None)
    rows = []
    for name, m, path in (("original", model, args.model), ("svd " + tag, small, out)):
        od = get_output_dir(imdb.name.replace(":", "_").replace("/", "_"), cfg,
                            os.path.splitext(os.path.basename(path))[0])
        tm = {}
        mAP = test_net(m, imdb, cfg, od, proposals=props, timings=tm)
        rows.append([name, 1000 * tm["im_detect"], head_ms(m), head_params(m), mAP])
    ms = interleaved_ms([model, small], imdb, cfg, props)
    for r, t in zip(rows, ms):
        r[1] = t
    return imdb, rows


def _write_table(args, cfg, imdb, rows, out):
    """Print the before/after table and write it to <out>.md."""
    lines = [f"# SVD compression of {os.path.basename(args.model)} on {imdb.name} "
             f"({imdb.num_images} images, device {cfg.DEVICE}, {threads_note()})", "",
             "| model | im_detect ms/image (median, interleaved) | head ms / 300 RoIs | head params | mAP |",
             "|---|---|---|---|---|"]
    for n, ms, hm, pc, mAP in rows:
        lines.append(f"| {n} | {ms:.1f} | {hm:.2f} | {pc / 1e6:.2f}M | {mAP:.4f} |")
    lines.append("")
    lines.append(f"head speed-up x{rows[0][2] / rows[1][2]:.2f}, im_detect x"
                 f"{rows[0][1] / rows[1][1]:.2f}, mAP change {rows[1][4] - rows[0][4]:+.4f}")
    table = "\n".join(lines)
    print(table)
    with open(os.path.splitext(out)[0] + ".md", "w") as f:
        f.write(table + "\n")


def main(argv=None):
    import torch

    args = parse_args(argv)
    cfg = setup_cfg(args)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    mf, model = _load_model(args, cfg)
    small, tag, out = _compress_and_save(args, mf, model)
    if args.bench_head:
        _print_head_bench(model, small)
    if not args.imdb:
        return out
    imdb, rows = _test_both(args, cfg, model, small, tag, out)
    _write_table(args, cfg, imdb, rows, out)
    return out


if __name__ == "__main__":
    sys.exit(run_main(main))
