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


# -- strict IoU: AP at 0.75 and the mean over 0.5:0.05:0.95 ------------------------------------
# Three images with one 10 x 10 gt (1-based [1, 1, 10, 10]) each, detected with IoU 1.0, 0.8 and
# 0.6 (scores 0.9, 0.8, 0.7). IoU must be > t: at t = 0.5, 0.55 all three are TPs (AP 1); at
# 0.6 .. 0.75 the IoU-0.6 one is a FP (AP = area 2/3); at 0.8 .. 0.95 only the exact one is a TP
# (AP 1/3). Mean over the ten thresholds: (2 * 1 + 4 * 2/3 + 4 * 1/3) / 10 = 0.6.
GT = (1, 1, 10, 10)
CAT_DETS = [("a", 0.9, (1, 1, 10, 10)), ("b", 0.8, (1, 1, 10, 8)), ("c", 0.7, (1, 1, 10, 6))]


def _recs(boxes_by_image, difficult_by_image=None):
    difficult_by_image = difficult_by_image or {}
    return {im: {"bbox": np.array(b, np.float64).reshape(-1, 4),
                 "difficult": np.array(difficult_by_image.get(im, [False] * len(b)), bool)}
            for im, b in boxes_by_image.items()}


def _dets(dets):
    return ([d[0] for d in dets], np.array([d[1] for d in dets]),
            np.array([d[2] for d in dets], np.float64).reshape(-1, 4))


def test_ap_at_ious_hand_worked():
    from frcnn.datasets.voc_eval import IOU_THRESHOLDS, ap_at_ious

    assert IOU_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    aps = ap_at_ious(*_dets(CAT_DETS), _recs({"a": [GT], "b": [GT], "c": [GT]}))
    np.testing.assert_allclose(aps, [1, 1] + [2 / 3] * 4 + [1 / 3] * 4, rtol=0, atol=1e-12)
    # The same ranking at IoU 0.5 via voc_eval (area metric) gives the same AP.
    assert ap_at_ious(*_dets(CAT_DETS), _recs({"a": [GT], "b": [GT], "c": [GT]}), (0.5,))[0] == 1


def test_strict_iou_table_difficult_duplicates_and_means():
    from frcnn.datasets.voc_eval import strict_iou_table

    recs = _recs({"a": [GT, (20, 20, 30, 30)], "b": [GT], "c": [GT]},
                 {"a": [False, True]})
    # + a top-scored detection of the difficult gt (ignored at every threshold) and a
    # low-scored duplicate of gt a (a FP ranked last): the APs do not change.
    dets = CAT_DETS + [("a", 0.95, (20, 20, 30, 30)), ("a", 0.5, (1, 1, 10, 10))]
    table = strict_iou_table({
        "cat": (*_dets(dets), recs),
        "bird": ([], np.zeros(0), np.zeros((0, 4)), _recs({"a": [GT], "b": [], "c": []})),
        "dog": (*_dets([("b", 0.5, GT)]), _recs({"a": [], "b": [], "c": []})),  # no gt: nan
    })
    cat = table["per_class"]["cat"]
    assert cat["AP50"] == 1.0 and cat["AP75"] == pytest.approx(2 / 3, abs=1e-12)
    assert cat["AP50:95"] == pytest.approx(0.6, abs=1e-12)
    assert table["per_class"]["bird"] == {"AP50": 0.0, "AP75": 0.0, "AP50:95": 0.0}
    assert np.isnan(table["per_class"]["dog"]["AP75"])
    # Means over the classes with gt (cat, bird).
    assert table["mean"] == pytest.approx({"AP50": 0.5, "AP75": 1 / 3, "AP50:95": 0.3}, abs=1e-12)
    # A FP ranked first (a box on nothing): precision 1/2, 2/3, 3/4 at recall 1/3, 2/3, 1, whose
    # envelope is 3/4 throughout -> AP50 0.75. A duplicate ranked first is the TP instead and
    # the 0.9 detection of a the FP: precision 1, 1/2, 2/3, 3/4 at recall 1/3, 1/3, 2/3, 1 ->
    # envelope 1, 3/4, 3/4 -> AP50 (1 + 3/4 + 3/4) / 3.
    three = _recs({"a": [GT], "b": [GT], "c": [GT]})
    t2 = strict_iou_table({"cat": (*_dets([("a", 0.99, (50, 50, 60, 60))] + CAT_DETS), three)})
    assert t2["mean"]["AP50"] == pytest.approx(0.75, abs=1e-12)
    t3 = strict_iou_table({"cat": (*_dets([("a", 0.99, GT)] + CAT_DETS), three)})
    assert t3["mean"]["AP50"] == pytest.approx(2.5 / 3, abs=1e-12)


