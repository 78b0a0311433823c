"""Times a training step and inference of the detection models (a benchmark, not a test).

    python tools/bench_train.py [--nets TINY ELITE0 ZF VGG16] [--iters 5] [--no-bf16] [--no-tv]

For each net: s/iter of one end-to-end training step (forward with RPN + head losses, backward,
SGD step; one image, random weights, 3 random gt boxes) and ms/image of inference (eval
forward: RPN proposals + head), fp32 and bf16 autocast (`torch.autocast("cpu", bfloat16)`),
plus the peak resident memory above the pre-call level (sampled every 2 ms). Image sizes:
VGG16 and ZF 600x1000; TINY and ELITE0 at their cfg scales (shapes 320x533, cards 320x533).
With torchvision importable, VGG16 is also timed against torchvision's own FasterRCNN built with
the same architecture (VGG16 conv1_1-conv5_3 at stride 16, the same 9 anchors, RoIPool 7x7,
fc6/fc7 4096, the same pre/post-NMS counts, 256 RPN / 128 head samples, a 600x1000 input; its
own transform is told not to resize). The configurations of one net are called in turn
(interleaved) in one process; medians. torchvision cannot sit beside torch 2.13.0: run it in
the venv of docs/PERFORMANCE.md with that venv's build of the ops.

Uses only the model API (frcnn.models.build_model, FasterRCNN.forward); nothing from the
training loop.
"""
import argparse
import os
import statistics
import sys
import threading
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))

from frcnn.config import cfg_from_file, get_default_cfg  # noqa: E402
from frcnn.models import build_model  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFGS = {"TINY": "experiments/cfgs/shapes_alt_opt.yml", "ELITE0": "experiments/cfgs/cards_alt_opt.yml",
        "ZF": None, "VGG16": None}
NUM_CLASSES = 21


def net_cfg(net):
    cfg = get_default_cfg()
    if CFGS[net]:
        cfg = cfg_from_file(os.path.join(ROOT, CFGS[net]), cfg)
    return cfg


def image_size(cfg):
    """(H, W) of a 3:5 image resized by the cfg (short side SCALES[0], long side <= MAX_SIZE)."""
    s, m = cfg.TRAIN.SCALES[0], cfg.TRAIN.MAX_SIZE
    scale = min(s / 600, m / 1000)
    return int(round(600 * scale)), int(round(1000 * scale))


def inputs(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(1, 3, h, w, generator=g) * 50
    im_info = torch.tensor([[h, w, 1.0]])
    xy = torch.rand(3, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
    wh = torch.rand(3, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3]) + 32
    gt = torch.cat([xy, xy + wh, torch.tensor([[3.0], [7.0], [12.0]])], 1)
    return images, im_info, gt


class PeakRSS:
    """Peak resident memory (bytes) above the level at __enter__, sampled every 2 ms."""

    def __init__(self):
        self.peak = 0

    @staticmethod
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss() - self.base)
            time.sleep(0.002)

    def __enter__(self):
        self.base = self.rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.rss() - self.base)


def ours(net, cfg):
    model = build_model(net, NUM_CLASSES, cfg, pretrained=False)
    h, w = image_size(cfg)
    images, im_info, gt = inputs(h, w)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

    def train_step(amp):
        model.train()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = model(images, im_info, [gt])
        sum(out.values()).backward()
        opt.step()

    def infer(amp):
        model.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            model(images, im_info)

    return (h, w), train_step, infer


