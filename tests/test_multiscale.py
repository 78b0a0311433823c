"""Multi-scale testing of Fast R-CNN on external proposals: the RoI -> pyramid level mapping
(py-faster-rcnn's _project_im_rois) and im_detect over the pyramid."""
import numpy as np
import pytest
import torch

from frcnn.config import get_default_cfg
from frcnn.fast_rcnn.test import get_pyramid_blob, im_detect, project_im_rois
from frcnn.models import build_model


def test_project_hand_worked():
    scales = np.array([0.5, 1.0, 2.0])
    boxes = np.array([[0, 0, 223, 223],     # area 224^2 -> level 1 (x1.0): exactly 224^2
                      [10, 10, 121, 121],   # 112^2: x0.5 3136, x1 12544, x2 50176 -> level 2
                      [0, 0, 447, 447],     # 448^2 -> level 0 (x0.5 = 224^2)
                      [0, 0, 299, 99],      # 30000: 7500, 30000, 120000 -> |.-50176| min at 1
                      [0, 0, 0, 0]])        # 1 px -> the largest scale
    rois, levels = project_im_rois(boxes, scales)
    assert levels.tolist() == [1, 2, 0, 1, 2]
    np.testing.assert_allclose(rois, boxes * scales[levels][:, None])
    rois1, lv1 = project_im_rois(boxes, [0.8])
    assert lv1.tolist() == [0] * 5 and np.allclose(rois1, boxes * 0.8)
    assert project_im_rois(np.zeros((0, 4)), scales)[0].shape == (0, 4)


def test_pyramid_blob():
    cfg = get_default_cfg()
    cfg.TEST.SCALES, cfg.TEST.MAX_SIZE = (100, 200, 300), 500
    im = np.zeros((50, 120, 3), np.uint8)
    blob, info, scales = get_pyramid_blob(im, cfg)
    np.testing.assert_allclose(scales, [2.0, 4.0, 500 / 120])  # 300 capped by MAX_SIZE
    assert tuple(blob.shape) == (3, 3, 208, 500)
    np.testing.assert_allclose(info[:, :2].numpy(), [[100, 240], [200, 480], [208, 500]])


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    cfg = get_default_cfg()
    cfg.TEST.MAX_SIZE = 2000
    model = build_model("TINY", 4, cfg, parts=("head",), pretrained=False).eval()
    with torch.no_grad():  # non-trivial regression outputs
        model.head.bbox_pred.weight.normal_(0, 0.05)
    rng = np.random.default_rng(0)
    im = rng.integers(0, 255, size=(96, 128, 3), dtype=np.uint8)
    return model, cfg, im


def _cfg(cfg, scales):
    c = get_default_cfg()
    c.TEST.MAX_SIZE = cfg.TEST.MAX_SIZE
    c.TEST.SCALES = tuple(scales)
    return c


def test_pyramid_matches_single_scale_on_largest_level(net):
    model, cfg, im = net
    # small boxes: at scales (96, 192) -> x1 and x2, all map to the larger level (x2)
    boxes = np.array([[4, 4, 30, 40], [50, 20, 90, 60], [60, 10, 100, 50], [5, 50, 40, 90]],
                     np.float32)
    _, lv = project_im_rois(boxes, [1.0, 2.0])
    assert lv.tolist() == [1, 1, 1, 1]
    s_multi, b_multi = im_detect(model, im, _cfg(cfg, (96, 192)), boxes)
    s_one, b_one = im_detect(model, im, _cfg(cfg, (192,)), boxes)
    np.testing.assert_allclose(s_multi, s_one, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b_multi, b_one, rtol=1e-4, atol=1e-3)


def test_pyramid_mixed_levels_keep_row_order(net):
    model, cfg, im = net
    c = _cfg(cfg, (48, 96, 192))  # scales 0.5, 1, 2
    c.DEDUP_BOXES = 0  # rows 0 and 4 share a feature-map spot: keep both to compare row by row
    boxes = np.array([[0, 0, 127, 95],      # 12288 px: x0.5 3072, x1 12288, x2 49152 -> 2
                      [10, 10, 20, 25],     # tiny -> 2
                      [0, 0, 120, 90], [30, 30, 60, 70], [1, 2, 126, 94]], np.float32)
    big = np.array([[0, 0, 511, 383], [0, 0, 447, 447]], np.float32)  # only for levels 0 / 1
    allb = np.vstack([boxes, big])
    _, lv = project_im_rois(allb, [0.5, 1, 2])
    assert len(set(lv.tolist())) >= 2
    s, b = im_detect(model, im, c, allb)
    perm = np.random.default_rng(1).permutation(len(allb))
    s_p, b_p = im_detect(model, im, c, allb[perm])
    np.testing.assert_allclose(s_p, s[perm], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(b_p, b[perm], rtol=1e-4, atol=1e-3)
    # a RoI's result does not depend on the other RoIs (its own level, its own batch image)
    for i in range(len(allb)):
        s_i, b_i = im_detect(model, im, c, allb[i:i + 1])
        np.testing.assert_allclose(s_i[0], s[i], rtol=1e-4, atol=1e-6)
    # DEDUP_BOXES: RoIs on the same spot of the same level's feature map are computed once
    c.DEDUP_BOXES = 1.0 / 16
    s_d, _ = im_detect(model, im, c, allb)
    np.testing.assert_array_equal(s_d[4], s_d[0])      # same level 2 spot: one result
    # row 5 (level 0) hits the same feature-map spot as row 0 (level 2), on another level:
    # not merged (the reference's hash would merge them)
    np.testing.assert_allclose(s_d, s, rtol=1e-4, atol=1e-6)
    s_p, _ = im_detect(model, im, c, allb[perm])
    np.testing.assert_allclose(s_p, s[perm], rtol=1e-4, atol=1e-6)


def test_rpn_testing_stays_single_scale(net):
    model, cfg, im = net
    with pytest.raises(ValueError, match="single-scale"):
        im_detect(model, im, _cfg(cfg, (48, 96)))


def test_dedup_hash_keeps_levels_apart():
    from frcnn.fast_rcnn.test import _dedup

    boxes = np.array([[0, 0, 127, 95], [1, 2, 126, 94], [0, 0, 511, 383]], np.float64)
    levels = np.array([2, 2, 0])
    scales = np.array([0.5, 1, 2])[levels]
    index, inv = _dedup(boxes, scales, 1.0 / 16, levels)
    assert inv[0] == inv[1] != inv[2] and len(index) == 2
    # one scale: the reference's hash (level column 0)
    index, inv = _dedup(boxes[:2], 2.0, 1.0 / 16)
    assert len(index) == 1 and inv.tolist() == [0, 0]
