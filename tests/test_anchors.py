import numpy as np
import torch

from frcnn.rpn.generate_anchors import generate_anchors, shifted_anchors

REFERENCE = np.array([
    [-84, -40, 99, 55], [-176, -88, 191, 103], [-360, -184, 375, 199],
    [-56, -56, 71, 71], [-120, -120, 135, 135], [-248, -248, 263, 263],
    [-36, -80, 51, 95], [-80, -168, 95, 183], [-168, -344, 183, 359]], dtype=np.float64)


def test_reference_anchors():
    a = generate_anchors()
    assert a.shape == (9, 4)
    np.testing.assert_array_equal(a, REFERENCE)
    np.testing.assert_array_equal(generate_anchors(16, (0.5, 1, 2), (8, 16, 32)), REFERENCE)


def test_single_scale_ratio():
    np.testing.assert_array_equal(generate_anchors(16, (1,), (1,)), [[0, 0, 15, 15]])


def test_shifted_order_h_w_a():
    H, W = 3, 4
    s = shifted_anchors(H, W, 16, REFERENCE)
    assert s.shape == (H * W * 9, 4) and s.dtype == torch.float32
    s = s.view(H, W, 9, 4)
    for y in range(H):
        for x in range(W):
            exp = REFERENCE + 16 * np.array([x, y, x, y])
            np.testing.assert_array_equal(s[y, x].numpy(), exp)
