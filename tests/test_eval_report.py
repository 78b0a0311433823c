"""The report's numbers on hand-made cases whose answers are worked out by hand: COCO metrics
through pycocotools (+1 rule), the confusion matrix, the F1-best threshold and the TIDE error
breakdown."""
import numpy as np
import pytest

from frcnn.datasets.voc_eval import strict_iou_table
from frcnn.evaluation.confusion import confusion_matrix
from frcnn.evaluation.evalset import EvalSet
from frcnn.evaluation.thresholds import f1_thresholds
from frcnn.evaluation.tide import classify_errors, error_breakdown

pytest.importorskip("pycocotools")
from frcnn.evaluation.coco_metrics import coco_box, coco_metrics, predictions  # noqa: E402

A, B = [1, 1, 10, 10], [101, 101, 110, 110]  # 10 x 10 px boxes (inclusive, 1-based)
FAR = [300, 300, 320, 320]


def make(gts, dets, classes=("a",)):
    return EvalSet.from_lists(list(classes), gts, dets)


def test_coco_ap_known_value():
    # TP .9, FP .8, TP .7 over 2 objects: precision 1 up to recall .5, then 2/3; pycocotools
    # interpolates at 101 recall points: (51 * 1 + 50 * 2/3) / 101.
    es = make([("i1", "a", A, 0), ("i2", "a", A, 0)],
              [("i1", "a", A, .9), ("i2", "a", FAR, .8), ("i2", "a", A, .7)])
    m = coco_metrics(es)
    expected = (51 + 50 * 2 / 3) / 101
    assert m["mean"]["AP"] == pytest.approx(expected, abs=1e-12)
    assert m["per_class"]["a"]["AP50"] == pytest.approx(expected, abs=1e-12)
    assert m["mean"]["AR1"] == pytest.approx(0.5)  # one detection per image: i2 keeps the FP
    assert m["mean"]["AR100"] == pytest.approx(1.0)


def test_coco_boxes_follow_the_plus_one_rule():
    # gt 10 x 10, detection 10 x 5 on top of it: IoU with +1 = 50 / 100 = 0.5 exactly (a match
    # at IoU 0.5 only: AP 1/10); without +1 (9 x 9 and 9 x 4) it would be 36 / 81: no match.
    es = make([("i1", "a", A, 0)], [("i1", "a", [1, 1, 10, 5], .9)])
    m = coco_metrics(es)["mean"]
    assert m["AP50"] == pytest.approx(1.0) and m["AP75"] == 0.0
    assert m["AP"] == pytest.approx(0.1)
    assert coco_box(A) == [0.0, 0.0, 10.0, 10.0]
    p = predictions(es)[0]
    assert p["bbox"] == [0.0, 0.0, 10.0, 5.0] and p["category_name"] == "a"


def test_coco_per_class_means_equal_pycocotools_summary():
    rng = np.random.RandomState(0)
    gts, dets = [], []
    for i in range(12):
        for _ in range(3):
            x, y, s = rng.randint(1, 200), rng.randint(1, 200), rng.randint(8, 150)
            c = "ab"[rng.randint(2)]
            gts.append((f"im{i}", c, [x, y, x + s, y + s], 0))
            j = rng.randint(-6, 7, 4)
            dets.append((f"im{i}", c, [x + j[0], y + j[1], x + s + j[2], y + s + j[3]],
                         rng.rand()))
            dets.append((f"im{i}", "ab"[rng.randint(2)], [x + 20, y, x + s + 20, y + s],
                         rng.rand()))
    m = coco_metrics(make(gts, dets, ("a", "b")))
    for key in ("AP", "AP50", "AP75", "AR100"):
        assert m["mean"][key] == pytest.approx(np.mean([m["per_class"][c][key] for c in "ab"]))


def test_confusion_matrix_known_counts():
    C, D = [201, 201, 230, 230], [401, 401, 430, 430]
    gts = [("i", "a", A, 0), ("i", "b", B, 0), ("i", "a", C, 0), ("i", "b", D, 1)]
    dets = [("i", "a", A, .9),    # TP
            ("i", "a", A, .8),    # duplicate: background row
            ("i", "a", B, .85),   # a b called a
            ("i", "b", FAR, .7),  # nothing there: background row
            ("i", "b", D, .6),    # the difficult object: not counted
            ("i", "a", C, .3)]    # under the threshold: C is missed
    m = confusion_matrix(make(gts, dets, ("a", "b")), score_thresh=0.5)
    np.testing.assert_array_equal(m, [[1, 0, 1],   # a: found once, missed once
                                      [1, 0, 0],   # b: taken for an a
                                      [1, 1, 0]])  # background: 1 a, 1 b of nothing


def test_f1_best_threshold():
    C = [201, 201, 210, 210]
    es = make([("i", "a", A, 0), ("i", "a", B, 0), ("i", "a", C, 0)],
              [("i", "a", A, .9), ("i", "a", FAR, .8), ("i", "a", B, .7),
               ("i", "a", [500, 500, 510, 510], .6)])
    # t .9: P 1 R 1/3 F1 .5; .8: P .5 R 1/3 F1 .4; .7: P 2/3 R 2/3 F1 2/3; .6: F1 .571
    f = f1_thresholds(es)
    best = f["per_class"]["a"]
    assert best["threshold"] == pytest.approx(0.7)
    assert best["f1"] == pytest.approx(2 / 3)
    assert f["overall"] == best
    np.testing.assert_allclose(f["curves"]["a"][3], [.5, .4, 2 / 3, 4 / 7])


