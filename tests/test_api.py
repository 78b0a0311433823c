"""frcnn.Detector (the Python API) and tools/detect.py / tools/demo.py on a random-weight TINY model."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from frcnn.config import get_default_cfg
from frcnn.errors import ConfigError, DataError
from frcnn.safe_io import load_torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ["__background__", "circle", "square", "triangle"]


def small_cfg():
    cfg = get_default_cfg()
    cfg.TEST.SCALES, cfg.TEST.MAX_SIZE = (160,), 320
    cfg.TEST.RPN_POST_NMS_TOP_N = 100
    return cfg


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A TINY model with random weights (seeded), its class names and a cfg.yml beside it."""
    from frcnn.models import build_model

    d = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    m = build_model("TINY", len(CLASSES), small_cfg(), pretrained=False)
    path = str(d / "tiny_faster_rcnn_final.pth")
    torch.save({"model": m.state_dict(), "net": "TINY", "classes": CLASSES}, path)
    (d / "cfg.yml").write_text("TEST:\n  SCALES: [160]\n  MAX_SIZE: 320\n  RPN_POST_NMS_TOP_N: 100\n")
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("ims")
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(240, 320), (300, 200)]):
        im = cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (9, 9), 3)
        p = str(d / f"im{i}.jpg")
        cv2.imwrite(p, im)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def det(model_file):
    from frcnn import Detector

    return Detector.from_file(model_file, device="cpu", score_thresh=0.0)


def test_from_file_reads_net_classes_and_cfg_beside(det):
    assert det.net == "TINY" and det.classes == CLASSES
    assert det.cfg.TEST.SCALES == (160,) and det.cfg.TEST.MAX_SIZE == 320
    assert det.nms_thresh == 0.3 and det.max_per_image == 100 and det.score_thresh == 0.0


def test_same_as_im_detect_and_test_net_postprocessing(det, images):
    from frcnn.fast_rcnn.test import detections_for_image, im_detect

    im = cv2.imread(images[0])
    d = det(im)
    scores, boxes = im_detect(det.model, im, det.cfg)
    per_class = detections_for_image(scores, boxes, len(CLASSES), 0.0, 0.3, 100)
    want = sorted((float(s), j, tuple(np.round(b, 3))) for j in range(1, len(CLASSES))
                  for *b, s in per_class[j])
    got = sorted((float(s), int(c), tuple(np.round(b, 3))) for b, s, c in
                 zip(d.boxes, d.scores, d.labels))
    assert len(d) > 10 and got == want
    assert np.all(np.diff(d.scores) <= 0)  # by descending score
    assert d.class_names == [CLASSES[c] for c in d.labels] and d.image_size == (240, 320)


def test_boxes_in_original_image_pixels(det):
    # a 480x640 image runs at scale 1/3 (TEST.SCALES 160): boxes must come back x3, clipped
    im = cv2.resize(np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8),
                    (640, 480), interpolation=cv2.INTER_LINEAR)
    d = det(im)
    assert len(d) > 0
    assert d.boxes[:, 0].min() >= 0 and d.boxes[:, 2].max() <= 639 and d.boxes[:, 3].max() <= 479
    assert d.boxes[:, 2].max() > 320  # beyond the 214-px-wide blob: original coordinates


def test_inputs_path_array_list_batch(det, images):
    a = det(images[1])
    b = det(cv2.imread(images[1]))
    both = det(images)
    assert isinstance(both, list) and len(both) == 2
    for x in (b, both[1]):
        np.testing.assert_array_equal(a.boxes, x.boxes)
        np.testing.assert_array_equal(a.scores, x.scores)
    gray = cv2.imread(images[1], cv2.IMREAD_GRAYSCALE)
    assert det(gray).image_size == (300, 200)


def test_thresholds_overridable(det, images, model_file):
    full = det(images[0])
    cut = det(images[0], score_thresh=float(np.median(full.scores)))
    assert 0 < len(cut) < len(full) and cut.scores.min() > np.median(full.scores)
    assert len(det(images[0], max_per_image=5)) == 5
    from frcnn import Detector

    d2 = Detector.from_file(model_file, score_thresh=0.3, max_per_image=7)
    r = d2(images[0])
    assert len(r) <= 7 and (r.scores > 0.3).all()


def test_errors(model_file, tmp_path):
    from frcnn import Detector

    with pytest.raises(ConfigError, match="nope.pth: model file not found"):
        Detector.from_file(str(tmp_path / "nope.pth"))
    sd = load_torch(model_file)
    stage = {"model": {k: v for k, v in sd["model"].items() if not k.startswith("rpn.")},
             "net": "TINY", "classes": CLASSES}
    torch.save(stage, tmp_path / "stage.pth")
    with pytest.raises(ConfigError, match="stage file"):
        Detector.from_file(str(tmp_path / "stage.pth"))
    torch.save({"model": sd["model"]}, tmp_path / "bare.pth")
    with pytest.raises(ConfigError, match="which net"):
        Detector.from_file(str(tmp_path / "bare.pth"))
    det = Detector.from_file(str(tmp_path / "bare.pth"), net="tiny", classes=CLASSES[1:])
    assert det.classes == CLASSES
    with pytest.raises(DataError, match="expected a BGR image"):
        det(np.zeros((5, 5, 2), np.uint8))
    with pytest.raises(DataError, match="missing.jpg"):
        det(str(tmp_path / "missing.jpg"))


def run_tool(tool, *args):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "lib"), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", tool), *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_detect_tool_json_and_vis(model_file, images, tmp_path):
    folder = os.path.dirname(images[0])
    out = tmp_path / "dets.json"
    p = run_tool("detect.py", "--model", model_file, folder, "--out", str(out),
                 "--vis", str(tmp_path / "vis"), "--score-thresh", "0.2")
    assert p.returncode == 0, p.stdout + p.stderr
    res = json.loads(out.read_text())
    from frcnn import Detector

    want = Detector.from_file(model_file, score_thresh=0.2)(sorted(images))
    assert len(res) == sum(len(w) for w in want) > 0
    first = [r for r in res if r["image_id"] == 1]
    assert first[0]["file_name"].endswith("im0.jpg") and first[0]["category_name"] in CLASSES
    x, y, w, h = first[0]["bbox"]
    np.testing.assert_allclose([x, y, x + w - 1, y + h - 1], want[0].boxes[0], atol=0.02)
    assert sorted(os.listdir(tmp_path / "vis")) == ["im0.png", "im1.png"]
    # demo.py is detect.py with --vis
    p = run_tool("demo.py", "--model", model_file, images[1], "--out", str(tmp_path / "demo"))
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(tmp_path / "demo")) == ["detections.json", "im1.png"]


def test_detect_tool_errors_without_traceback(model_file, tmp_path):
    p = run_tool("detect.py", "--model", model_file, str(tmp_path / "nothing_here"))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.startswith(f"error: {tmp_path / 'nothing_here'}: no such image or folder")
