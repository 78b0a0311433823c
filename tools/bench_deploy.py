#!/usr/bin/env python
"""ms/image of the whole detector (image in, detections out) by runtime, interleaved in one run:
eager float32, eager with the default SOLVER.AMP, ONNX Runtime float32, OpenVINO float32, and
the int8 file (tools/export.py --int8) on both, printed as ratios against eager float32.

  python tools/bench_deploy.py [--nets ELITE0 VGG16] [--rounds 5] [--threads 1] [--work DIR]

ELITE0 runs at the cards' auto-sized test scale (experiments/cfgs/cards_alt_opt.yml: 320, max
576) on 480 x 640 images, 7 classes; VGG16 at 600 x 1000 (TEST.SCALES 600), 21 classes. Random
weights (timing only; --model-ELITE0 PTH times a trained file): the RPN still keeps
TEST.RPN_POST_NMS_TOP_N proposals. int8 is calibrated on --calib images (random ones by default).
Each round times every runtime once on the same image, so load from other processes hits them
alike; the table gives medians.
"""
import argparse
import os
import statistics
import sys
import time

import _init_paths  # noqa: F401
from frcnn.cli import run_main
from frcnn.precision import amp_dtype, autocast_context, cpu_has_bf16_matmul

NETS = {"ELITE0": dict(classes=7, cfg="experiments/cfgs/cards_alt_opt.yml", hw=(480, 640)),
        "VGG16": dict(classes=21, cfg=None, hw=(600, 1000))}
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_line():
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return "cpu: unknown"
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines()
                  if ln.startswith("model name")), "?")
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines()
                      if ln.startswith("flags")), []))
    return f"cpu: {model}, {os.cpu_count()} cores; " + " ".join(
        f"{f}{'+' if f in flags else '-'}" for f in FLAGS)


def make_model_file(net, work, model=None):
    """A .pth the Detector loads: the given trained file, or random weights."""
    import torch

    from frcnn.config import cfg_from_file, get_default_cfg
    from frcnn.models import build_model

    spec = NETS[net]
    if model:
        return model
    cfg = get_default_cfg()
    if spec["cfg"]:
        cfg = cfg_from_file(os.path.join(_init_paths.ROOT, spec["cfg"]), cfg)
    torch.manual_seed(0)
    # ELITE0 with its ImageNet convs (pip package, no download): a random trunk gives all-equal
    # features and a degenerate RPN; VGG16 random (timing does not depend on the weights)
    m = build_model(net, spec["classes"], cfg, parts=("rpn", "head"), pretrained=net == "ELITE0")
    path = os.path.join(work, f"{net.lower()}_faster_rcnn_final.pth")
    classes = ["__background__"] + [f"c{i}" for i in range(1, spec["classes"])]
    torch.save({"model": m.state_dict(), "net": net, "classes": classes}, path)
    return path


def random_images(hw, n, seed=0):
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    return [cv2.GaussianBlur(rng.integers(0, 255, hw + (3,), np.uint8), (9, 9), 3)
            for _ in range(n)]


def runners(net, work, threads, calib, model=None):
    """name -> callable(image) for every runtime of one net (exports the files first)."""
    import torch

    from frcnn.api import Detector
    from frcnn.deploy import OnnxDetector
    from frcnn.export import export_onnx, quantize_int8

    pth = make_model_file(net, work, model)
    cfg = NETS[net]["cfg"]
    det = Detector.from_file(pth, cfg=os.path.join(_init_paths.ROOT, cfg) if cfg else None)
    onnx_path = os.path.join(work, f"{net.lower()}.onnx")
    t = time.perf_counter()
    export_onnx(det, onnx_path)
    int8_path = quantize_int8(onnx_path, os.path.join(work, f"{net.lower()}-int8.onnx"), calib)
    print(f"{net}: exported and quantized in {time.perf_counter() - t:.0f} s")
    amp = amp_dtype(det.cfg, "cpu", net)

    def eager_amp(im):
        with autocast_context("cpu", amp):
            return det(im)

    torch.set_num_threads(threads)
    out = {"eager fp32": det, f"eager SOLVER.AMP auto ({'bf16' if amp else 'fp32'})": eager_amp}
    for name, path in (("fp32", onnx_path), ("int8", int8_path)):
        for backend in ("onnxruntime", "openvino"):
            out[f"{backend} {name}"] = OnnxDetector(path, backend=backend, num_threads=threads)
    return out