class _FakeImdb:
    """COCO-like imdb: no annotation_path, gts from gt_roidb (0-based boxes, crowd = -1)."""
    name = "fake_coco"
    classes = ("__background__", "cat")
    image_index = ["a", "b", "c"]

    def gt_roidb(self):
        g = np.array([[0, 0, 9, 9]], np.float32)  # 0-based == 1-based GT
        crowd = np.array([[0, 0, 9, 9], [30, 30, 60, 60]], np.float32)
        return [{"boxes": crowd, "gt_classes": np.array([1, 1]),
                 "gt_overlaps": np.array([[0, 1], [-1, -1]], np.float32)},
                {"boxes": g, "gt_classes": np.array([1]), "gt_overlaps": np.array([[0, 1.0]])},
                {"boxes": g, "gt_classes": np.array([1]), "gt_overlaps": np.array([[0, 1.0]])}]


def test_strict_iou_report_from_roidb_writes_metrics_json(tmp_path, capsys):
    import json

    from frcnn.datasets.voc_eval import strict_iou_report

    def det(box, score):  # 1-based box -> 0-based det row
        return [box[0] - 1, box[1] - 1, box[2] - 1, box[3] - 1, score]

    per_image = [np.array([det(b, s) for im2, s, b in CAT_DETS if im2 == im]
                          + ([det((31, 31, 61, 61), 0.99)] if im == "a" else []))
                 for im in ("a", "b", "c")]  # + a top detection of the crowd box: ignored
    all_boxes = [[None] * 3, per_image]
    table = strict_iou_report(_FakeImdb(), str(tmp_path), all_boxes, voc_map=0.9,
                              extra={"pooling": "align"})
    assert table["mean"]["AP75"] == pytest.approx(2 / 3, abs=1e-12)
    assert table["mean"]["AP50:95"] == pytest.approx(0.6, abs=1e-12)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["voc_mAP"] == 0.9 and saved["pooling"] == "align"
    assert saved["per_class"]["cat"]["AP50:95"] == pytest.approx(0.6, abs=1e-12)
    out = capsys.readouterr().out
    assert "Mean AP@0.75 = 0.6667, AP@[.5:.95] = 0.6000" in out


def test_strict_iou_report_voc_style_reads_difficult_from_xml(tmp_path):
    from frcnn.datasets.voc_eval import strict_iou_report

    (tmp_path / "ann").mkdir()
    _write_xml(tmp_path / "ann" / "a.xml", [("cat", GT, 0), ("cat", (20, 20, 30, 30), 1)])
    _write_xml(tmp_path / "ann" / "b.xml", [("cat", GT, 0)])
    _write_xml(tmp_path / "ann" / "c.xml", [("cat", GT, 0), ("dog", GT, 0)])

    class Voc(_FakeImdb):
        name = "fake_voc"
        classes = ("__background__", "cat", "dog")

        def annotation_path(self, index):
            return str(tmp_path / "ann" / f"{index}.xml")

    def det(box, score):
        return [box[0] - 1, box[1] - 1, box[2] - 1, box[3] - 1, score]

    cats = [np.array([det(b, s) for im2, s, b in CAT_DETS if im2 == im]
                     + ([det((20, 20, 30, 30), 0.99)] if im == "a" else []))
            for im in ("a", "b", "c")]
    dogs = [np.zeros((0, 5)), np.zeros((0, 5)), np.array([det((1, 1, 10, 9), 0.5)])]  # IoU 0.9
    table = strict_iou_report(Voc(), str(tmp_path), [[None] * 3, cats, dogs])
    assert table["per_class"]["cat"]["AP50:95"] == pytest.approx(0.6, abs=1e-12)
    # dog: one detection with IoU 0.9: TP for t < 0.9 (8 thresholds), FP at 0.9, 0.95.
    assert table["per_class"]["dog"]["AP50:95"] == pytest.approx(0.8, abs=1e-12)
    assert table["per_class"]["dog"]["AP75"] == 1.0
