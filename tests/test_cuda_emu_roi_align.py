"""The CUDA RoIAlign kernels (csrc/cuda/roi_align_kernel.cu) executed on the CPU by the CUDA
emulator (frcnn._C_cuda_emu, `make cuda-emu`) or, with FRCNN_CUDA_TEST_DEVICE=cuda, on a GPU,
against the CPU kernel; plus the CUDA glue's RoI contract checks (roi_align_glue.h).

Forward: bit-identical to the CPU kernel for every dtype (same arithmetic order, no fused
multiply-adds on either side). Backward: the CUDA kernel adds with atomics in another order, so
float results agree within rounding; with small dyadic gradients on dyadic coordinates every
partial sum is exact and the results are equal.
"""

import numpy as np
import pytest
import torch

from cuda_target import QUICK, TARGET, ncases, select  # noqa: F401
from test_roi_align import random_case

EMU, _skip = select(needs=("roi_align",))
if _skip:
    pytestmark = _skip


def cuda_align(x, rois, scale, size, sr, aligned):
    if EMU is not None:
        return EMU.roi_align(x, rois, scale, *size, sr, aligned)
    return torch.ops.frcnn.roi_align(x.cuda(), rois.cuda(), scale, *size, sr, aligned).cpu()


def cuda_align_backward(g, rois, scale, size, shape, sr, aligned):
    if EMU is not None:
        return EMU.roi_align_backward(g, rois, scale, *size, *shape, sr, aligned)
    return torch.ops.frcnn.roi_align_backward(g.cuda(), rois.cuda(), scale, *size, *shape, sr,
                                              aligned).cpu()


@pytest.mark.parametrize("dtype,roi_dtype,seed", [
    (torch.float32, torch.float32, 1), (torch.float64, torch.float64, 2),
    (torch.float32, torch.float64, 3), (torch.float64, torch.float32, 4),
    (torch.float16, torch.float32, 5), (torch.bfloat16, torch.float32, 6),
    (torch.bfloat16, torch.bfloat16, 7)])
def test_roi_align_emulated_cuda_equals_cpu(dtype, roi_dtype, seed):
    rng = np.random.default_rng(2500 + seed)
    for case in range(ncases(150)):
        x, rois, size, scale, sr, aligned = random_case(rng, dtype, roi_dtype)
        out = cuda_align(x, rois, scale, size, sr, aligned)
        want = torch.ops.frcnn.roi_align(x, rois, scale, *size, sr, aligned)
        assert out.dtype == dtype and torch.equal(out, want), case
        g = torch.randn(out.shape, dtype=torch.float64).to(dtype)
        got = cuda_align_backward(g, rois, scale, size, x.shape, sr, aligned)
        want_g = torch.ops.frcnn.roi_align_backward(g, rois, scale, *size, *x.shape, sr, aligned)
        assert got.dtype == dtype
        tol = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}.get(dtype, 1e-5)
        torch.testing.assert_close(got, want_g, rtol=tol, atol=tol, msg=str(case))


def test_roi_align_backward_exact_on_dyadic_inputs():
    # Coordinates on quarter pixels at scale 1, 2 x 2 samples, gradients k / 8: every weight and
    # product is a short dyadic number, so sums are exact in any order -> equal results.
    rng = np.random.default_rng(11)
    for case in range(ncases(40)):
        B, C, H, W, R = 2, 3, int(rng.integers(2, 9)), int(rng.integers(2, 9)), 6
        p = np.floor(rng.uniform(-2, max(H, W) + 2, size=(R, 4)) * 4) / 4
        rois = torch.tensor(np.concatenate([rng.integers(0, B, (R, 1)), p], 1), dtype=torch.float32)
        g = torch.tensor(rng.integers(-8, 9, size=(R, C, 2, 2)) / 8.0, dtype=torch.float32)
        for aligned in (False, True):
            got = cuda_align_backward(g, rois, 1.0, (2, 2), (B, C, H, W), 2, aligned)
            want = torch.ops.frcnn.roi_align_backward(g, rois, 1.0, 2, 2, B, C, H, W, 2, aligned)
            assert torch.equal(got, want), (case, aligned)


@pytest.mark.parametrize("bad,msg", [
    (2.0, r"frcnn::roi_align: roi 1 has batch index 2 outside \[0, 2\)"),
    (-1.0, r"frcnn::roi_align: roi 1 has batch index -1 outside \[0, 2\)"),
    (float("nan"), r"frcnn::roi_align: roi 1 has a non-finite coordinate"),
])
def test_roi_align_bad_rois_same_error_as_cpu(bad, msg):
    x = torch.randn(2, 1, 4, 4)
    rois = torch.tensor([[0, 1, 1, 3, 3.0], [bad, 1, 1, 3, 3.0]])
    for fn in (lambda: cuda_align(x, rois, 1.0, (2, 2), 2, True),
               lambda: torch.ops.frcnn.roi_align(x, rois, 1.0, 2, 2, 2, True)):
        with pytest.raises(RuntimeError, match=msg):
            fn()
    rois2 = rois.clone()
    rois2[1, 0], rois2[1, 3] = 0, float("inf")
    with pytest.raises(RuntimeError, match="roi 1 has a non-finite coordinate"):
        cuda_align_backward(torch.ones(2, 1, 2, 2), rois2, 1.0, (2, 2), (2, 1, 4, 4), 2, True)


def test_roi_align_empty_and_rejected_dtypes():
    x = torch.randn(2, 3, 5, 6)
    assert cuda_align(x, torch.zeros(0, 5), 0.5, (2, 3), 2, True).shape == (0, 3, 2, 3)
    with pytest.raises(RuntimeError, match=r"rois must be float32 or float64 \(or the features'"):
        cuda_align(x, torch.zeros(1, 5, dtype=torch.float16), 0.5, (2, 3), 2, True)
    with pytest.raises(RuntimeError, match=r"rois must be float32 or float64 \(or the features'"):
        torch.ops.frcnn.roi_align(x, torch.zeros(1, 5, dtype=torch.float16), 0.5, 2, 3, 2, True)
