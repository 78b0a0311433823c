"""Times the compiled ops against simple references (a benchmark, not a test).

    python tools/bench_ops.py [--device cpu|cuda] [--repeat 20]

Rows: NMS on 6000 RPN-like boxes (decoded anchors of a 38x50 map, thr 0.7) and 300 boxes @0.3
vs a vectorised numpy greedy NMS (py-faster-rcnn's py_cpu_nms algorithm); bbox_overlaps
20000x20 vs vectorised numpy; roi_pool forward+backward, 128 RoIs on a 512x38x50 map, vs a torch
reference (one max per bin, autograd); roi_pool fwd and fwd+bwd on a post-ReLU map, float32 and
bf16, 1 and 2 threads, vs torchvision.ops.roi_pool when torchvision is importable (our rows only
otherwise); roi_align 7x7 (sampling ratio 2 and adaptive, aligned) at test time (300 RoIs,
forward) and in training (128 RoIs, forward+backward) vs torchvision's CPU roi_align when
torchvision is importable, else vs a vectorised torch gather version (ratio 2 only).
With --device cuda: our CUDA kernels vs torchvision's.
Prints a markdown table with the time of each and the ratio (reference / ours).
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))

from frcnn.ops import nms, roi_align, roi_pool  # noqa: E402
from frcnn.utils.cython_bbox import bbox_overlaps  # noqa: E402

ANCHORS = [[-84, -40, 99, 55], [-176, -88, 191, 103], [-360, -184, 375, 199],
           [-56, -56, 71, 71], [-120, -120, 135, 135], [-248, -248, 263, 263],
           [-36, -80, 51, 95], [-80, -168, 95, 183], [-168, -344, 183, 359]]


def rpn_boxes(n, seed=0):
    """[n, 4] float32 boxes and [n] scores: anchors of a 38x50 map (stride 16) decoded with
    small random deltas, clipped to 800x600, the n best by a random score."""
    rng = np.random.default_rng(seed)
    ys, xs = np.meshgrid(np.arange(38) * 16.0, np.arange(50) * 16.0, indexing="ij")
    shifts = np.stack([xs, ys, xs, ys], -1).reshape(-1, 1, 4)
    anchors = (shifts + np.array(ANCHORS, dtype=np.float64)).reshape(-1, 4)
    wh = anchors[:, 2:] - anchors[:, :2] + 1
    ctr = anchors[:, :2] + 0.5 * wh
    d = rng.normal(0, 0.1, size=anchors.shape)
    ctr, wh = ctr + d[:, :2] * wh, wh * np.exp(d[:, 2:])
    boxes = np.concatenate([ctr - 0.5 * wh, ctr + 0.5 * wh], 1)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, 799)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, 599)
    scores = rng.random(len(boxes))
    top = np.argsort(-scores)[:n]
    return boxes[top].astype(np.float32), scores[top].astype(np.float32)


def numpy_nms(dets, thresh):
    """Vectorised greedy NMS as py-faster-rcnn's py_cpu_nms (dets [N, 5] with scores)."""
    x1, y1, x2, y2, scores = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3], dets[:, 4]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        w = np.maximum(0.0, xx2 - xx1 + 1)
        h = np.maximum(0.0, yy2 - yy1 + 1)
        inter = w * h
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= thresh)[0] + 1]
    return keep


def numpy_overlaps(boxes, query):
    """Vectorised IoU matrix with the +1 convention."""
    ba = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    qa = (query[:, 2] - query[:, 0] + 1) * (query[:, 3] - query[:, 1] + 1)
    iw = (np.minimum(boxes[:, None, 2], query[None, :, 2])
          - np.maximum(boxes[:, None, 0], query[None, :, 0]) + 1).clip(min=0)
    ih = (np.minimum(boxes[:, None, 3], query[None, :, 3])
          - np.maximum(boxes[:, None, 1], query[None, :, 1]) + 1).clip(min=0)
    inter = iw * ih
    return inter / (ba[:, None] + qa[None, :] - inter)


