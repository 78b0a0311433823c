#!/usr/bin/env python
"""Do background images (no objects) lower the false positives? The same TINY end2end run, same
seed, with TRAIN.KEEP_EMPTY_IMAGES True and False, on a shapes set whose train and test sides
also hold background images with distractors (crosses, rings, stars, lines: shape-like, in no
class). Prints, for each: the mAP on the test side (its background images included, so their
false positives count) and the detections per background test image at score >= 0.05 (all
that test_net keeps), 0.3 and 0.5.

  python experiments/background_images.py [--iters 500] [--seed 3] [--out /tmp/bg_images]
"""
import argparse
import glob
import os
import subprocess
import sys

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "lib"))
CFG = os.path.join(ROOT, "experiments", "cfgs", "shapes_end2end.yml")


def distractor_image(seed, i):
    """A shapes-like background with 2-5 shapes of no class: crosses, rings, stars, polylines."""
    from frcnn.datasets.shapes import _background

    rng = np.random.default_rng([seed, 7, i])
    w, h = (int(v) for v in rng.integers(240, 401, size=2))
    im = _background(rng, w, h)
    for _ in range(int(rng.integers(2, 6))):
        c = tuple(float(v) for v in rng.uniform(0, 255, size=3))
        cx, cy = int(rng.integers(40, w - 40)), int(rng.integers(40, h - 40))
        r = int(rng.integers(16, 40))
        kind = int(rng.integers(0, 4))
        if kind == 0:
            t = max(3, r // 3)
            cv2.rectangle(im, (cx - r, cy - t), (cx + r, cy + t), c, -1)
            cv2.rectangle(im, (cx - t, cy - r), (cx + t, cy + r), c, -1)
        elif kind == 1:
            cv2.circle(im, (cx, cy), r, c, max(3, r // 4))
        elif kind == 2:
            a = np.linspace(0, 2 * np.pi, 11)[:-1]
            rad = np.where(np.arange(10) % 2 == 0, r, r / 2.5)
            pts = np.stack([cx + rad * np.cos(a), cy + rad * np.sin(a)], 1).astype(np.int32)
            cv2.fillPoly(im, [pts], c)
        else:
            pts = rng.integers([0, 0], [w, h], size=(4, 2)).astype(np.int32)
            cv2.polylines(im, [pts], False, c, int(rng.integers(3, 8)))
    return np.clip(im, 0, 255).astype(np.uint8)


def build_set(out, cfg, n_bg_train, n_bg_test, seed):
    """The shapes VOC set of cfg + background images -> (folder, background test ids)."""
    from frcnn.datasets import get_imdb
    from frcnn.datasets.convert import convert
    from frcnn.datasets.formats import read_folder
    from frcnn.datasets.shapes import shapes_dir

    get_imdb("shapes_train", cfg).roidb
    folder = os.path.join(out, "shapes_bg")
    if not os.path.isdir(folder):
        convert(read_folder(shapes_dir(cfg), "voc"), folder, "voc")
        sets = {"train": [], "test": []}
        for k in range(n_bg_train + n_bg_test):
            split = "train" if k < n_bg_train else "test"
            index = f"bg_{split}_{k:04d}"
            im = distractor_image(seed, k)
            cv2.imwrite(os.path.join(folder, "JPEGImages", index + ".jpg"), im)
            with open(os.path.join(folder, "Annotations", index + ".xml"), "w") as f:
                f.write(f"<annotation><size><width>{im.shape[1]}</width><height>{im.shape[0]}"
                        "</height><depth>3</depth></size></annotation>\n")
            sets[split].append(index)
        for name, ids in (("train", sets["train"]), ("trainval", sets["train"]),
                          ("test", sets["test"])):
            with open(os.path.join(folder, "ImageSets", "Main", name + ".txt"), "a") as f:
                f.write("".join(i + "\n" for i in ids))
    return folder


def run(tool, *args):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "lib"), OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", tool), *args], env=env,
                       capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"{tool} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p.stdout


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--iters", type=int, default=500)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--bg-train", type=int, default=60)
    p.add_argument("--bg-test", type=int, default=40)
    p.add_argument("--out", default="/tmp/bg_images")
    args = p.parse_args()
    from frcnn.config import cfg_from_file, get_default_cfg

    cfg = cfg_from_file(CFG, get_default_cfg())
    cfg.DATA_DIR = os.path.join(args.out, "data")
    cfg.SHAPES.NUM_TRAIN, cfg.SHAPES.NUM_TEST = 120, 40
    folder = build_set(args.out, cfg, args.bg_train, args.bg_test, args.seed)
    common = ["--cfg", CFG, "--num-threads", "1"]
    shapes = ["SHAPES.NUM_TRAIN", "120", "SHAPES.NUM_TEST", "40", "DATA_DIR", cfg.DATA_DIR]
    for keep in (False, True):
        exp = f"bg_keep_{keep}"
        sets = shapes + ["EXP_DIR", exp, "OUTPUT_DIR", os.path.join(args.out, "output")]
        run("train_net.py", "--net", "TINY", "--imdb", f"{folder}:trainval", "--iters",
            str(args.iters), "--seed", str(args.seed), "--final-file",
            os.path.join(args.out, exp + ".final"), *common, "--set",
            "TRAIN.KEEP_EMPTY_IMAGES", str(keep), *sets)
        with open(os.path.join(args.out, exp + ".final")) as f:
            model = f.read().strip()
        out = run("test_net.py", "--net", "TINY", "--model", model, "--imdb", f"{folder}:test",
                  *common, "--set", *sets)
        m_ap = [ln for ln in out.splitlines() if ln.startswith("Mean AP = ")][-1]
        det_file = glob.glob(os.path.join(args.out, "output", exp, "**", "detections.pkl"),
                             recursive=True)[0]
        report(keep, m_ap, det_file, folder)


def report(keep, m_ap, det_file, folder, thresholds=(0.05, 0.3, 0.5)):
    """Print the mAP line and the detections per background test image at each threshold."""
    from frcnn.safe_io import load_pickle

    all_boxes = load_pickle(det_file, "detections")
    with open(os.path.join(folder, "ImageSets", "Main", "test.txt")) as f:
        ids = [ln.strip() for ln in f if ln.strip()]
    bg = [k for k, i in enumerate(ids) if i.startswith("bg_")]
    scores = np.concatenate([np.asarray(all_boxes[c][k]).reshape(-1, 5)[:, 4]
                             for c in range(1, len(all_boxes)) for k in bg])
    fps = ", ".join(f"{(scores >= t).sum() / len(bg):.2f} at score >= {t} ({(scores >= t).sum()})"
                    for t in thresholds)
    print(f"KEEP_EMPTY_IMAGES {keep}: {m_ap}; detections per background test image "
          f"({len(bg)}): {fps}", flush=True)


if __name__ == "__main__":
    main()
