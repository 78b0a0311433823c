"""imdb.evaluate_recall (py-faster-rcnn semantics) on hand-worked cases, and tools/eval_recall.py."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from frcnn.datasets.imdb import evaluate_recall, greedy_gt_overlaps, imdb
from frcnn.utils.recall_report import recall_at, recall_table
from frcnn.safe_io import load_pickle

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _entry(gt, crowd=()):
    gt = np.asarray(gt, np.float32).reshape(-1, 4)
    ov = np.zeros((len(gt), 3), np.float32)
    ov[:, 1] = 1
    for c in crowd:
        ov[c] = -1
    return {"boxes": gt, "gt_classes": np.ones(len(gt), np.int32), "gt_overlaps": ov}


A, B = [0, 0, 9, 9], [5, 0, 14, 9]      # IoU(A, B) = 50 / 150
C = [0, 0, 19, 19]                      # area 400
D = [0, 0, 9, 9]


def _case():
    roidb = [_entry([A, B]), _entry([C]), _entry([D]), _entry([[30, 30, 39, 39]], crowd=[0])]
    props = [np.array([[0, 0, 9, 9],       # A: IoU 1; B: 1/3
                       [5, 0, 14, 4]]),    # B: 50/100 = 0.5; A: 25/125 = 0.2
             np.zeros((0, 4)),             # C: no proposals, still counted (a miss)
             np.array([[50, 50, 60, 60],   # D: IoU 0
                       [0, 0, 10, 9]]),    # D: 100/110 = 0.909
             np.array([[30, 30, 39, 39]])]  # the crowd gt is not counted
    return roidb, props


def test_hand_worked_recall():
    roidb, props = _case()
    r = evaluate_recall(roidb, props)
    assert r["num_pos"] == 4
    np.testing.assert_allclose(r["gt_overlaps"], [0.5, 100 / 110, 1.0])  # C has no proposals
    np.testing.assert_allclose(r["thresholds"], np.arange(10) * 0.05 + 0.5)
    # >= 0.5: A, B, D (3/4); 0.55..0.9: A, D (2/4); 0.95: A (1/4)
    np.testing.assert_allclose(r["recalls"], [0.75] + [0.5] * 8 + [0.25])
    assert r["ar"] == pytest.approx((0.75 + 8 * 0.5 + 0.25) / 10)


def test_limit_keeps_first_boxes():
    roidb, props = _case()
    r = evaluate_recall(roidb, props, limit=1)
    # image 0 keeps only the box on A (B is left without a box: 0, where the reference would
    # stop on an assertion); image 2 only the box of IoU 0
    np.testing.assert_allclose(r["gt_overlaps"], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(r["recalls"], [0.25] * 10)
    assert recall_at(r, 0.5) == 0.25


def test_one_to_one_matching():
    # one box covering A and B equally (IoU 2/3 each) covers only one of them
    wide = np.array([[0, 0, 14, 9]], np.float64)
    got = greedy_gt_overlaps(wide, np.array([A, B], np.float64))
    np.testing.assert_allclose(got, [100 / 150, 0.0])
    # the best-covered gt is matched first, then the next best from the remaining boxes
    boxes = np.array([[0, 0, 14, 9], [0, 0, 9, 9]], np.float64)
    np.testing.assert_allclose(greedy_gt_overlaps(boxes, np.array([A, B], np.float64)),
                               [1.0, 100 / 150])
    assert greedy_gt_overlaps(np.zeros((0, 4)), np.array([A], np.float64)).tolist() == [0.0]


def test_area_ranges_and_default_candidates():
    roidb, props = _case()
    small = evaluate_recall(roidb, props, area="small")   # every gt < 32^2
    assert small["num_pos"] == 4
    assert evaluate_recall(roidb, props, area="large")["num_pos"] == 0
    with pytest.raises(ValueError, match="unknown area"):
        evaluate_recall(roidb, props, area="huge")
    # candidate_boxes None: the roidb's own non-gt rows (gt_classes 0)
    e = _entry([A])
    e["boxes"] = np.vstack([e["boxes"], [[0, 0, 9, 8]]]).astype(np.float32)
    e["gt_classes"] = np.array([1, 0], np.int32)
    e["gt_overlaps"] = np.vstack([e["gt_overlaps"], [[0, 0.9, 0]]]).astype(np.float32)
    r = evaluate_recall([e])
    np.testing.assert_allclose(r["gt_overlaps"], [0.9])


class _Imdb(imdb):
    def __init__(self, roidb):
        super().__init__("toy", None, ("__background__", "a", "b"))
        self._image_index = list(range(len(roidb)))
        self._roidb = roidb


def test_imdb_method_and_table():
    roidb, props = _case()
    d = _Imdb(roidb)
    r = d.evaluate_recall(candidate_boxes=props)
    assert r["ar"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="proposal arrays"):
        d.evaluate_recall(candidate_boxes=props[:2])
    r["mean_boxes"] = 1.25
    t = recall_table({"ss": {300: r}})
    assert "| ss | 300 | 1 | 0.750 | 0.500 | 0.500 | 0.500 | 0.500 | 0.500 |" in t


def test_eval_recall_tool(tmp_path):
    """Proposal pickles on a tiny shapes set: gt boxes score recall 1, shifted ones less."""
    sys.path.insert(0, os.path.join(ROOT, "lib"))
    from frcnn.config import cfg_from_list, get_default_cfg
    from frcnn.datasets.factory import get_imdb

    sets = ["DATA_DIR", str(tmp_path / "data"), "SHAPES.NUM_TRAIN", "2", "SHAPES.NUM_TEST", "6",
            "OUTPUT_DIR", str(tmp_path / "out")]
    cfg = cfg_from_list(list(sets), get_default_cfg())
    d = get_imdb("shapes_test", cfg)
    gt = [e["boxes"][e["gt_classes"] > 0] for e in d.roidb]
    shifted = [b + np.array([8, 0, 8, 0], np.float32) for b in gt]
    for name, boxes in (("gt", gt), ("shifted", shifted)):
        with open(tmp_path / f"{name}.pkl", "wb") as f:
            pickle.dump(boxes, f)
    p = subprocess.run([sys.executable, "tools/eval_recall.py", "--imdb", "shapes_test",
                        "--proposals", str(tmp_path / "gt.pkl"), "--proposals",
                        str(tmp_path / "shifted.pkl"), "--top-n", "1,300",
                        "--out-dir", str(tmp_path / "rec"), "--set"] + sets,
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    res = load_pickle(tmp_path / "rec" / "recall.pkl")
    assert res["gt"][300]["ar"] == pytest.approx(1.0)
    assert res["shifted"][300]["ar"] < 0.9
    assert res["gt"][1]["ar"] < 1.0 or all(len(b) == 1 for b in gt)
    assert os.path.getsize(tmp_path / "rec" / "recall.png") > 1000
    assert "| gt | 300 |" in open(tmp_path / "rec" / "recall.md").read()