def torch_roi_pool(x, rois, size, scale):
    """Caffe RoI max pooling, one torch max per bin (autograd gives the backward)."""
    ph_n, pw_n = size
    _, _, H, W = x.shape
    out = []
    for r in rois.tolist():
        b = int(r[0])
        x1, y1, x2, y2 = (int(np.sign(v) * np.floor(abs(v) + 0.5)) for v in
                          (r[1] * scale, r[2] * scale, r[3] * scale, r[4] * scale))
        bh, bw = max(y2 - y1 + 1, 1) / ph_n, max(x2 - x1 + 1, 1) / pw_n
        bins = []
        for ph in range(ph_n):
            hs = min(max(int(np.floor(ph * bh)) + y1, 0), H)
            he = min(max(int(np.ceil((ph + 1) * bh)) + y1, 0), H)
            for pw in range(pw_n):
                ws = min(max(int(np.floor(pw * bw)) + x1, 0), W)
                we = min(max(int(np.ceil((pw + 1) * bw)) + x1, 0), W)
                if he <= hs or we <= ws:
                    bins.append(x.new_zeros(x.shape[1]))
                else:
                    bins.append(x[b, :, hs:he, ws:we].amax(dim=(1, 2)))
        out.append(torch.stack(bins, 1).reshape(-1, ph_n, pw_n))
    return torch.stack(out)


def torch_roi_align(x, rois, size, scale, sampling_ratio, aligned):
    """RoIAlign with a fixed sampling ratio, vectorised over RoIs with torch gathers (autograd
    gives the backward): the baseline when torchvision is not installed."""
    ph_n, pw_n = size
    g = sampling_ratio
    _, C, H, W = x.shape
    off = 0.5 if aligned else 0.0
    x1, y1 = rois[:, 1] * scale - off, rois[:, 2] * scale - off
    rw, rh = rois[:, 3] * scale - off - x1, rois[:, 4] * scale - off - y1
    if not aligned:
        rw, rh = rw.clamp(min=1), rh.clamp(min=1)
    fy = (torch.arange(ph_n * g, dtype=x.dtype) + 0.5) / g  # sample positions in bin units
    fx = (torch.arange(pw_n * g, dtype=x.dtype) + 0.5) / g
    ys = y1[:, None] + fy[None] * (rh / ph_n)[:, None]  # [R, ph*g]
    xs = x1[:, None] + fx[None] * (rw / pw_n)[:, None]  # [R, pw*g]
    ys, xs = ys[:, :, None].expand(-1, -1, xs.shape[1]), xs[:, None, :].expand(-1, ys.shape[1], -1)
    valid = (ys >= -1) & (ys <= H) & (xs >= -1) & (xs <= W)
    ys, xs = ys.clamp(min=0), xs.clamp(min=0)
    y0, x0 = ys.floor().long().clamp(max=H - 1), xs.floor().long().clamp(max=W - 1)
    ys = torch.where(y0 >= H - 1, y0.to(x.dtype), ys)
    xs = torch.where(x0 >= W - 1, x0.to(x.dtype), xs)
    y1i, x1i = (y0 + 1).clamp(max=H - 1), (x0 + 1).clamp(max=W - 1)
    ly, lx = ys - y0, xs - x0
    planes = x[rois[:, 0].long()].flatten(2)  # [R, C, H*W]

    def at(yi, xi):
        idx = (yi * W + xi).flatten(1)[:, None].expand(-1, C, -1)
        return planes.gather(2, idx).reshape(len(rois), C, *yi.shape[1:])

    v = ((1 - ly) * (1 - lx))[:, None] * at(y0, x0) + ((1 - ly) * lx)[:, None] * at(y0, x1i) \
        + (ly * (1 - lx))[:, None] * at(y1i, x0) + (ly * lx)[:, None] * at(y1i, x1i)
    v = v * valid[:, None]
    return v.reshape(len(rois), C, ph_n, g, pw_n, g).mean(dim=(3, 5))


