"""frcnn.ops.roi_align against the bilinear oracle (frcnn.ops.reference.roi_align_reference)."""
import numpy as np
import pytest
import torch

from frcnn.ops import RoIAlign, roi_align
from frcnn.ops.reference import roi_align_backward_reference, roi_align_reference

CUDA = torch.cuda.is_available()
DEVICES = ["cpu"] + (["cuda"] if CUDA else [])


def random_case(rng, dtype, roi_dtype):
    """Small maps, RoIs partly or wholly outside, tiny / zero-size / reversed RoIs, samples on
    the map's border, adaptive and fixed sampling."""
    B, C = int(rng.integers(1, 3)), int(rng.integers(1, 4))
    H, W = int(rng.integers(1, 10)), int(rng.integers(1, 10))
    R = int(rng.integers(0, 5))
    ph, pw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    scale = float(rng.choice([1.0, 0.5, 0.25, 1 / 16, rng.uniform(0.1, 1.2)]))
    sampling_ratio = int(rng.choice([0, 0, -1, 1, 2, 3]))
    aligned = bool(rng.random() < 0.5)
    x = rng.normal(size=(B, C, H, W))
    span_x, span_y = W / scale, H / scale
    p = rng.uniform(-0.4, 1.4, size=(R, 4)) * [span_x, span_y, span_x, span_y]
    kind = rng.random(R)
    p[kind < 0.15] = np.round(p[kind < 0.15] * 2 * scale) / (2 * scale)  # on half pixels
    tiny = (kind >= 0.15) & (kind < 0.3)
    p[tiny, 2:] = p[tiny, :2] + rng.uniform(0, 0.3, size=(int(tiny.sum()), 2)) / scale
    p[(kind >= 0.3) & (kind < 0.35), 2] = p[(kind >= 0.3) & (kind < 0.35), 0] - 2 / scale
    # Batch index with a fractional part: truncated toward zero.
    bidx = rng.integers(0, B, size=(R, 1)) + rng.choice([0.0, 0.25, 0.9], size=(R, 1))
    rois = np.concatenate([bidx, p], axis=1)
    return (torch.tensor(x, dtype=dtype), torch.tensor(rois, dtype=roi_dtype), (ph, pw), scale,
            sampling_ratio, aligned)


@pytest.mark.parametrize("dtype,roi_dtype,seed", [
    (torch.float32, torch.float32, 1),
    (torch.float64, torch.float64, 2),
    (torch.float64, torch.float32, 3),
    (torch.float32, torch.float64, 4),
    (torch.bfloat16, torch.float32, 5),
    (torch.float16, torch.float32, 6),
])
def test_roi_align_matches_reference_random(dtype, roi_dtype, seed):
    rng = np.random.default_rng(1500 + seed)
    for case in range(120):
        x, rois, size, scale, sr, aligned = random_case(rng, dtype, roi_dtype)
        out = roi_align(x, rois, size, scale, sr, aligned)
        want = roi_align_reference(x, rois, size, scale, sr, aligned)
        assert out.dtype == dtype and out.shape == want.shape, case
        assert torch.equal(out, want), (case, (out.double() - want.double()).abs().max())
        if case % 3 == 0:  # backward against the oracle on a third of the cases
            g = torch.randn(out.shape, dtype=torch.float64).to(dtype)
            got = torch.ops.frcnn.roi_align_backward(g, rois, scale, *size, *x.shape, sr,
                                                     aligned)
            want_g = roi_align_backward_reference(g, rois, x.shape, scale, sr, aligned)
            assert got.dtype == dtype
            assert torch.equal(got, want_g), (case, (got.double() - want_g.double()).abs().max())


