"""The CUDA kernels (csrc/cuda/*.cu), executed on the CPU by the CUDA emulator (csrc/emu, built
as frcnn._C_cuda_emu by `make cuda-emu`), against the CPU kernels, plus the CUDA glue's RoI
contract checks and the emulator's own model (docs/CUDA_TESTING.md).

Equality is exact for every dtype, half and bfloat16 included: max pooling selects an input
value (no rounding), half/bfloat16 NMS boxes are compared in float32 after an exact conversion
on both sides, and the backward gradients are small dyadic numbers whose float32 sums are exact
in any order, so the single final rounding to half/bfloat16 is the same. (With arbitrary
gradients a GPU's atomics sum in another order: float32 results then agree within rounding,
which is what scripts/gpu_check.sh tests on a real GPU.)
"""
import functools

import numpy as np
import pytest
import torch

from cuda_target import QUICK, TARGET, emu_only, ncases, select  # noqa: F401

EMU, _skip = select()
if _skip:
    pytestmark = _skip


class K:
    """The CUDA kernels under test, on CPU tensors in and out: emulated, or on the GPU."""

    @staticmethod
    def nms(boxes, scores, thr, offset=1, shared_limit=48 * 1024):
        if EMU is not None:
            return EMU.nms(boxes, scores, thr, offset, shared_limit)
        return torch.ops.frcnn.nms(boxes.cuda(), scores.cuda(), thr, offset).cpu()

    @staticmethod
    def roi_pool(x, rois, scale, ph, pw):
        if EMU is not None:
            return EMU.roi_pool(x, rois, scale, ph, pw)
        out, arg = torch.ops.frcnn.roi_pool(x.cuda(), rois.cuda(), scale, ph, pw)
        return out.cpu(), arg.cpu()

    @staticmethod
    def roi_pool_backward(g, rois, arg, *args):
        if EMU is not None:
            return EMU.roi_pool_backward(g, rois, arg, *args)
        return torch.ops.frcnn.roi_pool_backward(g.cuda(), rois.cuda(), arg.cuda(), *args).cpu()


DEVICE_WORD = "CPU" if TARGET == "emu" else "CUDA"  # the emulator's tensors live on the CPU

SHARED_DEFAULT = 48 * 1024
NMS_SIZES = [0, 1, 63, 64, 65, 127, 128, 129]


def cpu_nms(boxes, scores, thr, offset):
    if boxes.dtype in (torch.float16, torch.bfloat16):  # the CUDA glue compares in float32
        boxes, scores = boxes.float(), scores.float()
    return torch.ops.frcnn.nms(boxes, scores, float(thr), int(offset))


@functools.lru_cache(maxsize=None)
def _cpu_accepts(feat_dtype, roi_dtype):
    """Whether this build's CPU roi_pool takes these dtypes (the RoI contract's mixed dtypes
    came with the CPU rewrite)."""
    try:
        torch.ops.frcnn.roi_pool(torch.zeros(1, 1, 2, 2, dtype=feat_dtype),
                                 torch.zeros(1, 5, dtype=roi_dtype), 1.0, 1, 1)
        return True
    except RuntimeError:
        return False


def cpu_roi_pool(x, rois, scale, ph, pw):
    if _cpu_accepts(x.dtype, rois.dtype):
        return torch.ops.frcnn.roi_pool(x, rois, scale, ph, pw)
    assert x.dtype in (torch.float16, torch.bfloat16) and rois.dtype == torch.float32
    out, arg = torch.ops.frcnn.roi_pool(x.float(), rois, scale, ph, pw)  # exact upcast
    return out.to(x.dtype), arg


def cpu_roi_pool_backward(g, rois, arg, scale, ph, pw, shape):
    if _cpu_accepts(g.dtype, rois.dtype):
        return torch.ops.frcnn.roi_pool_backward(g, rois, arg, scale, ph, pw, *shape)
    # float32 accumulation, one rounding: the contract for half/bfloat16 gradients
    return torch.ops.frcnn.roi_pool_backward(g.float(), rois, arg, scale, ph, pw,
                                             *shape).to(g.dtype)


