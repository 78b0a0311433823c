"""roidb: flips, derived fields, filtering, proposal merging, bbox regression stats."""
import numpy as np
import pytest

from frcnn.config import get_default_cfg
from frcnn.datasets import DatasetError
from frcnn.roi_data.roidb import (add_bbox_regression_stats, append_flipped, filter_roidb,
                                  get_training_roidb, merge_proposals, prepare_roidb)


def entry(index, boxes, classes, w=100, h=80, k=3):
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    classes = np.array(classes, np.int32)
    ov = np.zeros((len(boxes), k), np.float32)
    ov[np.arange(len(boxes)), classes] = 1
    return {"index": index, "image": f"/nonexistent/{index}.jpg", "width": w, "height": h,
            "boxes": boxes, "gt_classes": classes, "gt_overlaps": ov, "flipped": False}


class FakeImdb:
    def __init__(self, roidb):
        self.roidb = roidb
        self.num_classes = 3


def test_flip():
    r = append_flipped([entry("a", [[0, 5, 9, 20], [50, 0, 99, 79]], [1, 2])])
    assert len(r) == 2 and r[1]["flipped"] and not r[0]["flipped"]
    np.testing.assert_array_equal(r[1]["boxes"], [[90, 5, 99, 20], [0, 0, 49, 79]])  # W - x - 1
    np.testing.assert_array_equal(r[0]["boxes"], [[0, 5, 9, 20], [50, 0, 99, 79]])  # untouched
    assert np.array_equal(append_flipped([r[1]])[1]["boxes"], r[0]["boxes"])


def test_get_training_roidb():
    cfg = get_default_cfg()
    imdb = FakeImdb([entry("a", [[0, 5, 9, 20]], [1]), entry("b", [[1, 1, 5, 5]], [2])])
    r = get_training_roidb(imdb, cfg)
    assert [(e["index"], e["flipped"]) for e in r] == [("a", False), ("b", False), ("a", True),
                                                         ("b", True)]
    np.testing.assert_array_equal(r[0]["max_overlaps"], [1])
    np.testing.assert_array_equal(r[1]["max_classes"], [2])
    assert "max_overlaps" not in imdb.roidb[0]  # the imdb's roidb is left alone
    cfg.TRAIN.USE_FLIPPED = False
    assert len(get_training_roidb(imdb, cfg)) == 2


def test_filter_roidb():
    cfg = get_default_cfg()
    r = prepare_roidb([entry("a", [[0, 5, 9, 20]], [1]), entry("empty", [], [])])
    assert [e["index"] for e in filter_roidb(r, cfg)] == ["a"]
    with pytest.raises(DatasetError):
        filter_roidb([r[1]], cfg)


def test_merge_proposals_and_flips():
    gt = [[10, 10, 29, 29]]
    r = prepare_roidb(append_flipped([entry("a", gt, [2]), entry("b", [[0, 0, 9, 9]], [1])]))
    props = [np.array([[10, 10, 29, 39, 0.9], [60, 60, 70, 70, 0.5]], np.float32),
             np.zeros((0, 4), np.float32)]
    m = merge_proposals(r, props)
    a, af = m[0], m[2]
    np.testing.assert_array_equal(a["boxes"], [[10, 10, 29, 29], [10, 10, 29, 39], [60, 60, 70, 70]])
    np.testing.assert_array_equal(a["gt_classes"], [2, 0, 0])
    # IoU with +1: 400 / 600
    np.testing.assert_allclose(a["gt_overlaps"][1], [0, 0, 400 / 600], rtol=1e-6)
    np.testing.assert_allclose(a["max_overlaps"], [1, 400 / 600, 0], rtol=1e-6)
    np.testing.assert_array_equal(a["max_classes"], [2, 2, 0])
    # flipped entry: mirrored gt and proposals, same overlaps
    np.testing.assert_array_equal(af["boxes"][1:], [[70, 10, 89, 39], [29, 60, 39, 70]])
    np.testing.assert_allclose(af["max_overlaps"], a["max_overlaps"])
    assert len(m[1]["boxes"]) == 1
    # merging again replaces the proposals; a dict by image index works too
    m2 = merge_proposals(m, {"a": props[0][:1], "b": props[1]})
    assert len(m2[0]["boxes"]) == 2 and len(m2[2]["boxes"]) == 2
    with pytest.raises(ValueError, match="proposal arrays"):
        merge_proposals(r, props[:1])


def _transform(ex, gt):
    ew, eh = ex[2] - ex[0] + 1, ex[3] - ex[1] + 1
    gw, gh = gt[2] - gt[0] + 1, gt[3] - gt[1] + 1
    return np.array([(gt[0] + 0.5 * gw - ex[0] - 0.5 * ew) / ew, (gt[1] + 0.5 * gh - ex[1] - 0.5 * eh) / eh,
                     np.log(gw / ew), np.log(gh / eh)])


def test_bbox_regression_stats():
    cfg = get_default_cfg()
    gt = np.array([10, 10, 29, 29.0])
    p1 = np.array([10, 10, 29, 39.0])   # IoU 0.667 -> counted
    p2 = np.array([12, 8, 33, 27.0])    # IoU 324/516 = 0.63 -> counted
    p3 = np.array([10, 10, 29, 60.0])   # IoU 0.39 -> below BBOX_THRESH
    r = prepare_roidb([entry("a", [gt], [1])])
    r = merge_proposals(r, [np.stack([p1, p2, p3])])
    means, stds = add_bbox_regression_stats(r, 3, cfg)
    t = np.stack([np.zeros(4), _transform(p1, gt), _transform(p2, gt)])  # gt itself: target 0
    np.testing.assert_allclose(means[1], t.mean(0), atol=1e-12)
    np.testing.assert_allclose(stds[1], t.std(0), atol=1e-7)
    # classes with no RoI (background, class 2) fall back to the cfg values
    np.testing.assert_allclose(means[[0, 2]], 0)
    np.testing.assert_allclose(stds[[0, 2]], [[0.1, 0.1, 0.2, 0.2]] * 2)
    assert means.shape == stds.shape == (3, 4)
    cfg.TRAIN.BBOX_NORMALIZE_TARGETS_PRECOMPUTED = True
    m, s = add_bbox_regression_stats(r, 3, cfg)
    np.testing.assert_allclose(s, np.tile([0.1, 0.1, 0.2, 0.2], (3, 1)))
    np.testing.assert_allclose(m, 0)
    cfg.TRAIN.BBOX_NORMALIZE_TARGETS = False
    m, s = add_bbox_regression_stats(r, 3, cfg)
    np.testing.assert_allclose(s, 1)


def test_bbox_transform_matches_detector():
    from frcnn.roi_data.roidb import _bbox_transform

    ex = np.array([[10, 10, 29, 39.0], [0, 0, 5, 7]])
    gt = np.array([[10, 10, 29, 29.0], [1, 2, 9, 9]])
    np.testing.assert_allclose(_bbox_transform(ex, gt), [_transform(e, g) for e, g in zip(ex, gt)])