def test_hand_worked_ramp():
    # Bilinear interpolation of a ramp f(y, x) = x is exact, so a bin's value is the mean x of
    # its samples. RoI x in [1, 5] at scale 1, one bin, 2 x 2 samples at x = 1 + (0.5, 1.5) * 2.
    x = torch.arange(8.0).repeat(8, 1).reshape(1, 1, 8, 8)
    rois = torch.tensor([[0, 1, 1, 5, 5.0]])
    assert roi_align(x, rois, 1, 1.0, 2, False).item() == 3.0  # samples at 2, 4
    assert roi_align(x, rois, 1, 1.0, 2, True).item() == 2.5  # shifted by -0.5: 1.5, 3.5
    # Two bins along x, adaptive: ceil(4 / 2) = 2 samples per axis: x = 1.5, 2.5 | 3.5, 4.5.
    assert roi_align(x, rois, (1, 2), 1.0, 0, False).flatten().tolist() == [2.0, 4.0]
    # Scale 0.5: RoI [0.5, 2.5] on the map, 1 sample at 1.5 (aligned: 1.0).
    assert roi_align(x, rois, 1, 0.5, 1, False).item() == 1.5
    assert roi_align(x, rois, 1, 0.5, 1, True).item() == 1.0
    # Samples beyond the last column clamp to it (x = 7 + 0.5 -> 7); below -1 they count 0:
    # RoI [-3, -1] at scale 1, samples at -2.5 and -1.5, both < -1 -> 0.
    r2 = torch.tensor([[0, 7, 0, 8, 1.0], [0, -3, 0, -1, 1.0]])
    assert roi_align(x, r2, 1, 1.0, 2, False).flatten().tolist() == [7.0, 0.0]
    # One sample at x = -0.75 (inside [-1, 0]): clamped to 0, value 0; the other at 0.75.
    r3 = torch.tensor([[0, -1.5, 0, 1.5, 1.0]])
    assert roi_align(x, r3, 1, 1.0, 2, False).item() == pytest.approx((0 + 0.75) / 2)
    # Not aligned: a zero-size RoI is widened to 1 pixel (samples at 3.25, 3.75).
    r4 = torch.tensor([[0, 3, 3, 3, 3.0]])
    assert roi_align(x, r4, 1, 1.0, 2, False).item() == 3.5
    # Aligned, adaptive: a zero-size RoI has no samples -> 0; with a fixed ratio it samples
    # its corner point (2.5) four times.
    assert roi_align(x, r4, 1, 1.0, 0, True).item() == 0.0
    assert roi_align(x, r4, 1, 1.0, 2, True).item() == 2.5


def test_empty_rois_and_channels():
    x = torch.randn(2, 3, 5, 6, requires_grad=True)
    out = roi_align(x, torch.zeros(0, 5), (2, 3), 0.5, 2, True)
    assert out.shape == (0, 3, 2, 3)
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    out = roi_align(torch.zeros(1, 0, 5, 6), torch.tensor([[0, 1, 1, 3, 3.0]]), 2, 1.0, 0, False)
    assert out.shape == (1, 0, 2, 2)


@pytest.mark.parametrize("device", DEVICES)
def test_bad_rois_are_host_errors(device):
    x = torch.randn(2, 1, 4, 4, device=device)
    good = [0, 1, 1, 3, 3.0]
    for bad, msg in [([2, 1, 1, 3, 3.0], r"roi 1 has batch index 2 outside \[0, 2\)"),
                     ([-1, 1, 1, 3, 3.0], r"roi 1 has batch index -1 outside \[0, 2\)"),
                     ([0, 1, float("nan"), 3, 3.0], "roi 1 has a non-finite coordinate"),
                     ([0, 1, 1, float("inf"), 3.0], "roi 1 has a non-finite coordinate"),
                     ([float("nan"), 1, 1, 3, 3.0], "roi 1 has a non-finite coordinate")]:
        rois = torch.tensor([good, bad], device=device)
        with pytest.raises(RuntimeError, match="frcnn::roi_align: " + msg):
            roi_align(x, rois, 2, 1.0, 2, True)
        with pytest.raises(RuntimeError, match="frcnn::roi_align_backward: " + msg):
            torch.ops.frcnn.roi_align_backward(torch.ones(2, 1, 2, 2, device=device), rois, 1.0,
                                               2, 2, 2, 1, 4, 4, 2, True)
    # -0.5 truncates to 0 (Caffe's int cast): valid.
    roi_align(x, torch.tensor([[-0.5, 1, 1, 3, 3.0]], device=device), 2, 1.0, 2, True)
    with pytest.raises(RuntimeError, match=r"rois must be \[R, 5\]"):
        roi_align(x, torch.zeros(3, 4, device=device), 2, 1.0, 2, True)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_gradcheck(aligned, sampling_ratio):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64, generator=g, requires_grad=True)
    rois = torch.tensor([[0, 0.3, 1.1, 5.2, 4.9], [1, -2.0, -1.0, 3.3, 2.2],
                         [1, 4.0, 3.5, 9.0, 8.0], [0, 2.2, 2.2, 2.3, 2.25]], dtype=torch.float64)

    def f(inp):
        return roi_align(inp, rois, (2, 3), 0.9, sampling_ratio, aligned)

    assert torch.autograd.gradcheck(f, (x,))
    if aligned and sampling_ratio == 0:  # double backward (roi_align_backward's own gradient)
        assert torch.autograd.gradgradcheck(f, (x,))