# ------------------------------------------------------------------------------------ NMS
def nms_case(rng, n, dtype):
    kind = rng.integers(0, 4)
    if kind == 0:  # continuous boxes
        xy = rng.uniform(0, 300, size=(n, 2))
        wh = rng.uniform(0, 120, size=(n, 2))
    elif kind == 1:  # quarter-pixel grid: identical boxes and IoU ties
        xy = np.floor(rng.uniform(0, 80, size=(n, 2))) / 4 * 8
        wh = np.floor(rng.uniform(0, 40, size=(n, 2))) / 4 * 8
    elif kind == 2:  # degenerate: zero or negative width/height mixed in
        xy = rng.uniform(0, 100, size=(n, 2))
        wh = rng.uniform(-3, 40, size=(n, 2))
        wh[rng.random(n) < 0.2] = 0
    else:  # a few dense clusters (long suppression chains)
        centres = rng.uniform(0, 400, size=(4, 2))
        xy = centres[rng.integers(0, 4, size=n)] + rng.normal(0, 6, size=(n, 2))
        wh = rng.uniform(20, 60, size=(n, 2))
    boxes = np.concatenate([xy, xy + wh], 1)
    if rng.random() < 0.3:
        scores = rng.integers(0, 5, size=n).astype(np.float64)  # score ties: stable order
    else:
        scores = rng.random(n)
    return torch.tensor(boxes, dtype=dtype), torch.tensor(scores, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_nms_emulated_cuda_equals_cpu(dtype):
    # 3 dtypes x 340 = 1020 seeded cases; the listed sizes (tail blocks of 64) come first.
    rng = np.random.default_rng({torch.float32: 10, torch.float64: 11, torch.float16: 12}[dtype])
    sizes = NMS_SIZES * 5 + [int(v) for v in rng.integers(2, 300, size=290)]
    sizes += [500, 1000, 2000] if dtype == torch.float32 else [700]
    sizes = sizes[:ncases(340)]
    for case, n in enumerate(sizes):
        boxes, scores = nms_case(rng, n, dtype)
        thr = float(rng.choice([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, rng.uniform(0, 0.95)]))
        offset = int(rng.integers(0, 2))
        # a third of the cases take the reduce kernel's global-memory `removed` path
        limit = 0 if case % 3 == 0 else SHARED_DEFAULT
        got = K.nms(boxes, scores, thr, offset, limit)
        want = cpu_nms(boxes, scores, thr, offset)
        assert got.dtype == torch.int64
        assert torch.equal(got, want), (case, n, thr, offset, limit)


def test_nms_large_global_and_shared_paths_agree():
    rng = np.random.default_rng(5)
    boxes, scores = nms_case(rng, 1500, torch.float64)
    a = K.nms(boxes, scores, 0.6, 1, SHARED_DEFAULT)
    b = K.nms(boxes, scores, 0.6, 1, 0)
    assert torch.equal(a, b) and torch.equal(a, cpu_nms(boxes, scores, 0.6, 1))


def test_nms_bfloat16_compared_in_float32():
    rng = np.random.default_rng(6)
    for n in (65, 129):
        boxes, scores = nms_case(rng, n, torch.bfloat16)
        assert torch.equal(K.nms(boxes, scores, 0.5, 1), cpu_nms(boxes, scores, 0.5, 1))


def test_nms_grid_limit_checked_before_allocating():
    # 65535 * 64 + 1 boxes need 65536 row blocks (grid.y <= 65535): refused up front. The
    # inputs are stride-0 views, so nothing of that size exists.
    n = 65535 * 64 + 1
    boxes = torch.zeros(1, 4).expand(n, 4)
    scores = torch.zeros(1).expand(n)
    with pytest.raises(RuntimeError, match=r"grid.y limit of 65535 \(at most 4194240 boxes\)"):
        K.nms(boxes, scores, 0.5)


@emu_only
def test_nms_mask_size_checked_before_allocating():
    boxes, scores = nms_case(np.random.default_rng(0), 1000, torch.float32)
    # 1000 x 16 words x 8 bytes = 128000 bytes
    with pytest.raises(RuntimeError, match=r"suppression mask for 1000 boxes takes 128000 bytes"):
        EMU.nms(boxes, scores, 0.5, 1, SHARED_DEFAULT, 100000)
    assert torch.equal(EMU.nms(boxes, scores, 0.5, 1, SHARED_DEFAULT, 128000),
                       cpu_nms(boxes, scores, 0.5, 1))


@emu_only
def test_nms_threads_mode_equals_fibers():
    rng = np.random.default_rng(8)
    boxes, scores = nms_case(rng, 129, torch.float32)
    want = cpu_nms(boxes, scores, 0.4, 1)
    EMU.set_mode("threads")
    try:
        assert EMU.mode() == "threads"
        assert torch.equal(K.nms(boxes, scores, 0.4, 1, SHARED_DEFAULT), want)
        assert torch.equal(K.nms(boxes, scores, 0.4, 1, 0), want)
    finally:
        EMU.set_mode("fibers")


# ------------------------------------------------------------------------------- RoI pool
def roi_case(rng, dtype):
    B, C = int(rng.integers(1, 3)), int(rng.integers(1, 4))
    H, W = int(rng.integers(1, 14)), int(rng.integers(1, 14))
    ph, pw = int(rng.integers(1, 8)), int(rng.integers(1, 8))
    scale = float(rng.choice([1.0, 0.5, 0.25, 1 / 16, rng.uniform(0.05, 1.5)]))
    if rng.random() < 0.5:
        x = rng.integers(-3, 4, size=(B, C, H, W)).astype(np.float64)  # ties: first max wins
    else:
        x = rng.normal(size=(B, C, H, W))
    span = np.array([W / scale, H / scale, W / scale, H / scale])
    kind = rng.integers(0, 4)
    R = int(rng.integers(0, 6))
    if kind == 0:  # anywhere, partly or fully outside the map
        p = rng.uniform(-0.5, 1.5, size=(R, 4)) * span
    elif kind == 1:  # tiny RoIs: more bins than cells, so empty bins
        c = rng.uniform(0, 1, size=(R, 2)) * span[:2]
        p = np.concatenate([c, c + rng.uniform(0, 2 / scale, size=(R, 2))], 1)
    elif kind == 2:  # many RoIs on the same region: many RoIs per bin in the backward
        R = int(rng.integers(10, 40))
        p = np.tile(rng.uniform(0, 0.5, size=(1, 4)) * span + [0, 0, W / 2 / scale, H / 2 / scale],
                    (R, 1))
        p += rng.integers(-1, 2, size=(R, 4)) / scale
    else:  # x * scale on k + 0.5 (C rounding), x2 == x1
        p = np.round(rng.uniform(-0.2, 1.2, size=(R, 4)) * span * 2 * scale) / (2 * scale)
        p[:, 2] = np.where(rng.random(R) < 0.3, p[:, 0], p[:, 2])
    b = rng.integers(0, B, size=(R, 1)) + rng.choice([0.0, 0.25, 0.9], size=(R, 1))  # truncated
    rois = np.concatenate([b, p], 1)
    return torch.tensor(x, dtype=dtype), rois, (ph, pw), scale


ROI_DTYPES = [  # (features, rois): float32 rois with every feature dtype, as under autocast
    (torch.float32, torch.float32), (torch.float64, torch.float64),
    (torch.float16, torch.float32), (torch.bfloat16, torch.float32)]


@pytest.mark.parametrize("dtype,roi_dtype", ROI_DTYPES)
def test_roi_pool_emulated_cuda_equals_cpu(dtype, roi_dtype):
    rng = np.random.default_rng(100 + ROI_DTYPES.index((dtype, roi_dtype)))
    for case in range(ncases(60)):  # 4 dtype pairs x 60 = 240 cases, forward and backward
        x, rois_np, (ph, pw), scale = roi_case(rng, dtype)
        rois = torch.tensor(rois_np, dtype=roi_dtype)
        out, arg = K.roi_pool(x, rois, scale, ph, pw)
        want_out, want_arg = cpu_roi_pool(x, rois, scale, ph, pw)
        assert out.dtype == dtype and arg.dtype == torch.int32
        assert torch.equal(arg, want_arg), case
        assert torch.equal(out, want_out), case
        g = torch.tensor(rng.integers(-8, 9, size=out.shape) / 4, dtype=dtype)  # dyadic
        got = K.roi_pool_backward(g, rois, arg, scale, ph, pw, *x.shape)
        want = cpu_roi_pool_backward(g, rois, want_arg, scale, ph, pw, x.shape)
        assert got.dtype == dtype and torch.equal(got, want), case


def test_roi_pool_backward_random_gradients_float32():
    # Arbitrary float32 gradients: the emulator adds in thread order, as the CPU in RoI order.
    rng = np.random.default_rng(7)
    for case in range(20):
        x, rois_np, (ph, pw), scale = roi_case(rng, torch.float32)
        rois = torch.tensor(rois_np, dtype=torch.float32)
        out, arg = K.roi_pool(x, rois, scale, ph, pw)
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(case))
        got = K.roi_pool_backward(g, rois, arg, scale, ph, pw, *x.shape)
        want = torch.ops.frcnn.roi_pool_backward(g, rois, arg, scale, ph, pw, *x.shape)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("feat,roi", [(torch.float64, torch.float32), (torch.float32, torch.float64)])
