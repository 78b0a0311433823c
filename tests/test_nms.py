"""frcnn.ops.nms against the greedy oracle (frcnn.ops.reference.nms_reference)."""
import numpy as np
import pytest
import torch

from frcnn.ops import nms
from frcnn.ops.reference import nms_reference

CUDA = torch.cuda.is_available()


def random_case(rng, dtype):
    """Boxes like RPN output: clusters of jittered boxes, plus some degenerate and far ones."""
    n = int(rng.integers(0, 48))
    centres = rng.uniform(0, 200, size=(max(1, n // 8), 2))
    c = centres[rng.integers(0, len(centres), size=n)] + rng.normal(0, 6, size=(n, 2))
    wh = rng.uniform(1, 60, size=(n, 2))
    boxes = np.concatenate([c - wh / 2, c + wh / 2], axis=1)
    kind = rng.random(n)
    boxes[kind < 0.08, 2] = boxes[kind < 0.08, 0]                    # zero width (x2 == x1)
    boxes[(kind >= 0.08) & (kind < 0.12), 3] -= 80                   # y2 < y1: negative height
    boxes[(kind >= 0.12) & (kind < 0.15)] = np.round(boxes[(kind >= 0.12) & (kind < 0.15)])
    boxes[(kind >= 0.15) & (kind < 0.18)] -= 300                     # outside the map
    scores = rng.permutation(n).astype(np.float64) / max(n, 1) + rng.uniform(0, 1e-3)  # distinct
    thr = float(rng.choice([0.0, 0.3, 0.5, 0.7, 0.9, rng.uniform(0, 1)]))
    offset = int(rng.integers(0, 2))
    return (torch.tensor(boxes, dtype=dtype), torch.tensor(scores, dtype=dtype), thr, offset)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nms_matches_reference_random(dtype):
    rng = np.random.default_rng(20151 if dtype == torch.float32 else 20152)
    for case in range(1000):  # x2 dtypes = 2000 cases
        boxes, scores, thr, offset = random_case(rng, dtype)
        got = nms(boxes, scores, thr, offset)
        want = nms_reference(boxes, scores, thr, offset)
        assert got.dtype == torch.long
        assert torch.equal(got, want), (case, thr, offset)


def rpn_like(n, seed=0, dtype=torch.float32):
    """Decoded anchors of a 38x50 map: 9 anchors per cell, stride 16, small random deltas."""
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor([[-84, -40, 99, 55], [-176, -88, 191, 103], [-360, -184, 375, 199],
                         [-56, -56, 71, 71], [-120, -120, 135, 135], [-248, -248, 263, 263],
                         [-36, -80, 51, 95], [-80, -168, 95, 183], [-168, -344, 183, 359]],
                        dtype=torch.float64)
    ys, xs = torch.meshgrid(torch.arange(38) * 16.0, torch.arange(50) * 16.0, indexing="ij")
    shifts = torch.stack([xs, ys, xs, ys], -1).reshape(-1, 1, 4)
    anchors = (shifts + base).reshape(-1, 4)
    wh = anchors[:, 2:] - anchors[:, :2] + 1
    ctr = anchors[:, :2] + 0.5 * wh
    d = torch.randn(anchors.shape[0], 4, generator=g, dtype=torch.float64) * 0.1
    ctr = ctr + d[:, :2] * wh
    wh = wh * torch.exp(d[:, 2:])
    boxes = torch.cat([ctr - 0.5 * wh, ctr + 0.5 * wh], 1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, 799)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, 599)
    scores = torch.rand(anchors.shape[0], generator=g, dtype=torch.float64)
    top = scores.argsort(descending=True)[:n]
    return boxes[top].to(dtype), scores[top].to(dtype)


@pytest.mark.parametrize("thr", [0.7, 0.3])
def test_nms_rpn_scale(thr):
    boxes, scores = rpn_like(6000)
    got = nms(boxes, scores, thr)
    assert torch.equal(got, nms_reference(boxes, scores, thr))
    assert 0 < len(got) < 6000


def test_nms_empty_and_single():
    for dtype in (torch.float32, torch.float64):
        keep = nms(torch.zeros(0, 4, dtype=dtype), torch.zeros(0, dtype=dtype), 0.5)
        assert keep.shape == (0,) and keep.dtype == torch.long
        keep = nms(torch.tensor([[0, 0, 5, 5]], dtype=dtype), torch.tensor([1.0], dtype=dtype), 0.5)
        assert keep.tolist() == [0]


def test_nms_ties_are_stable():
    boxes = torch.tensor([[0, 0, 10, 10], [100, 100, 110, 110], [0, 0, 10, 10], [1, 1, 10, 10.0]])
    scores = torch.tensor([0.5, 0.5, 0.5, 0.9])
    got = nms(boxes, scores, 0.5)
    assert got.tolist() == [3, 1] == nms_reference(boxes, scores, 0.5).tolist()
    assert nms(boxes, scores, 1.0).tolist() == [3, 0, 1, 2]


def test_nms_degenerate_no_nan():
    # Identical zero-area boxes: with offset 0 the union is 0 -> IoU 0, nothing suppressed.
    boxes = torch.tensor([[5, 5, 5, 5], [5, 5, 5, 5], [5, 5, 5, 9.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms(boxes, scores, 0.5, offset=0).tolist() == [0, 1, 2]
    # With offset 1 they are 1x1 boxes and suppress each other.
    assert nms(boxes, scores, 0.5, offset=1).tolist() == [0, 2]


def test_nms_threshold_is_strict():
    # IoU exactly 0.5 (offset 0): kept at 0.5 (suppress only when > thr), suppressed below.
    boxes = torch.tensor([[0, 0, 2, 1], [0, 0, 1, 1.0]], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.8], dtype=torch.float64)
    assert nms(boxes, scores, 0.5, offset=0).tolist() == [0, 1]
    assert nms(boxes, scores, 0.49, offset=0).tolist() == [0]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_nms_reduced_precision_runs_in_float32(dtype):
    # bf16/half boxes or scores (autocast) are upcast to float32 (exact), so the result is the
    # oracle's on the upcast values; mixed float32 boxes / reduced scores too.
    rng = np.random.default_rng(5)
    for case in range(120):
        boxes, scores, thr, offset = random_case(rng, torch.float32)
        b, s = boxes.to(dtype), scores.to(dtype)
        want = nms_reference(b.float(), s.float(), thr, offset)
        assert torch.equal(nms(b, s, thr, offset), want), case
        assert torch.equal(torch.ops.frcnn.nms(b, s, thr, offset), want), case
        want = nms_reference(boxes, s.float(), thr, offset)
        assert torch.equal(nms(boxes, s, thr, offset), want), case


def test_nms_bad_input():
    with pytest.raises(RuntimeError, match="boxes must be"):
        nms(torch.zeros(3, 5), torch.zeros(3), 0.5)
    with pytest.raises(RuntimeError, match="scores must be"):
        nms(torch.zeros(3, 4), torch.zeros(4), 0.5)


@pytest.mark.skipif(not CUDA, reason="no GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nms_cuda_matches_cpu(dtype):
    rng = np.random.default_rng(7)
    for _ in range(500):
        boxes, scores, thr, offset = random_case(rng, dtype)
        assert torch.equal(nms(boxes.cuda(), scores.cuda(), thr, offset).cpu(),
                           nms(boxes, scores, thr, offset))
    for n in (6000, 12000):
        boxes, scores = rpn_like(n, dtype=dtype)
        assert torch.equal(nms(boxes.cuda(), scores.cuda(), 0.7).cpu(), nms(boxes, scores, 0.7))
