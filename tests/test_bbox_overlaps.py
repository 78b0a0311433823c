"""frcnn.utils.cython_bbox.bbox_overlaps and frcnn.ops.box_iou against the oracle."""
import numpy as np
import pytest
import torch

from frcnn.ops import box_iou
from frcnn.ops.reference import bbox_overlaps_reference
from frcnn.utils.cython_bbox import bbox_overlaps


def random_boxes(rng, n):
    xy = rng.uniform(-20, 200, size=(n, 2))
    wh = rng.uniform(0, 80, size=(n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    kind = rng.random(n)
    boxes[kind < 0.1, 2] = boxes[kind < 0.1, 0]          # zero width
    boxes[(kind >= 0.1) & (kind < 0.15), 3] -= 100        # negative height
    boxes[(kind >= 0.15) & (kind < 0.3)] = np.round(boxes[(kind >= 0.15) & (kind < 0.3)])
    return boxes


def test_bbox_overlaps_matches_reference_random():
    rng = np.random.default_rng(2015)
    for case in range(2000):
        n, k = int(rng.integers(0, 30)), int(rng.integers(0, 8))
        boxes, query = random_boxes(rng, n), random_boxes(rng, k)
        if k and rng.random() < 0.3:  # exact copies: IoU 1
            boxes[: min(n, k)] = query[: min(n, k)]
        offset = int(rng.integers(0, 2))
        got = bbox_overlaps(boxes, query, offset)
        want = bbox_overlaps_reference(boxes, query, offset)
        assert got.shape == (n, k) and got.dtype == np.float64
        np.testing.assert_array_equal(got, want, err_msg=f"case {case}")
        assert not np.isnan(got).any()
        # The torch version agrees (float64, same formula up to rounding).
        t = box_iou(torch.from_numpy(boxes), torch.from_numpy(query), offset).numpy()
        np.testing.assert_allclose(t, want, rtol=1e-12, atol=1e-12)


def test_bbox_overlaps_default_offset_is_one():
    a = np.array([[0, 0, 9, 9]], dtype=np.float64)      # 10x10 with +1
    b = np.array([[5, 0, 14, 9]], dtype=np.float64)
    assert bbox_overlaps(a, b)[0, 0] == pytest.approx(50 / 150)
    assert bbox_overlaps(a, b, offset=0)[0, 0] == pytest.approx(36 / 126)


def test_bbox_overlaps_empty_degenerate_and_dtypes():
    assert bbox_overlaps(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)
    assert bbox_overlaps(np.zeros((2, 4)), np.zeros((0, 4))).shape == (2, 0)
    pt = np.array([[3, 3, 3, 3.0]])
    assert bbox_overlaps(pt, pt, offset=0)[0, 0] == 0.0  # zero union -> 0, not NaN
    assert bbox_overlaps(pt, pt, offset=1)[0, 0] == 1.0
    f32 = np.array([[0, 0, 9, 9]], dtype=np.float32)  # converted, not rejected
    assert bbox_overlaps(f32, f32[:, ::-1][:, ::-1])[0, 0] == 1.0
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        bbox_overlaps(np.zeros((2, 5)), np.zeros((2, 4)))


def test_box_iou_float32_and_device_agnostic():
    a = torch.tensor([[0, 0, 9, 9], [3, 3, 3, 3.0]])
    iou = box_iou(a, a, offset=0)
    assert not torch.isnan(iou).any() and iou[1, 1] == 0
    assert box_iou(a, a)[0, 0] == 1.0
    assert box_iou(a, torch.zeros(0, 4)).shape == (2, 0)