def test_roi_pool_mixed_dtypes_equal_cpu(feat, roi):
    if not _cpu_accepts(feat, roi):
        pytest.skip("this build's CPU roi_pool predates the RoI contract's mixed dtypes")
    rng = np.random.default_rng(200)
    for case in range(30):
        x, rois_np, (ph, pw), scale = roi_case(rng, feat)
        rois = torch.tensor(rois_np, dtype=roi)
        out, arg = K.roi_pool(x, rois, scale, ph, pw)
        want_out, want_arg = torch.ops.frcnn.roi_pool(x, rois, scale, ph, pw)
        assert torch.equal(arg, want_arg) and torch.equal(out, want_out), case


def test_roi_pool_bins_follow_the_roi_dtype_not_the_features():
    # Contract: coordinates in float64 when the rois are float64, else float32, whatever the
    # features. So the argmax (the bins) of float32 and float64 features must agree, per roi
    # dtype; and half/bf16 rois (features' dtype) are read as float32.
    rng = np.random.default_rng(300)
    for case in range(40):
        x, rois_np, (ph, pw), scale = roi_case(rng, torch.float64)
        x = x.float().double()  # representable in float32: the same argmax in both dtypes
        for rd in (torch.float32, torch.float64):
            rois = torch.tensor(rois_np, dtype=rd)
            a32 = K.roi_pool(x.float(), rois, scale, ph, pw)[1]
            a64 = K.roi_pool(x, rois, scale, ph, pw)[1]
            assert torch.equal(a32, a64), (case, rd)
        xh = x.half()
        rh = torch.tensor(rois_np, dtype=torch.float16)
        assert torch.equal(K.roi_pool(xh, rh, scale, ph, pw)[1],
                           K.roi_pool(xh, rh.float(), scale, ph, pw)[1])


