"""frcnn.ops.roi_pool against the Caffe oracle (frcnn.ops.reference.roi_pool_reference)."""
import re

import numpy as np
import pytest
import torch

from frcnn.ops import RoIPool, roi_pool
from frcnn.ops.reference import roi_pool_backward_reference, roi_pool_reference

CUDA = torch.cuda.is_available()


def random_case(rng, dtype):
    B, C = int(rng.integers(1, 3)), int(rng.integers(1, 4))
    H, W = int(rng.integers(1, 13)), int(rng.integers(1, 13))
    R = int(rng.integers(0, 5))
    ph, pw = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    scale = float(rng.choice([1.0, 0.5, 0.25, 1 / 16, rng.uniform(0.05, 1.5)]))
    # Small integer values: many ties, so the first-max rule is exercised.
    if rng.random() < 0.5:
        x = rng.integers(-3, 4, size=(B, C, H, W)).astype(np.float64)
    else:
        x = rng.normal(size=(B, C, H, W))
    span_x, span_y = W / scale, H / scale
    p = rng.uniform(-0.3, 1.3, size=(R, 4)) * [span_x, span_y, span_x, span_y]
    kind = rng.random(R)
    p[kind < 0.2] = np.round(p[kind < 0.2] * 2 * scale) / (2 * scale)  # x * s lands on k + 0.5
    p[(kind >= 0.2) & (kind < 0.3), 2] = p[(kind >= 0.2) & (kind < 0.3), 0]  # x2 == x1
    rois = np.concatenate([rng.integers(0, B, size=(R, 1)), p], axis=1)
    return (torch.tensor(x, dtype=dtype), torch.tensor(rois, dtype=dtype), (ph, pw), scale)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_roi_pool_matches_reference_random(dtype):
    rng = np.random.default_rng(1506 if dtype == torch.float32 else 1507)
    for case in range(1000):  # x2 dtypes = 2000 cases
        x, rois, size, scale = random_case(rng, dtype)
        out, arg = torch.ops.frcnn.roi_pool(x, rois, scale, *size)
        want_out, want_arg = roi_pool_reference(x, rois, size, scale)
        assert out.dtype == dtype and arg.dtype == torch.int32
        assert torch.equal(arg, want_arg), case
        assert torch.equal(out, want_out), case
        if case % 4 == 0:  # backward against the oracle on a quarter of the cases
            g = torch.randn(out.shape, dtype=dtype)
            got = torch.ops.frcnn.roi_pool_backward(g, rois, arg, scale, *size, *x.shape)
            want = roi_pool_backward_reference(g, want_arg, rois, x.shape)
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_caffe_rounding_half_away_from_zero():
    # Values fall along w, so the max of a bin is at its start: start = round(5 * 0.5 = 2.5) is
    # 3 in C (np.round would give 2). End = round(0.5) = 1 (not 0), so the second RoI covers
    # [-3, 1] and its max over an increasing row is at 1.
    x = torch.stack([-torch.arange(8.0), torch.arange(8.0)]).reshape(1, 2, 1, 8)
    rois = torch.tensor([[0, 5, 0, 15, 0], [0, -5, 0, 1, 0.0]])
    out, arg = torch.ops.frcnn.roi_pool(x, rois, 0.5, 1, 1)
    assert arg[0, 0].flatten().tolist() == [3] and arg[1, 1].flatten().tolist() == [1]
    out, arg = torch.ops.frcnn.roi_pool(x, rois, 0.5, 1, 8)
    want_out, want_arg = roi_pool_reference(x, rois, (1, 8), 0.5)
    assert torch.equal(arg, want_arg) and torch.equal(out, want_out)
    # start 3, end 8 (rounded 7.5): extent 6 over 8 bins of 0.75: [3, 4), [3, 5), ...
    assert arg[0, 1, 0].tolist()[:2] == [3, 4]