def test_grad_accumulates_in_float32_for_bfloat16():
    # 64 identical RoIs add 64 small contributions to the same pixels: in bf16 the running sum
    # would stall; in float32 it matches the float64 result to bf16 precision.
    x = torch.randn(1, 1, 4, 4)
    rois = torch.tensor([[0, 0.5, 0.5, 2.5, 2.5]]).repeat(64, 1)
    g = torch.full((64, 1, 2, 2), 1.0)
    got = torch.ops.frcnn.roi_align_backward(g.bfloat16(), rois, 1.0, 2, 2, 1, 1, 4, 4, 2, False)
    want = torch.ops.frcnn.roi_align_backward(g.double(), rois.double(), 1.0, 2, 2, 1, 1, 4, 4,
                                              2, False)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, want.to(torch.bfloat16))


def test_threads_do_not_change_results():
    rng = np.random.default_rng(9)
    x = torch.tensor(rng.normal(size=(2, 16, 20, 24)), dtype=torch.float32)
    p = rng.uniform(-10, 400, size=(300, 4))
    rois = torch.tensor(np.concatenate([rng.integers(0, 2, (300, 1)), np.sort(p.reshape(300, 2, 2),
                                                                               axis=1).reshape(300, 4)], 1),
                        dtype=torch.float32)
    n = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out = roi_align(x, rois, 7, 1 / 16, 0, True)
            gin = torch.ops.frcnn.roi_align_backward(torch.ones_like(out), rois, 1 / 16, 7, 7,
                                                     *x.shape, 0, True)
            results.append((out, gin))
    finally:
        torch.set_num_threads(n)
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


def test_module():
    m = RoIAlign(7, 1 / 16, 2, True)
    assert repr(m) == ("RoIAlign(output_size=(7, 7), spatial_scale=0.0625, sampling_ratio=2, "
                       "aligned=True)")
    x = torch.randn(1, 3, 10, 10)
    rois = torch.tensor([[0, 10, 20, 100, 120.0]])
    assert torch.equal(m(x, rois), roi_align(x, rois, (7, 7), 1 / 16, 2, True))


def _op_args(device, dtype=torch.float64, requires_grad=False):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 9, 10, generator=g, dtype=dtype)
    rois = torch.tensor([[0, 0, 0, 70, 60], [1, 10, 20, 50, 40], [1, 33, 33, 33, 33.0]])
    return x.to(device).requires_grad_(requires_grad), rois.to(device)