def test_roi_pool_float32_rois_keep_half_pixel_steps_above_512():
    # Under fp16 autocast the RoIs stay float32: 600.75 would be 601.0 in half, and
    # round(600.75 * 0.5) = 300 but round(601 * 0.5) = 301.
    x = torch.arange(400.0).reshape(1, 1, 1, 400).half()
    rois = torch.tensor([[0, 600.75, 0, 600.75, 0]])
    _, arg32 = K.roi_pool(x, rois, 0.5, 1, 1)
    _, arg16 = K.roi_pool(x, rois.half(), 0.5, 1, 1)
    assert arg32.item() == 300 and arg16.item() == 301


# ------------------------------------------------------------------- RoI contract (errors)
def _pool_inputs(B=2):
    x = torch.randn(B, 3, 8, 9)
    rois = torch.tensor([[0, 0, 0, 20, 20], [1, 4, 4, 30, 30], [0, 8, 0, 16, 9.0]])
    return x, rois


@pytest.mark.parametrize("bad,msg", [
    (2.0, r"frcnn::roi_pool: roi 1 has batch index 2 outside \[0, 2\)"),
    (-1.0, r"frcnn::roi_pool: roi 1 has batch index -1 outside \[0, 2\)"),
    (1e9, r"frcnn::roi_pool: roi 1 has batch index 1e\+09 outside \[0, 2\)"),
    (float("nan"), r"frcnn::roi_pool: roi 1 has a non-finite coordinate"),
    (float("inf"), r"frcnn::roi_pool: roi 1 has a non-finite coordinate"),
])
def test_roi_pool_bad_batch_index_is_an_error(bad, msg):
    x, rois = _pool_inputs()
    rois[1, 0] = bad
    for rd in (torch.float32, torch.float64):
        with pytest.raises(RuntimeError, match=msg):
            K.roi_pool(x, rois.to(rd), 0.5, 2, 2)