def test_empty_bins_are_zero_and_ties_take_first():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 1] = x[0, 0, 2, 2] = 5.0
    rois = torch.tensor([[0, 0, 0, 3, 3], [0, 10, 10, 20, 20.0]])  # second is off the map
    out, arg = torch.ops.frcnn.roi_pool(x, rois, 1.0, 1, 1)
    assert out.flatten().tolist() == [5.0, 0.0]
    assert arg.flatten().tolist() == [1 * 4 + 1, -1]  # the first max in row-major order


def test_negative_features_and_empty_inputs():
    x = -torch.rand(2, 3, 5, 6) - 1  # all negative: a bin must not output the 0 of an init
    rois = torch.tensor([[1, 0, 0, 5, 4.0]])
    out = roi_pool(x, rois, 2, 1.0)
    assert (out < 0).all()
    empty = roi_pool(x, torch.zeros(0, 5), (7, 7), 1 / 16)
    assert empty.shape == (0, 3, 7, 7)
    x.requires_grad_(True)
    roi_pool(x, torch.zeros(0, 5), (2, 2), 1.0).sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_bad_batch_index():
    with pytest.raises(RuntimeError, match="batch index"):
        roi_pool(torch.rand(1, 1, 4, 4), torch.tensor([[1, 0, 0, 2, 2.0]]), 2, 1.0)


# ---- the channels-last vectorised kernel, reduced precision and the RoI contract ----

FEATURE_DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def wide_case(rng, dtype, rois_dtype, C):
    """random_case's geometry with C channels (the vectorised path works on blocks of 8/32
    channels, with a scalar tail). Values are exact in dtype and in rois_dtype, so the oracle run
    in rois_dtype (the contract's coordinate arithmetic) gives the exact expected values."""
    _, rois, size, scale = random_case(rng, torch.float64)
    B = int(rois[:, 0].max().item()) + 1 if len(rois) else 1
    H, W = int(rng.integers(1, 13)), int(rng.integers(1, 13))
    if rng.random() < 0.5:  # ties
        x = torch.tensor(rng.integers(-3, 4, size=(B, C, H, W)), dtype=torch.float64)
    else:  # a post-ReLU map (many zeros) of values exact in float32 and in dtype
        x = torch.tensor(rng.normal(size=(B, C, H, W))).float().to(dtype).double().relu()
    return x.to(dtype), rois.to(rois_dtype), size, scale


@pytest.mark.parametrize("dtype", FEATURE_DTYPES)
@pytest.mark.parametrize("rois_dtype", [torch.float32, torch.float64])
def test_wide_channels_and_mixed_dtypes_match_reference_exactly(dtype, rois_dtype):
    # bf16/half: the max of a bin is one of the inputs and comparisons of upcast values are
    # exact, so the forward is compared exactly with the oracle on the same (rounded) inputs;
    # the backward sums bf16/half grads in float32 in the oracle's order and rounds once, so it is
    # exact against the float32 oracle rounded to dtype. No tolerance anywhere.
    rng = np.random.default_rng([int(rois_dtype == torch.float64), FEATURE_DTYPES.index(dtype)])
    for case in range(60):
        C = int(rng.choice([8, 16, 24, 32, 37, 40, 64, 67]))
        x, rois, size, scale = wide_case(rng, dtype, rois_dtype, C)
        out, arg = torch.ops.frcnn.roi_pool(x, rois, scale, *size)
        want_out, want_arg = roi_pool_reference(x.to(rois_dtype), rois, size, scale)
        assert out.dtype == dtype
        assert torch.equal(arg, want_arg), case
        assert torch.equal(out, want_out.to(dtype)), case
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        g = torch.randn(out.shape, dtype=torch.float64).to(dtype)
        got = torch.ops.frcnn.roi_pool_backward(g, rois, arg, scale, *size, *x.shape)
        want = roi_pool_backward_reference(g.to(acc), want_arg, rois, x.shape)
        assert got.dtype == dtype and torch.equal(got, want.to(dtype)), case


