"""frcnn.ops.roi_pool against the Caffe oracle (frcnn.ops.reference.roi_pool_reference)."""
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