@pytest.mark.parametrize("row,col,bad", [(1, 0, 2.0), (2, 0, -1.0), (1, 0, float("nan")),
                                          (0, 3, float("inf")), (2, 1, float("-inf"))])
def test_bad_roi_error_is_identical_on_cpu(row, col, bad):
    # One defined behaviour for CPU and CUDA (the RoI contract): the same message.
    x, rois = _pool_inputs()
    rois[row, col] = bad
    with pytest.raises(RuntimeError) as cuda_err:
        K.roi_pool(x, rois, 0.5, 2, 2)
    try:
        torch.ops.frcnn.roi_pool(x, rois, 0.5, 2, 2)
        cpu_msg = "(no error)"
    except RuntimeError as e:
        cpu_msg = str(e).splitlines()[0]
    if "has batch index" not in cpu_msg and "non-finite" not in cpu_msg:
        pytest.skip(f"this build's CPU roi_pool predates the RoI contract: {cpu_msg!r}")
    assert str(cuda_err.value).splitlines()[0] == cpu_msg


def test_roi_pool_batch_index_truncates_toward_zero():
    x, rois = _pool_inputs()
    ok = rois.clone()
    ok[1, 0] = 1.9  # -> 1
    ok[2, 0] = -0.5  # -> 0
    ref = rois.clone()
    ref[1, 0], ref[2, 0] = 1, 0
    assert torch.equal(K.roi_pool(x, ok, 0.5, 2, 2)[1], K.roi_pool(x, ref, 0.5, 2, 2)[1])


def test_roi_pool_non_finite_coordinate_is_an_error():
    x, rois = _pool_inputs()
    rois[2, 3] = float("-inf")
    with pytest.raises(RuntimeError, match=r"roi 2 has a non-finite coordinate"):
        K.roi_pool(x, rois, 0.5, 2, 2)


def test_roi_pool_backward_checks_rois_and_argmax():
    x, rois = _pool_inputs()
    out, arg = K.roi_pool(x, rois, 0.5, 2, 2)
    g = torch.ones_like(out)
    args = (0.5, 2, 2) + tuple(x.shape)
    bad = rois.clone()
    bad[0, 0] = 5
    with pytest.raises(RuntimeError, match=r"frcnn::roi_pool_backward: roi 0 has batch index 5"):
        K.roi_pool_backward(g, bad, arg, *args)
    for v in (72, 1000, -2):  # H * W = 72
        a = arg.clone()
        a[1, 2, 1, 0] = v
        with pytest.raises(RuntimeError, match=rf"argmax value {v} at flat index 22 is outside \[-1, 72\)"):
            K.roi_pool_backward(g, rois, a, *args)
    with pytest.raises(RuntimeError, match="argmax must be int32"):
        K.roi_pool_backward(g, rois, arg.long(), *args)


def test_roi_pool_backward_same_device_check():
    # A CPU argmax with CUDA grad would hand the kernel a host pointer: the glue refuses mixed
    # devices. On the emulator (CPU tensors) the odd one out is a meta tensor.
    x, rois = _pool_inputs()
    out, arg = K.roi_pool(x, rois, 0.5, 2, 2)
    g = torch.ones_like(out)
    args = (0.5, 2, 2) + tuple(x.shape)
    if TARGET == "emu":
        bwd, fwd, dev, other = EMU.roi_pool_backward, EMU.roi_pool, (lambda t: t), "meta"
    else:
        bwd, fwd, dev, other = (torch.ops.frcnn.roi_pool_backward, torch.ops.frcnn.roi_pool,
                                (lambda t: t.cuda()), "cpu")
    msg = f"grad, rois and argmax must be on the same {DEVICE_WORD} device"
    with pytest.raises(RuntimeError, match=msg):
        bwd(dev(g), dev(rois), arg.to(other), *args)
    with pytest.raises(RuntimeError, match=msg):
        bwd(dev(g), rois.to(other), dev(arg), *args)
    with pytest.raises(RuntimeError, match=f"input and rois must be on the same {DEVICE_WORD} device"):
        fwd(dev(x), rois.to(other), 0.5, 2, 2)