def align_rows(repeat):
    """roi_align at test time (300 RoIs, forward) and in training (128 RoIs, fwd+bwd)."""
    try:
        from torchvision.ops import roi_align as tv_align
        ref_name = f"torchvision {__import__('torchvision').__version__} roi_align (CPU)"
    except ImportError:
        tv_align, ref_name = None, "torch gather version"
    rows = []
    ref_repeat = repeat if tv_align is not None else max(2, repeat // 10)  # the gather is slow
    x, rois = roi_inputs("cpu")
    _, rois300 = roi_inputs("cpu", seed=1, n=300)
    for sr in (2, 0):
        ref_fn = tv_align if tv_align is not None else (torch_roi_align if sr > 0 else None)
        ours = roi_align(x, rois300, (7, 7), 1 / 16, sr, True)
        if ref_fn is not None:
            torch.testing.assert_close(ours, ref_fn(x, rois300, (7, 7), 1 / 16, sr, True),
                                       rtol=1e-4, atol=1e-4)
        rows.append((f"roi_align fwd 300 RoIs, 512x38x50 -> 7x7, ratio {sr or 'adaptive'}",
                     ref_name if ref_fn else "(none)",
                     timeit(lambda: roi_align(x, rois300, (7, 7), 1 / 16, sr, True), repeat),
                     timeit(lambda: ref_fn(x, rois300, (7, 7), 1 / 16, sr, True), ref_repeat)
                     if ref_fn else float("nan")))
    xr = x.clone().requires_grad_(True)
    g = torch.randn(128, 512, 7, 7)
    ref_fn = tv_align if tv_align is not None else torch_roi_align

    def ours():
        xr.grad = None
        roi_align(xr, rois, (7, 7), 1 / 16, 2, True).backward(g)

    def ref():
        xr.grad = None
        ref_fn(xr, rois, (7, 7), 1 / 16, 2, True).backward(g)

    rows.append(("roi_align fwd+bwd 128 RoIs, 512x38x50 -> 7x7, ratio 2", ref_name,
                 timeit(ours, repeat), timeit(ref, ref_repeat)))
    return rows


def timeit(fn, repeat, sync=None):
    """Median seconds of repeat calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        if sync:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def roi_inputs(device, seed=0, n=128):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 512, 38, 50, generator=g)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([700.0, 500.0])
    wh = torch.rand(n, 2, generator=g) * 300 + 16
    rois = torch.cat([torch.zeros(n, 1), xy, (xy + wh).clamp(max=torch.tensor([799.0, 599.0]))], 1)
    return x.to(device), rois.to(device)


def cpu_rows(repeat):
    rows = []
    for n, thr in ((6000, 0.7), (300, 0.3)):
        boxes, scores = rpn_boxes(n)
        dets = np.concatenate([boxes, scores[:, None]], 1)
        tb, ts = torch.from_numpy(boxes), torch.from_numpy(scores)
        assert sorted(nms(tb, ts, thr).tolist()) == sorted(int(i) for i in numpy_nms(dets, thr))
        ours = timeit(lambda: nms(tb, ts, thr), repeat)
        ref = timeit(lambda: numpy_nms(dets, thr), max(3, repeat // 4))
        rows.append((f"nms {n} RPN-like boxes @{thr} (kept {len(nms(tb, ts, thr))})",
                     "numpy py_cpu_nms", ours, ref))
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 800, size=(20000, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(16, 300, size=(20000, 2))], 1)
    xy = rng.uniform(0, 800, size=(20, 2))
    query = np.concatenate([xy, xy + rng.uniform(16, 300, size=(20, 2))], 1)
    np.testing.assert_allclose(bbox_overlaps(boxes, query), numpy_overlaps(boxes, query))
    rows.append(("bbox_overlaps 20000x20 (float64)", "numpy vectorised",
                 timeit(lambda: bbox_overlaps(boxes, query), repeat),
                 timeit(lambda: numpy_overlaps(boxes, query), repeat)))
    x, rois = roi_inputs("cpu")
    xr = x.clone().requires_grad_(True)
    g = torch.randn(128, 512, 7, 7)

    def ours():
        xr.grad = None
        roi_pool(xr, rois, (7, 7), 1 / 16).backward(g)

    def ref():
        xr.grad = None
        torch_roi_pool(xr, rois, (7, 7), 1 / 16).backward(g)

    torch.testing.assert_close(roi_pool(x, rois, (7, 7), 1 / 16), torch_roi_pool(x, rois, (7, 7), 1 / 16))
    rows.append(("roi_pool fwd+bwd 128 RoIs, 512x38x50 -> 7x7", "torch per-bin max",
                 timeit(ours, repeat), timeit(ref, max(3, repeat // 4))))
    return rows


def interleaved(fns, repeat):
    """Median seconds of each fn, the fns called in turn (after one warm-up call each), so a
    change in the machine's load affects all of them alike."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, t in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def roi_pool_tv_rows(repeat, threads=(1, 2)):
    """roi_pool vs torchvision.ops.roi_pool on the CPU: 128 RoIs on a post-ReLU 1x512x38x50 map
    -> 7x7, forward and forward+backward, float32 and bfloat16, 1 and 2 threads. torchvision's
    CPU roi_pool has no bf16 kernel (nor a CPU autocast rule), so its bf16 row is what a bf16
    model has to do with it: upcast the map, pool in float32, cast back (timed). Without
    torchvision the rows show ours only."""
    try:
        import torchvision
        tv_pool = torchvision.ops.roi_pool
    except ImportError:
        print("torchvision is not installed: roi_pool rows without the torchvision baseline")
        tv_pool = None
    x32, rois = roi_inputs("cpu")
    x32 = x32.relu()  # a conv5_3 map is post-ReLU: about half zeros, so many ties
    g32 = torch.randn(128, 512, 7, 7, generator=torch.Generator().manual_seed(1))
    rows = []
    saved = torch.get_num_threads()
    try:
        for nt in threads:
            torch.set_num_threads(nt)
            for dtype in (torch.float32, torch.bfloat16):
                x, g = x32.to(dtype), g32.to(dtype)
                xr = x.clone().requires_grad_(True)
                if tv_pool is not None:
                    if dtype == torch.float32:
                        assert torch.equal(roi_pool(x, rois, (7, 7), 1 / 16), tv_pool(x, rois, (7, 7), 1 / 16))

                    def tv_fwd():
                        return tv_pool(x.float(), rois, (7, 7), 1 / 16).to(dtype)

                    def tv_fb():
                        xr.grad = None
                        tv_pool(xr.float(), rois, (7, 7), 1 / 16).to(dtype).backward(g)

                def ours_fwd():
                    return roi_pool(x, rois, (7, 7), 1 / 16)

                def ours_fb():
                    xr.grad = None
                    roi_pool(xr, rois, (7, 7), 1 / 16).backward(g)

                fns = [ours_fwd, ours_fb] + ([tv_fwd, tv_fb] if tv_pool else [])
                t = interleaved(fns, repeat) + ([] if tv_pool else [float("nan")] * 2)
                name = "float32" if dtype == torch.float32 else "bf16"
                ref = "torchvision.ops.roi_pool" + ("" if dtype == torch.float32 else " (f32 upcast)")
                rows.append((f"roi_pool fwd {name}, {nt} thread{'s' * (nt > 1)}", ref, t[0], t[2]))
                rows.append((f"roi_pool fwd+bwd {name}, {nt} thread{'s' * (nt > 1)}", ref, t[1], t[3]))
    finally:
        torch.set_num_threads(saved)
    return rows


def cuda_rows(repeat):
    try:
        import torchvision
    except ImportError:
        print("torchvision is not installed: CUDA rows without a comparison")
        torchvision = None
    sync = torch.cuda.synchronize
    rows = []
    for n, thr in ((6000, 0.7), (300, 0.3)):
        boxes, scores = rpn_boxes(n)
        tb, ts = torch.from_numpy(boxes).cuda(), torch.from_numpy(scores).cuda()
        ours = timeit(lambda: nms(tb, ts, thr), repeat, sync)
        ref = timeit(lambda: torchvision.ops.nms(tb, ts, thr), repeat, sync) if torchvision else float("nan")
        rows.append((f"CUDA nms {n} boxes @{thr}", "torchvision.ops.nms", ours, ref))
    x, rois = roi_inputs("cuda")
    xr = x.clone().requires_grad_(True)
    g = torch.randn(128, 512, 7, 7, device="cuda")

    def ours():
        xr.grad = None
        roi_pool(xr, rois, (7, 7), 1 / 16).backward(g)

    def ref():
        xr.grad = None
        torchvision.ops.roi_pool(xr, rois, (7, 7), 1 / 16).backward(g)

    rows.append(("CUDA roi_pool fwd+bwd 128 RoIs, 512x38x50", "torchvision.ops.roi_pool",
                 timeit(ours, repeat, sync), timeit(ref, repeat, sync) if torchvision else float("nan")))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--roi-pool-only", action="store_true",
                    help="only the roi_pool rows against torchvision (CPU)")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores"
          + (f", {torch.cuda.get_device_name()}" if args.device == "cuda" else ""))
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run without --device cuda")
    if args.device == "cuda":
        rows = cuda_rows(args.repeat)
    elif args.roi_pool_only:
        rows = roi_pool_tv_rows(args.repeat)
    else:
        rows = cpu_rows(args.repeat) + roi_pool_tv_rows(args.repeat) + align_rows(args.repeat)
    print("| op | reference | ours (ms) | reference (ms) | speed-up |")
    print("|---|---|---:|---:|---:|")
    for name, ref_name, ours, ref in rows:
        if ref != ref:  # NaN: no baseline in this environment
            print(f"| {name} | {ref_name} (not installed) | {ours * 1e3:.3f} | - | - |")
        else:
            print(f"| {name} | {ref_name} | {ours * 1e3:.3f} | {ref * 1e3:.3f} | {ref / ours:.2f}x |")


if __name__ == "__main__":
    main()