def test_channels_last_and_strided_inputs():
    x = torch.randn(2, 40, 9, 11)
    rois = torch.tensor([[0, 0, 0, 100, 80], [1, 20, 10, 60, 90], [1, -50, -50, 400, 400.0]])
    out, arg = torch.ops.frcnn.roi_pool(x, rois, 1 / 8, 3, 2)
    for xv in (x.contiguous(memory_format=torch.channels_last), x.transpose(2, 3).contiguous().transpose(2, 3)):
        o2, a2 = torch.ops.frcnn.roi_pool(xv, rois, 1 / 8, 3, 2)
        assert torch.equal(o2, out) and torch.equal(a2, arg)


@pytest.mark.parametrize("C", [3, 32])  # scalar path, vectorised path
@pytest.mark.parametrize("dtype", FEATURE_DTYPES)
def test_nan_and_inf_are_never_the_max(C, dtype):
    # As the plane-walking kernel (and torchvision): `v > best` is false for NaN, so NaN is
    # skipped; a bin of only NaN/-inf keeps the dtype's lowest value with argmax -1.
    x = torch.zeros(1, C, 2, 3, dtype=dtype)
    x[0, :, 0, 0] = float("nan")
    x[0, :, 0, 1] = -1.0
    x[0, :, 0, 2] = -2.0
    x[0, :, 1, :] = torch.tensor([float("nan"), float("-inf"), float("nan")], dtype=dtype)
    rois = torch.tensor([[0, 0, 0, 2, 0], [0, 0, 1, 2, 1.0]])  # row 0; row 1
    out, arg = torch.ops.frcnn.roi_pool(x, rois, 1.0, 1, 1)
    assert arg[0].flatten().tolist() == [1] * C and out[0].flatten().tolist() == [-1.0] * C
    assert arg[1].flatten().tolist() == [-1] * C
    assert out[1].flatten().tolist() == [torch.finfo(dtype).min] * C
    g = torch.ones(out.shape, dtype=dtype)
    gi = torch.ops.frcnn.roi_pool_backward(g, rois, arg, 1.0, 1, 1, *x.shape)
    assert gi.sum().item() == C and (gi[0, :, 0, 1] == 1).all()


def test_rois_keep_their_precision():
    # Coordinates are never cast to the features' dtype. bf16 features, float32 rois: x1 = 599
    # (bf16 would make it 600, and round(600 / 16 = 37.5) = 38, not 37).
    x = torch.arange(50.0).repeat(1, 1, 2, 1)  # [1, 1, 2, 50], increasing along w
    rois = torch.tensor([[0, 599, 0, 599, 0.0]])
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        _, arg = torch.ops.frcnn.roi_pool(x.to(dtype), rois, 1 / 16, 1, 1)
        assert arg.item() == 37, dtype
        assert roi_pool(x.to(dtype), rois, 1, 1 / 16).item() == 37
    # float64 rois, float32 features: the arithmetic is double (39.99999999 / 16 rounds to 2;
    # in float32 the coordinate is 40.0 and 40 / 16 = 2.5 rounds to 3).
    r64 = torch.tensor([[0, 39.99999999, 0, 39.99999999, 0]], dtype=torch.float64)
    assert torch.ops.frcnn.roi_pool(x, r64, 1 / 16, 1, 1)[1].item() == 2
    assert torch.ops.frcnn.roi_pool(x, r64.float(), 1 / 16, 1, 1)[1].item() == 3
    # rois of a reduced dtype (the features' dtype, accepted for compatibility) work in float32
    rb = rois.bfloat16()
    assert torch.ops.frcnn.roi_pool(x.bfloat16(), rb, 1 / 16, 1, 1)[1].item() == 38