def bench(run, images, rounds, warmup=1):
    """Interleaved: each round runs every runtime on the same image. -> name -> [seconds]."""
    times = {name: [] for name in run}
    for r in range(warmup + rounds):
        im = images[r % len(images)]
        for name, fn in run.items():
            t = time.perf_counter()
            fn(im)
            if r >= warmup:
                times[name].append(time.perf_counter() - t)
    return times


def main(argv=None):
    p = argparse.ArgumentParser(description="ms/image of eager vs ONNX Runtime vs OpenVINO")
    p.add_argument("--nets", nargs="+", default=["ELITE0", "VGG16"], choices=sorted(NETS))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of every runtime")
    p.add_argument("--calib", type=int, default=10, help="random calibration images for int8")
    p.add_argument("--calib-imdb", default=None, help="calibrate int8 on 100 images of this set")
    p.add_argument("--model-ELITE0", dest="elite0_model", default=None, help="trained ELITE0 .pth")
    p.add_argument("--eval", default=None, help="also the mAP of every runtime on this image set "
                   "(e.g. voc_folder:PATH:test)")
    p.add_argument("--work", default="output/bench_deploy", help="folder for the exported files")
    args = p.parse_args(argv)
    print(cpu_line() + f"; bf16 matrix units: {cpu_has_bf16_matmul()}; {args.threads} thread(s)")
    for net in args.nets:
        work = os.path.join(args.work, net.lower())
        os.makedirs(work, exist_ok=True)
        hw = NETS[net]["hw"]
        calib = (_imdb_calibration(args.calib_imdb) if args.calib_imdb
                 else _random_calibration(work, hw, args.calib))
        run = runners(net, work, args.threads, calib, args.elite0_model if net == "ELITE0" else None)
        times = bench(run, random_images(hw, 3), args.rounds)
        base = statistics.median(times["eager fp32"])
        print(f"\n{net} at {hw[0]}x{hw[1]}: median ms/image over {args.rounds} interleaved rounds")
        for name, ts in times.items():
            m = statistics.median(ts)
            print(f"  {name:28s} {1000 * m:8.1f} ms   x{base / m:5.2f} vs eager fp32")
        if args.eval:
            print_maps(run, args.eval, work)
    return 0


def print_maps(run, spec, work):
    import contextlib
    import io

    from frcnn.config import get_default_cfg
    from frcnn.datasets.factory import get_imdb
    from frcnn.deploy import evaluate_imdb

    imdb = get_imdb(spec, get_default_cfg())
    maps = {}
    for name, det in run.items():
        with contextlib.redirect_stdout(io.StringIO()):  # the per-class AP lines
            maps[name] = evaluate_imdb(det, imdb, os.path.join(work, "eval", name.replace(" ", "_")))
    base = maps["eager fp32"]
    print(f"mAP on {imdb.name} ({imdb.num_images} images):")
    for name, m in maps.items():
        print(f"  {name:28s} {m:.4f}   {m - base:+.4f} vs eager fp32")


def _imdb_calibration(spec):
    from frcnn.config import get_default_cfg
    from frcnn.datasets.factory import get_imdb
    from frcnn.export import calibration_images

    return calibration_images(get_imdb(spec, get_default_cfg()), 100)


def _random_calibration(work, hw, n):
    import cv2

    folder = os.path.join(work, "calib")
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, im in enumerate(random_images(hw, n, seed=1)):
        paths.append(os.path.join(folder, f"{i}.jpg"))
        cv2.imwrite(paths[-1], im)
    return paths


if __name__ == "__main__":
    sys.exit(run_main(main))
