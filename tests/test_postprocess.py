"""Every user-facing threshold of the one test-time post-processing (fast_rcnn/test.py
select_detections) changes the output when it leaves its default: cfg TEST.NMS /
TEST.SCORE_THRESH / TEST.MAX_PER_IMAGE in test_net, Detector(nms_thresh=...) and per call,
detect.py --nms. Hand-worked on a stub model: three class-1 boxes, two with IoU 0.5 (+1 pixel
convention), scores 0.9 / 0.8 / 0.3."""
import json

import numpy as np
import torch

from frcnn.config import get_default_cfg
from frcnn.safe_io import load_pickle

from test_api import images, model_file, run_tool  # noqa: F401 - fixtures
from test_datasets import make_voc

CLASSES = ["__background__", "cat", "dog"]  # sorted, as voc_folder finds them


class StubModel(torch.nn.Module):
    """Fixed head outputs for a 64 x 48 image tested at scale 1 (TEST.SCALES (48,))."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, images, im_info, proposals=None):
        rois = torch.tensor([[0, 0, 0, 9, 9], [0, 0, 0, 9, 4], [0, 20, 20, 29, 29.]])
        prob = torch.tensor([[0.1, 0.9, 0.0], [0.2, 0.8, 0.0], [0.7, 0.3, 0.0]])
        return {"rois": rois, "cls_prob": prob, "bbox_pred": torch.zeros(3, 12)}


def _cfg(**test):
    cfg = get_default_cfg()
    cfg.TEST.SCALES, cfg.TEST.MAX_SIZE = (48,), 1000
    for k, v in test.items():
        cfg.TEST[k] = v
    return cfg


def _test_net_scores(tmp_path, **test):
    from frcnn.datasets.factory import get_imdb
    from frcnn.fast_rcnn.test import test_net

    root = make_voc(tmp_path / "VOCpp", {"a": (64, 48, [("dog", (1, 1, 10, 10), 0),
                                                         ("cat", (30, 30, 40, 40), 0)])},
                    {"test": ["a"]})
    cfg = _cfg(**test)
    cfg.DATA_DIR = str(tmp_path / "data")
    imdb = get_imdb(f"voc_folder:{root}:test", cfg)
    assert list(imdb.classes) == CLASSES
    out = tmp_path / ("out_" + "_".join(f"{k}{v}" for k, v in test.items()))
    test_net(StubModel(), imdb, cfg, str(out))
    return sorted(load_pickle(out / "detections.pkl")[1][0][:, 4].astype(float).round(3).tolist(), reverse=True)


def test_test_net_reads_nms_score_thresh_and_max_per_image_from_the_cfg(tmp_path):
    assert _test_net_scores(tmp_path) == [0.9, 0.3]                  # NMS 0.3 drops 0.8
    assert _test_net_scores(tmp_path, NMS=0.7) == [0.9, 0.8, 0.3]
    assert _test_net_scores(tmp_path, NMS=0.7, SCORE_THRESH=0.5) == [0.9, 0.8]
    assert _test_net_scores(tmp_path, NMS=0.7, MAX_PER_IMAGE=2) == [0.9, 0.8]


def _scores(d):
    return d.scores.astype(float).round(3).tolist()


def test_detector_nms_from_cfg_constructor_and_call():
    from frcnn import Detector

    im = np.zeros((48, 64, 3), np.uint8)
    assert _scores(Detector(StubModel(), CLASSES, _cfg())(im)) == [0.9, 0.3]
    assert _scores(Detector(StubModel(), CLASSES, _cfg(NMS=0.7))(im)) == [0.9, 0.8, 0.3]
    det = Detector(StubModel(), CLASSES, _cfg(), nms_thresh=0.7)
    assert _scores(det(im)) == [0.9, 0.8, 0.3]
    assert _scores(det(im, nms_thresh=0.3)) == [0.9, 0.3]
    assert _scores(det(im, score_thresh=0.5)) == [0.9, 0.8]
    assert _scores(det(im, max_per_image=1)) == [0.9]


def test_detect_tool_nms_flag(model_file, images, tmp_path):  # noqa: F811
    counts = {}
    for nms in ("0.3", "0.9"):
        out = tmp_path / f"d{nms}.json"
        p = run_tool("detect.py", "--model", model_file, images[0], "--out", str(out),
                     "--score-thresh", "0.0", "--nms", nms)
        assert p.returncode == 0, p.stderr
        counts[nms] = len(json.loads(out.read_text()))
    from frcnn import Detector

    assert counts["0.3"] == len(Detector.from_file(model_file, score_thresh=0.0)(images[0]))
    assert counts["0.9"] > counts["0.3"]
