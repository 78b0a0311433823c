"""tools/reval.py and frcnn.fast_rcnn.reval on a hand-worked VOC case (2 images, dog + cat)."""
import os
import pickle
import subprocess
import sys

import cv2
import numpy as np
import pytest

from frcnn.config import cfg_from_list, get_default_cfg
from frcnn.datasets.voc_folder import voc_folder
from frcnn.fast_rcnn.reval import apply_nms, reevaluate, write_pr_curves

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _xml(objs):
    o = "".join(f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{b[0] + 1}</xmin>"
                f"<ymin>{b[1] + 1}</ymin><xmax>{b[2] + 1}</xmax><ymax>{b[3] + 1}</ymax></bndbox>"
                "</object>" for n, b in objs)
    return (f"<annotation><size><width>100</width><height>100</height><depth>3</depth></size>{o}"
            "</annotation>")


@pytest.fixture
def toy(tmp_path):
    root = tmp_path / "toy"
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / d).mkdir(parents=True)
    gts = {"a": [("dog", (10, 10, 49, 49)), ("cat", (60, 60, 89, 89))],
           "b": [("dog", (10, 10, 49, 49))]}
    for im, objs in gts.items():
        (root / "Annotations" / f"{im}.xml").write_text(_xml(objs))
        cv2.imwrite(str(root / "JPEGImages" / f"{im}.jpg"), np.zeros((100, 100, 3), np.uint8))
    (root / "ImageSets/Main/test.txt").write_text("a\nb\n")
    (root / "classes.txt").write_text("dog\ncat\n")
    cfg = cfg_from_list(["DATA_DIR", str(tmp_path / "data")], get_default_cfg())
    e = lambda *rows: np.array(rows, np.float32).reshape(-1, 5)  # noqa: E731
    # 0-based boxes; dog in image order a, a, b, b after sorting by score: TP, dup FP, FP, TP
    all_boxes = [[e(), e()],
                 [e([10, 10, 49, 49, 0.9], [11, 11, 50, 50, 0.8]),
                  e([60, 60, 80, 80, 0.7], [10, 10, 49, 49, 0.6])],
                 [e([60, 60, 89, 89, 0.95]), e()]]
    return str(root), cfg, all_boxes, tmp_path


# dog: rec [.5 .5 .5 1], prec [1 .5 .33 .5] -> VOC07 (6*1 + 5*.5)/11, area .5*1 + .5*.5
DOG_07, DOG_AREA = 8.5 / 11, 0.75
# after NMS 0.3 the duplicate goes: rec [.5 .5 1], prec [1 .5 .67]
DOG_07_NMS, DOG_AREA_NMS = (6 + 5 * 2 / 3) / 11, 0.5 + 0.5 * 2 / 3


def test_hand_worked(toy):
    root, cfg, all_boxes, tmp = toy
    imdb = voc_folder(root, "test", cfg)
    assert imdb.classes == ("__background__", "dog", "cat")
    m, aps = reevaluate(imdb, all_boxes, str(tmp / "o1"))
    assert aps["dog"] == pytest.approx(DOG_07) and aps["cat"] == pytest.approx(1.0)
    assert m == pytest.approx((DOG_07 + 1) / 2)
    m, aps = reevaluate(imdb, all_boxes, str(tmp / "o2"), use_07_metric=False)
    assert aps["dog"] == pytest.approx(DOG_AREA)
    m, aps = reevaluate(imdb, all_boxes, str(tmp / "o3"), nms_thresh=0.3, use_07_metric=False)
    assert aps["dog"] == pytest.approx(DOG_AREA_NMS)
    m, aps = reevaluate(imdb, all_boxes, str(tmp / "o4"), nms_thresh=0.3, classes=["dog"])
    assert set(aps) == {"dog"} and m == pytest.approx(DOG_07_NMS)
    assert imdb.use_07_metric  # restored after an evaluation with another metric
    paths = write_pr_curves(imdb, str(tmp / "o4"), ["dog"])
    assert [os.path.basename(p) for p in paths] == ["dog.png"]
    assert len(write_pr_curves(imdb, str(tmp / "o4"))) == 2
    with pytest.raises(ValueError, match="unknown classes"):
        reevaluate(imdb, all_boxes, str(tmp / "o5"), classes=["cow"])
    with pytest.raises(ValueError, match="class lists"):
        reevaluate(imdb, all_boxes[:2], str(tmp / "o5"))


def test_apply_nms_keeps_best():
    b = [[np.zeros((0, 5), np.float32)],
         [np.array([[0, 0, 9, 9, 0.5], [0, 0, 9, 9, 0.9], [50, 50, 59, 59, 0.1]], np.float32)]]
    out = apply_nms(b, 0.3)
    np.testing.assert_allclose(out[1][0][:, 4], [0.9, 0.1])
    assert out[0][0].shape == (0, 5)


def test_reval_tool(toy):
    root, _, all_boxes, tmp = toy
    d = tmp / "test_out"
    d.mkdir()
    with open(d / "detections.pkl", "wb") as f:
        pickle.dump(all_boxes, f)
    p = subprocess.run([sys.executable, "tools/reval.py", str(d), "--imdb", f"voc_folder:{root}:test",
                        "--metric", "area", "--nms", "0.3", "--set", "DATA_DIR", str(tmp / "data")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    txt = (d / "reval" / "reval.txt").read_text()
    assert f"AP dog {DOG_AREA_NMS:.4f}" in txt and "AP cat 1.0000" in txt
    assert f"mAP {(DOG_AREA_NMS + 1) / 2:.4f}" in txt
    assert (d / "reval" / "pr" / "dog.png").stat().st_size > 1000