def torchvision_vgg16(cfg):
    """torchvision FasterRCNN with our VGG16 architecture (None without torchvision)."""
    try:
        import torchvision
        from torchvision.models.detection import FasterRCNN
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
        from torchvision.models.detection.rpn import AnchorGenerator
        from torchvision.ops import MultiScaleRoIAlign
    except ImportError:
        return None

    class RoIPool7(MultiScaleRoIAlign):
        """torchvision.ops.roi_pool on the single stride-16 map, in the box_roi_pool slot
        (FasterRCNN accepts only a MultiScaleRoIAlign there). Its CPU kernel has no bf16 and
        no autocast rule (bf16 raises), so under autocast the map is pooled in float32."""

        def __init__(self):
            super().__init__(["0"], 7, 0)

        def forward(self, features, proposals, image_shapes):
            return torchvision.ops.roi_pool(features["0"].float(), [p.float() for p in proposals],
                                            (7, 7), 1 / 16)

    backbone = torchvision.models.vgg16().features[:-1]  # conv1_1 .. relu5_3, stride 16
    backbone.out_channels = 512
    # py-faster-rcnn's anchors: base 16, scales 8/16/32 -> 128/256/512 px, ratios 0.5/1/2
    anchors = AnchorGenerator(sizes=((128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),))
    h, w = 600, 1000
    model = FasterRCNN(
        backbone, min_size=h, max_size=w, rpn_anchor_generator=anchors, box_roi_pool=RoIPool7(),
        box_head=TwoMLPHead(512 * 7 * 7, 4096), box_predictor=FastRCNNPredictor(4096, NUM_CLASSES),
        rpn_pre_nms_top_n_train=cfg.TRAIN.RPN_PRE_NMS_TOP_N, rpn_post_nms_top_n_train=cfg.TRAIN.RPN_POST_NMS_TOP_N,
        rpn_pre_nms_top_n_test=cfg.TEST.RPN_PRE_NMS_TOP_N, rpn_post_nms_top_n_test=cfg.TEST.RPN_POST_NMS_TOP_N,
        rpn_nms_thresh=cfg.TRAIN.RPN_NMS_THRESH, rpn_batch_size_per_image=cfg.TRAIN.RPN_BATCHSIZE,
        box_batch_size_per_image=cfg.TRAIN.BATCH_SIZE, box_detections_per_img=100)
    images, _, gt = inputs(h, w)
    image = images[0]
    target = {"boxes": gt[:, :4], "labels": gt[:, 4].long()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

    def train_step(amp):
        model.train()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            losses = model([image], [target])
        sum(losses.values()).backward()
        opt.step()

    def infer(amp):
        model.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            model([image])

    return (h, w), train_step, infer


def bench(configs, iters):
    """configs: list of (label, fn). Each fn once as warm-up, then iters rounds in turn.
    Returns {label: (median s, peak MiB or None, error or None)}."""
    res = {}
    live = []
    for label, fn in configs:
        try:
            with PeakRSS() as m:
                fn()
            live.append((label, fn))
            res[label] = [[], m.peak, None]
        except Exception as e:  # e.g. an op without a bf16 kernel under autocast
            res[label] = [[], None, f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"]
    for _ in range(iters):
        for label, fn in live:
            with PeakRSS() as m:
                t0 = time.perf_counter()
                fn()
                res[label][0].append(time.perf_counter() - t0)
            res[label][1] = max(res[label][1], m.peak)
    return {k: (statistics.median(t) if t else float("nan"), p / 2**20 if p is not None else None, e)
            for k, (t, p, e) in res.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", nargs="+", default=["TINY", "ELITE0", "ZF", "VGG16"], choices=list(CFGS))
    ap.add_argument("--iters", type=int, default=5, help="timed rounds (after one warm-up)")
    ap.add_argument("--no-bf16", action="store_true", help="fp32 only")
    ap.add_argument("--no-tv", action="store_true", help="skip torchvision's FasterRCNN")
    ap.add_argument("--no-train", action="store_true", help="inference only")
    args = ap.parse_args()
    torch.manual_seed(0)
    flags = open("/proc/cpuinfo").read()
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
          f"CPU flags: {' '.join(isa)}, load {os.getloadavg()[0]:.1f}")
    amps = [False] if args.no_bf16 else [False, True]
    print("| net | input | impl | precision | train s/iter | peak MiB | infer ms/image | peak MiB |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for net in args.nets:
        cfg = net_cfg(net)
        impls = [("ours", ours(net, cfg))]
        if net == "VGG16" and not args.no_tv:
            tv = torchvision_vgg16(cfg)
            if tv is not None:
                impls.append(("torchvision", tv))
        configs = []
        for name, (_, train_step, infer) in impls:
            for amp in amps:
                if not args.no_train:
                    configs.append(((name, amp, "train"), lambda f=train_step, a=amp: f(a)))
                configs.append(((name, amp, "infer"), lambda f=infer, a=amp: f(a)))
        res = bench(configs, args.iters)
        for name, ((h, w), _, _) in impls:
            for amp in amps:
                tr = res.get((name, amp, "train"))
                inf = res[(name, amp, "infer")]
                cell = lambda r, k: ("-" if r is None else (r[2] if r[2] else f"{r[0] * k:.3f}"))  # noqa: E731
                mem = lambda r: "-" if r is None or r[1] is None else f"{r[1]:.0f}"  # noqa: E731
                print(f"| {net} | {h}x{w} | {name} | {'bf16 autocast' if amp else 'fp32'} | "
                      f"{cell(tr, 1)} | {mem(tr)} | {cell(inf, 1e3)} | {mem(inf)} |", flush=True)
        if len(impls) > 1:
            for amp in amps:
                for kind in ("train", "infer"):
                    a, b = res.get(("ours", amp, kind)), res.get(("torchvision", amp, kind))
                    if a and b and not a[2] and not b[2]:
                        print(f"  {net} {kind} {'bf16' if amp else 'fp32'}: ours {b[0] / a[0]:.2f}x "
                              "torchvision's speed")
    print(f"load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