def test_bf16_autograd_accumulates_in_float32():
    # 300 RoIs route grad 1 to the same pixel: float32 sums to 300 (exact in bf16); a bf16
    # accumulator would stop at 256 (256 + 1 rounds back to 256).
    x = torch.ones(1, 8, 1, 1, dtype=torch.bfloat16, requires_grad=True)
    rois = torch.zeros(300, 5)
    roi_pool(x, rois, 1, 1.0).sum().backward()
    assert x.grad.dtype == torch.bfloat16 and (x.grad == 300).all()


def test_backward_is_deterministic_with_threads():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 64, 19, 25, generator=g).relu()
    xy = torch.rand(200, 2, generator=g) * 300
    rois = torch.cat([torch.randint(0, 2, (200, 1), generator=g).float(), xy,
                      xy + torch.rand(200, 2, generator=g) * 150], 1)
    out, arg = torch.ops.frcnn.roi_pool(x, rois, 1 / 16, 7, 7)
    gr = torch.randn(out.shape, generator=g)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2, 2):
            torch.set_num_threads(n)
            o2, a2 = torch.ops.frcnn.roi_pool(x, rois, 1 / 16, 7, 7)
            assert torch.equal(o2, out) and torch.equal(a2, arg)
            results.append(torch.ops.frcnn.roi_pool_backward(gr, rois, arg, 1 / 16, 7, 7, *x.shape))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(r, results[0]) for r in results)
    assert torch.equal(results[0], roi_pool_backward_reference(gr, arg, rois, x.shape))


@pytest.mark.parametrize("roi, msg", [
    ([2, 0, 0, 4, 4], "frcnn::roi_pool: roi 1 has batch index 2 outside [0, 2)"),
    ([-1, 0, 0, 4, 4], "frcnn::roi_pool: roi 1 has batch index -1 outside [0, 2)"),
    ([2.5, 0, 0, 4, 4], "frcnn::roi_pool: roi 1 has batch index 2.5 outside [0, 2)"),
    ([0, 0, float("nan"), 4, 4], "frcnn::roi_pool: roi 1 has a non-finite coordinate"),
    ([0, 0, 0, float("inf"), 4], "frcnn::roi_pool: roi 1 has a non-finite coordinate"),
    ([float("nan"), 0, 0, 4, 4], "frcnn::roi_pool: roi 1 has a non-finite coordinate"),
])
@pytest.mark.parametrize("rois_dtype", [torch.float32, torch.float64])
def test_contract_errors(roi, msg, rois_dtype):
    x = torch.rand(2, 16, 4, 4)
    rois = torch.tensor([[1.9, 0, 0, 4, 4], roi], dtype=rois_dtype)  # 1.9 truncates to 1: fine
    with pytest.raises(RuntimeError, match=re.escape(msg)):
        torch.ops.frcnn.roi_pool(x, rois, 1.0, 2, 2)
    with pytest.raises(RuntimeError, match=re.escape(msg.replace("roi_pool", "roi_pool_backward"))):
        torch.ops.frcnn.roi_pool_backward(torch.ones(2, 16, 2, 2), rois,
                                          torch.zeros(2, 16, 2, 2, dtype=torch.int32),
                                          1.0, 2, 2, 2, 16, 4, 4)
    ok = torch.tensor([[1.9, 0, 0, 4, 4], [-0.5, 0, 0, 4, 4]], dtype=rois_dtype)  # -0.5 -> 0
    assert torch.ops.frcnn.roi_pool(x, ok, 1.0, 2, 2)[0].shape == (2, 16, 2, 2)