def test_f1_ties_are_kept_together():
    es = make([("i", "a", A, 0), ("i", "a", B, 0)],
              [("i", "a", A, .9), ("i", "a", FAR, .5), ("i", "a", B, .5)])
    t, p, r, f1 = f1_thresholds(es)["curves"]["a"]
    np.testing.assert_allclose(t, [.9, .5])
    np.testing.assert_allclose(p, [1, 2 / 3])


def breakdown(gts, dets, classes=("a",)):
    es = make(gts, dets, classes)
    return es, error_breakdown(es)


def only(result, kind, dap):
    for k, v in result["dAP"].items():
        assert v == pytest.approx(dap if k == kind else 0.0, abs=1e-9), (k, result)
    assert result["count"][kind] == 1


def test_tide_pure_localisation():
    # B found with IoU 40/100: a loc error; fixed, both objects are found
    _, r = breakdown([("i", "a", A, 0), ("i", "a", B, 0)],
                     [("i", "a", A, .9), ("i", "a", [101, 101, 110, 104], .8)])
    assert r["ap"] == pytest.approx(0.5)
    only(r, "loc", 50.0)


def test_tide_duplicate():
    # A detected twice before B: precision 1, 1/2, 2/3 -> AP 1/2 + 1/2 * 2/3
    _, r = breakdown([("i", "a", A, 0), ("i", "a", B, 0)],
                     [("i", "a", A, .9), ("i", "a", A, .8), ("i", "a", B, .7)])
    assert r["ap"] == pytest.approx(5 / 6)
    only(r, "dupe", 100 / 6)


def test_tide_classification():
    # B called 'b': class a finds half its objects, class b has none (left out of the mean)
    _, r = breakdown([("i", "a", A, 0), ("i", "a", B, 0)],
                     [("i", "a", A, .9), ("i", "b", B, .8)], ("a", "b"))
    assert r["ap"] == pytest.approx(0.5)
    only(r, "cls", 50.0)  # and B is not also counted as missed


def test_tide_background_missed_and_both():
    _, r = breakdown([("i", "a", A, 0)], [("i", "a", FAR, .95), ("i", "a", A, .9)])
    only(r, "bkg", 50.0)
    _, r = breakdown([("i", "a", A, 0), ("i", "a", B, 0)], [("i", "a", A, .9)])
    only(r, "missed", 50.0)
    C = [201, 201, 210, 210]  # a 'b' box at IoU .4 with an 'a': wrong class and box
    _, r = breakdown([("i", "a", A, 0), ("i", "b", C, 0)],
                     [("i", "a", A, .9), ("i", "b", C, .85), ("i", "b", [1, 1, 10, 4], .95)],
                     ("a", "b"))
    assert r["ap"] == pytest.approx(0.75)
    only(r, "both", 25.0)


def test_tide_class_error_on_a_found_object_is_removed_not_moved():
    es, r = breakdown([("i", "a", A, 0), ("i", "a", B, 0)],
                      [("i", "b", A, .95), ("i", "a", A, .9)], ("a", "b"))
    assert r["count"]["cls"] == 1 and r["count"]["missed"] == 1
    assert r["dAP"]["cls"] == pytest.approx(0.0)  # class b has no objects: nothing to gain
    assert classify_errors(es)["missed"] == [("i", 1)]


def test_tide_base_ap_is_metrics_json_ap50():
    rng = np.random.RandomState(1)
    gts, dets = [], []
    for i in range(10):
        for _ in range(4):
            x, y, s = rng.randint(1, 300), rng.randint(1, 300), rng.randint(10, 80)
            c = "ab"[rng.randint(2)]
            gts.append((f"im{i}", c, [x, y, x + s, y + s], int(rng.rand() < .1)))
            for _ in range(2):
                j = rng.randint(-15, 16, 4)
                dets.append((f"im{i}", "ab"[rng.randint(2)],
                             [x + j[0], y + j[1], x + s + j[2], y + s + j[3]], rng.rand()))
    es, r = breakdown(gts, dets, ("a", "b"))
    table = strict_iou_table({c: (es.dets[c].image_ids, es.dets[c].conf, es.dets[c].boxes,
                                  es.gts[c]) for c in es.classes})
    assert r["ap"] == pytest.approx(table["mean"]["AP50"], abs=1e-12)
    assert sum(r["count"].values()) > 10


def test_crowded_tiles_label_only_the_errors(monkeypatch):
    from frcnn.evaluation import worst_images as wi

    class Eval:
        classes = ["__background__", "cell"]

        def __init__(self, n):
            self.n = n

        def image_gts(self, im):
            b = np.array([[10 * i, 0, 10 * i + 8, 8] for i in range(self.n)], np.float64)
            return b, np.ones(self.n, int), np.zeros(self.n, bool)

    labels = []
    monkeypatch.setattr(wi, "_label", lambda canvas, text, *a, **k: labels.append(text))
    for n, want in ((wi.CROWDED, 2 * wi.CROWDED), (wi.CROWDED + 1, 2)):
        labels.clear()
        dets = [("cell", 0.9, [10 * i, 0, 10 * i + 8, 8], "tp") for i in range(n - 1)]
        dets.append(("cell", 0.5, [0, 20, 8, 28], "bkg"))
        per_image = {"a": {"missed": [n - 1], "dets": dets}}
        wi._tile(Eval(n), per_image, "a", 2, np.zeros((40, 300, 3), np.uint8), (300, 40))
        # uncrowded: every gt and prediction labelled; crowded: the missed object and the error
        assert len(labels) == want
        assert "missed cell" in labels and "cell 0.50 BKG" in labels