def test_roi_pool_backward_honours_deterministic_algorithms(capfd):
    x, rois = _pool_inputs()
    out, arg = K.roi_pool(x, rois, 0.5, 2, 2)
    args = (0.5, 2, 2) + tuple(x.shape)
    before = torch.are_deterministic_algorithms_enabled()
    warn_before = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        with pytest.raises(RuntimeError, match=r"roi_pool_backward \(CUDA\) does not have a "
                                               "deterministic implementation"):
            K.roi_pool_backward(torch.ones_like(out), rois, arg, *args)
        torch.use_deterministic_algorithms(True, warn_only=True)
        capfd.readouterr()
        K.roi_pool_backward(torch.ones_like(out), rois, arg, *args)  # warns (c10 -> stderr)
        assert "does not have a deterministic implementation" in capfd.readouterr().err
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_before)
    K.roi_pool_backward(torch.ones_like(out), rois, arg, *args)  # fine when off


def test_roi_pool_dtype_errors():
    x, rois = _pool_inputs()
    with pytest.raises(RuntimeError, match="rois must be float32 or float64"):
        K.roi_pool(x, rois.half(), 0.5, 2, 2)  # half rois only with half features
    with pytest.raises(RuntimeError, match="features must be float32, float64, float16 or bfloat16"):
        K.roi_pool(x.int(), rois, 0.5, 2, 2)


# ------------------------------------------------------------------- the emulator itself
@emu_only
def test_emulator_runs_every_thread_of_every_block():
    assert EMU.selftest("count", [3, 2, 2], [4, 3, 2], 0, 1).item() == 3 * 2 * 2 * 4 * 3 * 2
    ids = EMU.selftest("index", [3, 2, 2], [4, 3, 2], 0, 288)
    assert torch.equal(ids, torch.arange(288, dtype=torch.int32))


@emu_only
@pytest.mark.parametrize("mode", ["fibers", "threads"])
def test_emulator_shared_memory_and_barrier(mode):
    EMU.set_mode(mode)
    try:
        out = EMU.selftest("reverse", [3, 1, 1], [64, 1, 1], 0, 192)
        assert torch.equal(out, torch.arange(63, -1, -1, dtype=torch.int32).repeat(3))
    finally:
        EMU.set_mode("fibers")


@emu_only
def test_emulator_dynamic_shared_memory_is_garbage():
    assert EMU.selftest("garbage", [1, 1, 1], [16, 1, 1], 16, 16).tolist() == [0xA5] * 16


@emu_only
@pytest.mark.parametrize("mode", ["fibers", "threads"])
def test_emulator_reports_divergent_barrier(mode):
    EMU.set_mode(mode)
    try:
        with pytest.raises(RuntimeError, match=r"__syncthreads reached from different source lines"):
            EMU.selftest("diverge", [1, 1, 1], [8, 1, 1], 0, 8)
    finally:
        EMU.set_mode("fibers")


@emu_only
@pytest.mark.parametrize("grid,block,shared,msg", [
    ([1, 1, 1], [1025, 1, 1], 0, r"1025 threads, CUDA allows at most 1024"),
    ([1, 1, 1], [32, 32, 2], 0, r"2048 threads"),
    ([1, 65536, 1], [1, 1, 1], 0, r"grid.y and grid.z <= 65535"),
    ([1, 1, 65536], [1, 1, 1], 0, r"grid.y and grid.z <= 65535"),
    ([1, 1, 1], [1, 1, 1], 48 * 1024 + 1, r"49153 bytes of dynamic shared memory"),
    ([0, 1, 1], [1, 1, 1], 0, r"zero grid or block dimension"),
])
def test_emulator_launch_limits(grid, block, shared, msg):
    with pytest.raises(RuntimeError, match=msg):
        EMU.selftest("count", grid, block, shared, 1)
    # the error was consumed: the next launch is fine
    assert EMU.selftest("count", [1, 1, 1], [2, 1, 1], 0, 1).item() == 2

