"""VOC AP with the reference semantics, on hand-computed cases."""
import os

import numpy as np
import pytest

from frcnn.datasets.voc_eval import voc_ap, voc_eval, write_voc_results_file


def _write_xml(path, objects):
    """objects: (name, (xmin, ymin, xmax, ymax) 1-based, difficult)."""
    objs = "".join(
        f"<object><name>{n}</name><difficult>{int(d)}</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d in objects)
    with open(path, "w") as f:
        f.write(f"<annotation><size><width>100</width><height>100</height></size>{objs}</annotation>")


def _setup(tmp_path, gts, dets, cls="dog"):
    """gts: {image: [(name, box1based, difficult)]}; dets: [(image, score, box1based)]."""
    (tmp_path / "ann").mkdir(exist_ok=True)
    for im, objs in gts.items():
        _write_xml(tmp_path / "ann" / f"{im}.xml", objs)
    (tmp_path / "set.txt").write_text("".join(f"{im}\n" for im in gts))
    with open(tmp_path / f"det_{cls}.txt", "w") as f:
        for im, s, b in dets:
            f.write(f"{im} {s:.3f} {b[0]:.1f} {b[1]:.1f} {b[2]:.1f} {b[3]:.1f}\n")
    return (str(tmp_path / "det_{}.txt"), str(tmp_path / "ann" / "{}.xml"), str(tmp_path / "set.txt"))


def _eval(tmp_path, gts, dets, use_07=True, cls="dog"):
    d, a, s = _setup(tmp_path, gts, dets, cls)
    return voc_eval(d, a, s, cls, str(tmp_path / "cache"), 0.5, use_07)


B1, B2 = (11, 11, 50, 50), (60, 60, 90, 95)


@pytest.mark.parametrize("use_07", [True, False])
def test_perfect(tmp_path, use_07):
    gts = {"a": [("dog", B1, 0), ("cat", B2, 0)], "b": [("dog", B2, 0)]}
    rec, prec, ap = _eval(tmp_path, gts, [("a", 0.9, B1), ("b", 0.8, B2)], use_07)
    assert ap == pytest.approx(1.0)
    np.testing.assert_allclose(rec, [0.5, 1.0])
    np.testing.assert_allclose(prec, [1.0, 1.0])


@pytest.mark.parametrize("use_07", [True, False])
def test_fp_above_tp(tmp_path, use_07):
    gts = {"a": [("dog", B1, 0)]}
    rec, prec, ap = _eval(tmp_path, gts, [("a", 0.9, B2), ("a", 0.8, B1)], use_07)
    np.testing.assert_allclose(rec, [0.0, 1.0])
    np.testing.assert_allclose(prec, [0.0, 0.5])
    assert ap == pytest.approx(0.5)  # 11 x 0.5 / 11; area 1 x 0.5


def test_difficult_neither_tp_nor_fp(tmp_path):
    gts = {"a": [("dog", B1, 0), ("dog", B2, 1)]}
    rec, prec, ap = _eval(tmp_path, gts, [("a", 0.9, B2), ("a", 0.8, B1)])
    np.testing.assert_allclose(rec, [0.0, 1.0])  # npos = 1: the difficult gt does not count
    np.testing.assert_allclose(prec, [0.0, 1.0])  # and its match is not a FP
    assert ap == pytest.approx(1.0)
    # the same detection without the difficult flag would be a TP and recall would need both
    rec, prec, ap = _eval(tmp_path, {"a": [("dog", B1, 0), ("dog", B2, 0)]},
                          [("a", 0.9, B2), ("a", 0.8, B1)])
    np.testing.assert_allclose(rec, [0.5, 1.0])


def test_duplicates_and_07_vs_area(tmp_path):
    gts = {"a": [("dog", B1, 0), ("dog", B2, 0)]}
    dets = [("a", 0.9, B1), ("a", 0.8, B1), ("a", 0.7, B2)]
    rec, prec, ap07 = _eval(tmp_path, gts, dets, True)
    np.testing.assert_allclose(rec, [0.5, 0.5, 1.0])
    np.testing.assert_allclose(prec, [1.0, 0.5, 2.0 / 3.0])
    assert ap07 == pytest.approx((6 * 1.0 + 5 * 2.0 / 3.0) / 11)  # 0.8485
    _, _, ap_area = _eval(tmp_path, gts, dets, False)
    assert ap_area == pytest.approx(0.5 * 1.0 + 0.5 * 2.0 / 3.0)  # 0.8333
    assert ap07 != pytest.approx(ap_area)


def test_iou_strictly_above_half_with_plus_one(tmp_path):
    gts = {"a": [("dog", (1, 1, 10, 10), 0)]}
    # +1 areas: gt 100 px, det 200 px, intersection 100 -> IoU exactly 0.5 -> not a match
    _, _, ap = _eval(tmp_path, gts, [("a", 0.9, (1, 1, 10, 20))])
    assert ap == 0.0
    _, _, ap = _eval(tmp_path, gts, [("a", 0.9, (1, 1, 10, 19))])  # 100 / 190 > 0.5
    assert ap == pytest.approx(1.0)


def test_no_detections_and_no_gt(tmp_path):
    _, _, ap = _eval(tmp_path, {"a": [("dog", B1, 0)]}, [])
    assert ap == 0.0
    _, _, ap = _eval(tmp_path, {"a": [("cat", B1, 0)]}, [("a", 0.5, B1)])
    assert np.isnan(ap)  # no positives: undefined, left out of the mean


def test_voc_ap_direct():
    rec, prec = np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])
    assert voc_ap(rec, prec, True) == pytest.approx(0.848484848)
    assert voc_ap(rec, prec, False) == pytest.approx(0.833333333)
    assert voc_ap(np.array([0.4]), np.array([1.0]), True) == pytest.approx(5 / 11)


def test_results_file_format(tmp_path):
    f = tmp_path / "r.txt"
    dets = [np.array([[0, 1, 9, 19, 0.98765], [10.5, 2, 20, 30, 0.1]]), np.zeros((0, 5))]
    write_voc_results_file(str(f), ["im1", "im2"], dets)
    assert f.read_text().splitlines() == ["im1 0.988 1.0 2.0 10.0 20.0",
                                          "im1 0.100 11.5 3.0 21.0 31.0"]


def test_cache_not_stale(tmp_path):
    gts = {"a": [("dog", B1, 0)]}
    d, a, s = _setup(tmp_path, gts, [("a", 0.9, B1)])
    cache = str(tmp_path / "cache")
    assert voc_eval(d, a, s, "dog", cache)[2] == pytest.approx(1.0)
    # the annotation changes (new mtime): the cached parse must not be reused
    _write_xml(tmp_path / "ann" / "a.xml", [("dog", B2, 0)])
    os.utime(tmp_path / "ann" / "a.xml", ns=(1, 1))
    assert voc_eval(d, a, s, "dog", cache)[2] == 0.0