@pytest.mark.parametrize("bad", [-2, 16, 1 << 30])
def test_backward_rejects_argmax_outside_the_map(bad):
    rois = torch.tensor([[0, 0, 0, 3, 3.0]])
    arg = torch.zeros(1, 8, 2, 2, dtype=torch.int32)
    arg[0, 5, 1, 0] = bad
    with pytest.raises(RuntimeError, match=re.escape(
            f"frcnn::roi_pool_backward: argmax[0, 5, 1, 0] = {bad} is outside [-1, H * W = 16)")):
        torch.ops.frcnn.roi_pool_backward(torch.ones(1, 8, 2, 2), rois, arg, 1.0, 2, 2, 1, 8, 4, 4)
    with pytest.raises(RuntimeError, match="argmax must be int32"):
        torch.ops.frcnn.roi_pool_backward(torch.ones(1, 8, 2, 2), rois, arg.long(), 1.0, 2, 2, 1, 8, 4, 4)


def test_module_and_autograd_grad_matches_reference():
    x = torch.randn(2, 4, 9, 11, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0, 0, 100, 80], [1, 20, 10, 60, 90], [0, 30, 30, 31, 31],
                         [1, -50, -50, 400, 400]], dtype=torch.float64)
    pool = RoIPool((3, 2), 1 / 8)
    out = pool(x, rois)
    g = torch.randn(out.shape, dtype=torch.float64)
    out.backward(g)
    _, arg = roi_pool_reference(x, rois, (3, 2), 1 / 8)
    torch.testing.assert_close(x.grad, roi_pool_backward_reference(g, arg, rois, x.shape))
    assert "output_size=(3, 2)" in repr(pool)


def test_gradcheck_cpu():
    g = torch.Generator().manual_seed(0)
    # Distinct values (no ties), so a small perturbation never moves an argmax.
    x = torch.randperm(2 * 3 * 10 * 12, generator=g).reshape(2, 3, 10, 12).double() / 7
    x.requires_grad_(True)
    rois = torch.tensor([[0, 0, 0, 90, 70], [1, 16, 8, 70, 60], [1, 40, 40, 41, 41],
                         [0, -30, -30, 30, 200]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: roi_pool(t, rois, (3, 4), 1 / 8), (x,))
    assert torch.autograd.gradgradcheck(lambda t: roi_pool(t, rois, (3, 4), 1 / 8), (x,))


@pytest.mark.skipif(not CUDA, reason="no GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_roi_pool_cuda_matches_cpu(dtype):
    rng = np.random.default_rng(11)
    for _ in range(500):
        x, rois, size, scale = random_case(rng, dtype)
        out, arg = torch.ops.frcnn.roi_pool(x, rois, scale, *size)
        out_c, arg_c = torch.ops.frcnn.roi_pool(x.cuda(), rois.cuda(), scale, *size)
        assert torch.equal(arg_c.cpu(), arg) and torch.equal(out_c.cpu(), out)
        g = torch.randn(out.shape, dtype=dtype)
        want = torch.ops.frcnn.roi_pool_backward(g, rois, arg, scale, *size, *x.shape)
        got = torch.ops.frcnn.roi_pool_backward(g.cuda(), rois.cuda(), arg_c, scale, *size, *x.shape)
        torch.testing.assert_close(got.cpu(), want)


@pytest.mark.skipif(not CUDA, reason="no GPU")
def test_roi_pool_cuda_half_and_gradcheck():
    x = torch.randn(2, 8, 20, 24, device="cuda")
    rois = torch.tensor([[0, 0, 0, 300, 200], [1, 50, 40, 200, 300]], device="cuda")
    out = roi_pool(x.half(), rois.half(), (7, 7), 1 / 16)
    torch.testing.assert_close(out.float(), roi_pool(x.half().float(), rois.half().float(), (7, 7), 1 / 16))
    xd = torch.randperm(2 * 3 * 10 * 12, device="cuda").reshape(2, 3, 10, 12).double().requires_grad_(True)
    rd = torch.tensor([[0, 0, 0, 90, 70], [1, 16, 8, 70, 60.0]], dtype=torch.float64, device="cuda")
    assert torch.autograd.gradcheck(lambda t: roi_pool(t, rd, (3, 4), 1 / 8), (xd,))