def test_registered_with_kernels():
    for op in ("roi_align", "roi_align_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"frcnn::{op}", "CPU")
        if CUDA:
            assert torch._C._dispatch_has_kernel_for_dispatch_key(f"frcnn::{op}", "CUDA")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("aligned", [False, True])
def test_opcheck(device, aligned):
    x, rois = _op_args(device, requires_grad=True)
    torch.library.opcheck(torch.ops.frcnn.roi_align.default, (x, rois, 1 / 8, 3, 2, 0, aligned))
    g = torch.randn(3, 3, 3, 2, dtype=torch.float64, device=device, requires_grad=True)
    torch.library.opcheck(torch.ops.frcnn.roi_align_backward.default,
                          (g, rois, 1 / 8, 3, 2, 2, 3, 9, 10, 2, aligned))


def test_torch_compile_fullgraph_and_export():
    torch._dynamo.reset()

    def f(x, rois):
        return roi_align(x, rois, (3, 2), 1 / 8, 2, True).relu().sum()

    x, rois = _op_args("cpu", torch.float32, requires_grad=True)
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    loss = compiled(x, rois)
    loss.backward()
    grad = x.grad.clone()
    x.grad = None
    want = f(x, rois)
    want.backward()
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(grad, x.grad)

    ep = torch.export.export(RoIAlign((3, 2), 1 / 8, 2, True), (x.detach(), rois))
    assert "frcnn.roi_align" in str(ep.graph)
    assert torch.equal(ep.module()(x.detach(), rois), roi_align(x.detach(), rois, (3, 2), 1 / 8,
                                                                2, True))


def test_matches_torchvision():
    tv_ops = pytest.importorskip("torchvision.ops")
    rng = np.random.default_rng(77)
    for dtype in (torch.float32, torch.float64):
        for case in range(200):
            x, rois, size, scale, sr, aligned = random_case(rng, dtype, dtype)
            rois[:, 0] = rois[:, 0].trunc()  # torchvision reads the index the same way
            if aligned and sr <= 0:  # torchvision sizes a vector by the (negative) sample
                # count of a reversed RoI and raises; ours gives 0 (test_hand_worked_ramp)
                rois = rois[(rois[:, 3] >= rois[:, 1]) & (rois[:, 4] >= rois[:, 2])]
            out = roi_align(x, rois, size, scale, sr, aligned)
            want = tv_ops.roi_align(x, rois, size, scale, sr, aligned)
            torch.testing.assert_close(out, want, rtol=1e-6, atol=1e-6, msg=str(case))
            xg = x.clone().requires_grad_()
            xt = x.clone().requires_grad_()
            g = torch.randn(out.shape, dtype=dtype)
            (roi_align(xg, rois, size, scale, sr, aligned) * g).sum().backward()
            (tv_ops.roi_align(xt, rois, size, scale, sr, aligned) * g).sum().backward()
            torch.testing.assert_close(xg.grad, xt.grad, rtol=1e-5, atol=1e-5, msg=str(case))


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(dtype):
    rng = np.random.default_rng(31)
    for case in range(200):
        x, rois, size, scale, sr, aligned = random_case(rng, dtype, torch.float32)
        out = roi_align(x.cuda(), rois.cuda(), size, scale, sr, aligned)
        want = roi_align(x, rois, size, scale, sr, aligned)
        torch.testing.assert_close(out.cpu(), want, rtol=0, atol=0, msg=str(case))
        g = torch.randn(out.shape, dtype=torch.float64).to(dtype)
        got = torch.ops.frcnn.roi_align_backward(g.cuda(), rois.cuda(), scale, *size, *x.shape,
                                                 sr, aligned)
        want_g = torch.ops.frcnn.roi_align_backward(g, rois, scale, *size, *x.shape, sr, aligned)
        tol = 1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-5
        torch.testing.assert_close(got.cpu(), want_g, rtol=tol, atol=tol, msg=str(case))


@pytest.mark.parametrize("net", ["TINY", "ZF", "VGG16", "ELITE0"])
def test_cfg_pooling_mode_reaches_every_head(net):
    from frcnn.config import get_default_cfg
    from frcnn.models import build_model

    cfg = get_default_cfg()
    head = build_model(net, 3, cfg, parts=("head",), pretrained=False).head
    assert head.pooling_mode == "pool"  # the paper's default
    cfg.POOLING_MODE, cfg.POOLING_ALIGNED, cfg.POOLING_SAMPLING_RATIO = "align", False, 0
    head = build_model(net, 3, cfg, parts=("head",), pretrained=False).head
    assert (head.pooling_mode, head.pooling_aligned, head.sampling_ratio) == ("align", False, 0)


def test_head_uses_roi_align_and_mode_is_checked():
    from frcnn.config import get_default_cfg
    from frcnn.models import build_model, check_pooling, pooling_meta

    cfg = get_default_cfg()
    cfg.POOLING_MODE = "align"
    torch.manual_seed(0)
    model = build_model("TINY", 3, cfg, parts=("head",), pretrained=False)
    feats = torch.randn(1, 128, 10, 12)
    rois = torch.tensor([[0, 10.3, 20.7, 100.2, 90.9], [0, 50, 40, 170, 150.0]])
    seen = {}
    model.head.top = lambda pooled: seen.setdefault("p", pooled).flatten(1)[:, :256]
    model.head.predict(feats, rois)
    assert torch.equal(seen["p"], roi_align(feats, rois, 7, 1 / 16, 2, True))

    check_pooling({"pooling": pooling_meta(cfg)["pooling"]}, cfg, "m.pth")  # same: fine
    with pytest.raises(ValueError, match=r"m.pth was trained with POOLING_MODE pool, but the cfg "
                                         r"has POOLING_MODE align .*--set POOLING_MODE pool"):
        check_pooling({"net": "TINY"}, cfg, "m.pth")  # old files: RoI pooling
    cfg2 = get_default_cfg()
    with pytest.raises(ValueError, match="trained with POOLING_MODE align POOLING_ALIGNED True "
                                         "POOLING_SAMPLING_RATIO 2, but the cfg has "
                                         "POOLING_MODE pool"):
        check_pooling(pooling_meta(cfg), cfg2, "m.pth")
    cfg2.POOLING_MODE = "bogus"
    with pytest.raises(ValueError, match="pooling_mode 'bogus'"):
        build_model("TINY", 3, cfg2, parts=("head",), pretrained=False)
