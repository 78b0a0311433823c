"""Accuracy at equal training time: our alt-opt run against torchvision's FasterRCNN built on the
same trunk, trained for the same wall-clock seconds on the same data (a benchmark, not a test).

    python tools/bench_vs_torchvision.py DATASET --tv-python /tmp/tvenv/bin/python \\
        [--net ELITE0] [--seed 0] [--threads 1] [--ours-log LOG] [--set KEY VALUE ...]

1. ours: `./experiments/alt_opt.sh NET DATASET --seed S [--set ...]` (or the stdout of such a
   run already made, --ours-log): its training seconds, cfg (the auto-sized one for folders),
   imdbs and the test metrics.
2. torchvision: this file again under --tv-python (a venv with torchvision, which cannot sit
   beside torch 2.13.0: docs/PERFORMANCE.md), `--torchvision`, for the same training seconds.
3. one table; both sides are scored by the same code (imdb.evaluate_detections, the devkit
   mAP, and voc_eval.strict_iou_report: AP@0.5 area, AP@0.75, AP@[.5:.95]).

What torchvision's model gets from ours (so that only the training recipe differs): the trunk
(frcnn.models.elite0 with the same ImageNet weights, frozen BN and the frozen stages of our
stage 1), images resized by our blob code (TRAIN/TEST.SCALES, MAX_SIZE; its transform neither
resizes nor normalises), anchors 16 x ANCHOR_SCALES x ANCHOR_RATIOS, RPN pre/post-NMS counts and
NMS threshold, fc6/fc7 of 512, test-time score threshold, NMS and detections per image, the
base lr, 1 image per step, horizontal flips. Its own recipe: joint training, RoIAlign 7x7
(sampling 2), 256 anchors and 512 RoIs sampled per image, its box coder and losses, weight decay
1e-4, a linear warm-up over the first epoch (<= 1000 iterations, from 0.001 x lr) and lr x0.1 at
16/26 and 22/26 of the iterations (its detection reference's 26-epoch schedule). The number of
iterations is fitted to the budget from the s/iter of its first 20 iterations and refitted every
50 until half-way (before the first lr step), so the schedule fits.
"""
import argparse
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "lib"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", nargs="?", help="what alt_opt.sh takes (cards, a folder, ...)")
    p.add_argument("--net", default="ELITE0", choices=["ELITE0"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads of each side")
    p.add_argument("--tv-python", help="python of a venv with torchvision")
    p.add_argument("--ours-log", help="stdout of an alt_opt.sh run to compare with (no new run)")
    p.add_argument("--out", default=os.path.join(ROOT, "output", "bench_vs_torchvision"))
    # the torchvision side (called by the orchestrating side under --tv-python)
    p.add_argument("--torchvision", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    p.add_argument("--cfg", help=argparse.SUPPRESS)
    p.add_argument("--train-imdb", help=argparse.SUPPRESS)
    p.add_argument("--test-imdb", help=argparse.SUPPRESS)
    p.add_argument("--set", dest="set_cfgs", nargs=argparse.REMAINDER, default=[],
                   help="KEY VALUE pairs for our run (and the cfg both read)")
    return p.parse_args(argv)


# ---------------------------------------------------------------- ours: alt_opt.sh and its stdout

def read_ours(text):
    """What an alt_opt.sh stdout says: {train_s, cfg, train_imdb, test_imdb, map, metrics?}."""
    out = {}
    for line in text.splitlines():
        if line.startswith("+") and "train_faster_rcnn_alt_opt.py" in line:
            a = shlex.split(line[1:])
            out["train_imdb"], out["cfg"] = a[a.index("--imdb") + 1], a[a.index("--cfg") + 1]
        if line.startswith("+") and "test_net.py" in line:
            a = shlex.split(line[1:])
            out["test_imdb"] = a[a.index("--imdb") + 1]
        m = re.search(r"alt-opt \S+ .*: mAP ([\d.]+), .*\(train (\d+)s, total (\d+)s\)", line)
        if m:
            out["map"], out["train_s"] = float(m.group(1)), float(m.group(2))
        m = re.match(r"metrics written to (\S+)$", line)
        if m:
            out["metrics"] = m.group(1)
    missing = {"train_imdb", "cfg", "test_imdb", "map", "train_s"} - set(out)
    if missing:
        raise SystemExit(f"the alt_opt.sh output lacks {sorted(missing)}: did the run finish?")
    return out


def run_ours(args):
    cmd = ["./experiments/alt_opt.sh", args.net, args.dataset, "--seed", str(args.seed)]
    if args.set_cfgs:
        cmd += ["--set", *args.set_cfgs]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    print("ours:", " ".join(shlex.quote(c) for c in cmd), flush=True)
    log = os.path.join(args.out, f"ours_seed{args.seed}.log")
    with open(log, "w") as f:
        p = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    if p.returncode:
        raise SystemExit(f"our run failed ({p.returncode}); its output: {log}")
    with open(log) as f:
        return f.read()


def _metrics_of(ours):
    """AP@0.5 area / AP@0.75 / AP@[.5:.95] of our run (the metrics.json test_net wrote)."""
    path = ours.get("metrics")
    if not path or not os.path.exists(os.path.join(ROOT, path)):
        return {}
    with open(os.path.join(ROOT, path)) as f:
        return json.load(f)["mean"]


# ---------------------------------------------------------------- the torchvision side

def _tv_model(cfg, num_classes):
    import torch
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.rpn import AnchorGenerator
    from torchvision.models.detection.transform import GeneralizedRCNNTransform
    from torchvision.ops import MultiScaleRoIAlign

    from frcnn.models.elite0 import Elite0

    class Blobs(GeneralizedRCNNTransform):
        """Our blobs go in as they are: resized and mean-subtracted by our code."""

        def resize(self, image, target=None):
            return image, target

    torch.manual_seed(cfg.RNG_SEED)  # the new layers' init, each with torchvision's own rule
    trunk = Elite0(pixel_means=cfg.PIXEL_MEANS)
    for name, p in trunk.named_parameters():
        p.requires_grad_(not name.startswith(Elite0.frozen_prefixes))
    sizes = tuple(float(16 * s) for s in cfg.ANCHOR_SCALES)
    model = FasterRCNN(
        trunk, rpn_anchor_generator=AnchorGenerator((sizes,), (tuple(cfg.ANCHOR_RATIOS),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
        box_head=TwoMLPHead(Elite0.out_channels * 49, 512),
        box_predictor=FastRCNNPredictor(512, num_classes),
        rpn_pre_nms_top_n_train=cfg.TRAIN.RPN_PRE_NMS_TOP_N,
        rpn_post_nms_top_n_train=cfg.TRAIN.RPN_POST_NMS_TOP_N,
        rpn_pre_nms_top_n_test=cfg.TEST.RPN_PRE_NMS_TOP_N,
        rpn_post_nms_top_n_test=cfg.TEST.RPN_POST_NMS_TOP_N,
        rpn_nms_thresh=cfg.TRAIN.RPN_NMS_THRESH, box_score_thresh=cfg.TEST.SCORE_THRESH,
        box_nms_thresh=cfg.TEST.NMS, box_detections_per_img=cfg.TEST.MAX_PER_IMAGE)
    model.transform = Blobs(1, 1, [0.0] * 3, [1.0] * 3, size_divisible=32)
    return model


def _train_sample(entry, cfg, rng):
    """-> (blob [3, h, w], target) for one roidb entry at the training scale, flipped at p 0.5
    (tv boxes are continuous: our 0-based inclusive x2 + 1)."""
    import numpy as np
    import torch

    from frcnn.roi_data.image_blob import load_roidb_image
    from frcnn.roi_data.roidb import flipped_entry
    from frcnn.utils.blob import prep_im_for_blob

    if rng.random() < 0.5:
        entry = flipped_entry(entry)
    im = load_roidb_image(entry)
    real = np.asarray(entry["gt_classes"]) > 0
    boxes = np.asarray(entry["boxes"], np.float32).reshape(-1, 4)[real]
    im_r, scale = prep_im_for_blob(im, cfg.PIXEL_MEANS, cfg.TRAIN.SCALES[0], cfg.TRAIN.MAX_SIZE)
    blob = torch.from_numpy(np.ascontiguousarray(im_r.transpose(2, 0, 1))).float()
    b = torch.from_numpy(boxes * scale)
    b[:, 2:] += scale  # inclusive end pixel -> continuous end
    target = {"boxes": b, "labels": torch.as_tensor(np.asarray(entry["gt_classes"])[real], dtype=torch.int64)}
    return blob, target


def _lr_factor(it, iters, warmup):
    f = 1.0
    if it < warmup:
        a = it / warmup
        f = 0.001 * (1 - a) + a
    return f * (0.1 ** sum(it >= round(iters * s / 26) for s in (16, 22)))


# the iteration count is estimated after 20 iterations and refitted every REFIT_EVERY until
# REFIT_UNTIL of the run (before the first lr step at 16/26): the first iterations' speed is not
# the run's (the RPN's proposals change as it learns); a count from them alone left 6-19 % of
# the budget unused, or would have overrun it by half
REFIT_EVERY = 50
REFIT_UNTIL = 0.5


def refit_iterations(it, elapsed, per_iter, seconds):
    """The run's length after `it` iterations in `elapsed` s, `per_iter` s each lately, for a
    budget of `seconds`; never so short that `it` is past REFIT_UNTIL of it (no lr step is
    skipped)."""
    left = max(0.0, seconds - elapsed) / max(per_iter, 1e-9)
    return max(21, it + int(left), math.ceil(it / REFIT_UNTIL))


def train_torchvision(model, roidb, cfg, seconds, log_every=50):
    """SGD for `seconds` of wall clock (the iteration count refitted until half-way). -> info."""
    import numpy as np
    import torch

    rng = np.random.default_rng(cfg.RNG_SEED)
    params = [p for p in model.parameters() if p.requires_grad]
    lr = float(cfg.SOLVER.BASE_LR)
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    warmup = min(1000, len(roidb) - 1)
    model.train()
    t0, iters, it, order = time.perf_counter(), None, 0, []
    t_fit, it_fit = t0, 0
    while iters is None or it < iters:
        if not order:
            order = list(rng.permutation(len(roidb)))
        blob, target = _train_sample(roidb[order.pop()], cfg, rng)
        for g in opt.param_groups:
            g["lr"] = lr * _lr_factor(it, iters or 10 ** 9, warmup)
        losses = model([blob], [target])
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        it += 1
        if it == 20 or (it % REFIT_EVERY == 0 and it < REFIT_UNTIL * iters):
            now = time.perf_counter()  # s/iter since the last fit (at 50: 30 iterations, not 50)
            per_iter = (now - t_fit) / (it - it_fit)
            iters, t_fit, it_fit = refit_iterations(it, now - t0, per_iter, seconds), now, it
            if it == 20:
                print(f"torchvision: {iters} iterations fit in {seconds:.0f} s", flush=True)
        if it % log_every == 0:
            print(f"[torchvision] iter {it}/{iters} loss {loss.item():.4f} lr "
                  f"{opt.param_groups[0]['lr']:.2g} {time.perf_counter() - t0:.0f} s", flush=True)
    return {"iters": it, "train_s": time.perf_counter() - t0}


def test_torchvision(model, imdb, cfg, out_dir):
    """Detections on every test image -> (devkit mAP, strict-IoU table), our evaluation code."""
    import cv2
    import numpy as np
    import torch

    from frcnn.datasets.voc_eval import strict_iou_report
    from frcnn.fast_rcnn.test import get_test_blob

    model.eval()
    K, N = imdb.num_classes, imdb.num_images
    all_boxes = [[np.zeros((0, 5), np.float32) for _ in range(N)] for _ in range(K)]
    with torch.no_grad():
        for i in range(N):
            im = cv2.imread(imdb.image_path_at(i))
            blob, _, scale = get_test_blob(im, cfg)
            det = model([blob[0]])[0]
            boxes = det["boxes"].numpy() / scale
            boxes[:, 2:] -= 1.0  # continuous end -> inclusive end pixel
            d = np.hstack([boxes, det["scores"].numpy()[:, None]]).astype(np.float32)
            lab = det["labels"].numpy()
            for j in range(1, K):
                all_boxes[j][i] = d[lab == j]
    os.makedirs(out_dir, exist_ok=True)
    mAP = float(imdb.evaluate_detections(all_boxes, out_dir))
    table = strict_iou_report(imdb, out_dir, all_boxes=all_boxes, voc_map=mAP)
    return mAP, table["mean"]


def torchvision_side(args):
    import torch

    from frcnn.config import cfg_from_file, cfg_from_list, get_default_cfg
    from frcnn.datasets.factory import get_imdb
    from frcnn.roi_data.roidb import filter_roidb, get_training_roidb

    torch.set_num_threads(args.threads)
    cfg = cfg_from_file(args.cfg, get_default_cfg())
    if args.set_cfgs:
        cfg_from_list(args.set_cfgs, cfg)
    cfg.RNG_SEED = args.seed
    train = get_imdb(args.train_imdb, cfg)
    cfg.TRAIN.USE_FLIPPED = False  # flips at p 0.5 per step instead, as torchvision's recipe
    # our training set: difficult objects dropped, background images kept as ours keeps them
    roidb = [e for e in filter_roidb(get_training_roidb(train, cfg), cfg)
             if len(e["boxes"]) or e.get("background_image")]
    model = _tv_model(cfg, train.num_classes)
    info = train_torchvision(model, roidb, cfg, args.seconds)
    test = get_imdb(args.test_imdb, cfg)
    mAP, mean = test_torchvision(model, test, cfg, os.path.join(args.out, f"torchvision_seed{args.seed}"))
    info.update(map=mAP, **mean)
    print("RESULT " + json.dumps(info), flush=True)


# ---------------------------------------------------------------- the table

def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.torchvision:
        return torchvision_side(args)
    if not args.tv_python:
        raise SystemExit("--tv-python PATH: the python of a venv with torchvision (docs/PERFORMANCE.md)")
    if args.ours_log:
        with open(args.ours_log) as f:
            text = f.read()
    else:
        if not args.dataset:
            raise SystemExit("give DATASET (what alt_opt.sh takes) or --ours-log")
        text = run_ours(args)
    ours = read_ours(text)
    ours_mean = _metrics_of(ours)
    cmd = [args.tv_python, os.path.abspath(__file__), "--torchvision", "--seconds", str(ours["train_s"]),
           "--cfg", ours["cfg"], "--train-imdb", ours["train_imdb"], "--test-imdb", ours["test_imdb"],
           "--seed", str(args.seed), "--threads", str(args.threads), "--out", args.out]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    print("torchvision:", " ".join(shlex.quote(c) for c in cmd), flush=True)
    log = os.path.join(args.out, f"torchvision_seed{args.seed}.log")
    with open(log, "w") as f:  # written as it goes: tail it to follow the training
        p = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    with open(log) as f:
        res = [json.loads(line[7:]) for line in f if line.startswith("RESULT ")]
    if p.returncode or not res:
        raise SystemExit(f"the torchvision side failed ({p.returncode}); its output: {log}")
    tv = res[-1]
    print("\n| model | training s | mAP (VOC07) | AP@0.5 area | AP@0.75 | AP@[.5:.95] |\n|---|---:|---:|---:|---:|---:|")
    print(f"| ours (alt-opt) | {ours['train_s']:.0f} | {ours['map']:.4f} | {ours_mean.get('AP50', float('nan')):.4f} | "
          f"{ours_mean.get('AP75', float('nan')):.4f} | {ours_mean.get('AP50:95', float('nan')):.4f} |")
    print(f"| torchvision FasterRCNN ({tv['iters']} iterations) | {tv['train_s']:.0f} | {tv['map']:.4f} | "
          f"{tv['AP50']:.4f} | {tv['AP75']:.4f} | {tv['AP50:95']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
