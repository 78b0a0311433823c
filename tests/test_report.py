"""The evaluation report end to end on the hand-worked toy VOC folder of test_reval (2 images,
dog + cat): every artefact written, its numbers as worked out by hand, tools/report.py, the
F1-best threshold in the model file, results.csv / training.png of a training run."""
import json
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from frcnn.safe_io import load_torch

from test_reval import DOG_07, toy  # noqa: F401  (the fixture)

pytest.importorskip("matplotlib")
pytest.importorskip("pycocotools")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNGS = ("pr_curves.png", "score_curves.png", "confusion_matrix.png", "tide.png",
        "worst_images.png")


@pytest.fixture
def report(toy):  # noqa: F811
    from frcnn.datasets.voc_folder import voc_folder
    from frcnn.evaluation.report import write_report

    root, cfg, all_boxes, tmp = toy
    imdb = voc_folder(root, "test", cfg)
    out = str(tmp / "out")
    os.makedirs(out)
    with open(os.path.join(out, "detections.pkl"), "wb") as f:  # as test_net leaves it
        pickle.dump(all_boxes, f)
    run = {"net": "TINY", "imdb_spec": f"voc_folder:{root}:test"}
    return write_report(imdb, out, all_boxes, run=run), out, root, cfg


def test_report_numbers_by_hand(report):
    m, out, _, _ = report
    assert m["voc07"]["per_class"]["dog"] == pytest.approx(DOG_07)  # the devkit's number
    # pooled by score: cat .95 TP, dog .9 TP, .8 duplicate, .7 nothing, .6 TP; 3 objects:
    # F1 .5, .8, .67, .57, .75 -> best .8 at score .9
    assert m["f1_best"]["overall"]["threshold"] == pytest.approx(0.9)
    assert m["f1_best"]["overall"]["f1"] == pytest.approx(0.8)
    assert m["draw_thresh"] == pytest.approx(0.9)
    # at .9: dog of a found, cat found, dog of b missed
    assert m["confusion"]["matrix"] == [[1, 0, 1], [0, 1, 0], [0, 0, 0]]
    assert m["tide"]["count"] == {"cls": 0, "loc": 0, "both": 0, "dupe": 1, "bkg": 1,
                                  "missed": 0}
    assert m["coco"]["per_class"]["cat"]["AP"] == pytest.approx(1.0)
    assert m["worst_images"] == [{"image": "b", "errors": 1}]  # its missed dog
    saved = json.load(open(os.path.join(out, "metrics.json")))
    assert saved["mean"]["AP50"] == pytest.approx(m["mean"]["AP50"])  # strict table kept
    assert saved["run"]["net"] == "TINY"


def test_report_files_and_page(report):
    m, out, _, _ = report
    preds = json.load(open(os.path.join(out, "predictions.json")))
    assert len(preds) == 5 and {p["file_name"] for p in preds} == {"a.jpg", "b.jpg"}
    cat = [p for p in preds if p["category_name"] == "cat"][0]
    assert cat["bbox"] == [60.0, 60.0, 30.0, 30.0] and cat["score"] == pytest.approx(0.95)
    for name in PNGS:
        assert os.path.getsize(os.path.join(out, name)) > 5000, name
    page = open(os.path.join(out, "report.html")).read()
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', page)) == len(PNGS)
    assert "http://" not in page and "https://" not in page and "<script" not in page


def run_tool(*args):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "lib"), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "report.py"), *args],
                          capture_output=True, text=True, env=env, timeout=300)


def test_report_tool_rebuilds_and_errors(report, tmp_path):
    m, out, root, cfg = report
    os.remove(os.path.join(out, "report.html"))
    p = run_tool(out, "--set", "DATA_DIR", cfg.DATA_DIR)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip().endswith("report.html") and os.path.exists(os.path.join(out,
                                                                                    "report.html"))
    again = json.load(open(os.path.join(out, "metrics.json")))
    assert again["tide"] == json.loads(json.dumps(m["tide"]))
    p = run_tool(str(tmp_path))
    assert p.returncode == 2 and p.stderr.startswith("error: ") and "Traceback" not in p.stderr
    again["data"]["objects"]["dog"] = 3  # as if the test set were built with other settings
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(again, f)
    p = run_tool(out, "--set", "DATA_DIR", cfg.DATA_DIR)
    assert p.returncode == 2 and "test_net evaluated" in p.stderr and "--cfg" in p.stderr


def test_f1_threshold_goes_into_the_model_file(tmp_path):
    from frcnn import Detector
    from frcnn.evaluation.thresholds import store_draw_thresh
    from frcnn.models import build_model
    from test_api import CLASSES, small_cfg

    torch.manual_seed(0)
    m = build_model("TINY", len(CLASSES), small_cfg(), pretrained=False)
    path = str(tmp_path / "tiny_faster_rcnn_final.pth")
    torch.save({"model": m.state_dict(), "net": "TINY", "classes": CLASSES}, path)
    assert Detector.from_file(path).draw_thresh == 0.8  # no stored threshold: the demo's
    best = {"overall": {"threshold": 0.37}, "per_class": {"circle": {"threshold": 0.5}}}
    assert store_draw_thresh(path, {"f1_best": best})
    det = Detector.from_file(path)
    assert det.draw_thresh == pytest.approx(0.37)
    raw = load_torch(path)
    for k, v in m.state_dict().items():
        assert torch.equal(raw["model"][k], v)
    assert raw["draw_thresh_per_class"] == {"circle": 0.5}
    import cv2

    im = str(tmp_path / "im.jpg")
    cv2.imwrite(im, np.random.default_rng(0).integers(0, 255, (160, 200, 3), dtype=np.uint8))
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "lib"), OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "detect.py"), "--model", path,
                        im, "--out", str(tmp_path / "d.json")], capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert ">= 0.37)" in p.stdout  # detect.py draws from the stored threshold


def test_results_csv_and_training_png(tmp_path):
    from frcnn.engine.results_csv import ResultsCSV, plot_training, read_csv, training_times
    from frcnn.engine.hooks import PeriodicEval
    from frcnn.engine.trainer import Trainer

    class Lr:
        lr = 0.01

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(2))

        def forward(self, images, im_info, gt_boxes):
            return {"a_loss": (self.w ** 2).sum(), "b_loss": self.w.abs().sum()}

    def run(prefix, start, stop):
        model = Toy()
        z = torch.zeros(1)
        data = iter(lambda: {"images": z, "im_info": z, "gt_boxes": [z], "image_ids": ["x"]},
                    None)
        t = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), data, window=5)
        hooks = [ResultsCSV(str(tmp_path), prefix, Lr(), plot=False)]
        if prefix == "stage1":  # --eval-every 10: its numbers land in the rows of 10 and 20
            hooks.append(PeriodicEval(10, lambda m: {"mAP": m.w.sum().item()}, prefix))
        t.register_hooks(hooks)
        t.train(start, stop)

    run("stage1", 0, 20)
    run("stage2", 0, 10)
    run("stage2", 5, 15)  # a resume at 5 keeps the rows up to 5
    rows = read_csv(str(tmp_path / "stage1_results.csv"))
    assert [r["iteration"] for r in rows] == [5, 10, 15, 20]
    assert set(rows[0]) >= {"iteration", "total_loss", "a_loss", "b_loss", "lr", "s_per_iter"}
    assert rows[0]["total_loss"] == pytest.approx(rows[0]["a_loss"] + rows[0]["b_loss"], rel=1e-6)
    assert rows[-1]["a_loss"] < rows[0]["a_loss"]  # it learns
    assert np.isnan(rows[0]["val_mAP"]) and np.isnan(rows[2]["val_mAP"])
    assert 0 < rows[3]["val_mAP"] < rows[1]["val_mAP"]  # w shrinks towards 0
    assert [r["iteration"] for r in read_csv(str(tmp_path / "stage2_results.csv"))] == [5, 10, 15]
    times = training_times(str(tmp_path))
    assert list(times) == ["stage1", "stage2"] and all(v > 0 for v in times.values())
    png = plot_training(str(tmp_path))
    assert os.path.getsize(png) > 5000
    assert np.isfinite(rows[0]["lr"])


def test_report_renders_in_chromium(report):
    from frcnn.evaluation.browser import check_page, find_chromium

    browser = find_chromium()
    if browser is None:
        pytest.skip("no Chromium: `apt-get install chromium` (.ci/run does) to check that "
                    "report.html renders")
    _, out, _, _ = report
    state = check_page(os.path.join(out, "report.html"), browser)
    assert state["errors"] == []
    assert len(state["images"]) == len(PNGS)
    for im in state["images"]:
        assert im["complete"] and im["width"] > 300 and im["height"] > 200, im


def test_unwritable_model_keeps_its_file(tmp_path, capsys):
    from frcnn.evaluation.thresholds import store_draw_thresh

    path = tmp_path / "m_final.pth"
    torch.save({"model": {"w": torch.ones(1)}, "net": "TINY"}, path)
    before = path.read_bytes()
    (tmp_path / "m_final.pth.tmp").mkdir()  # the write fails (as on a read-only folder)
    best = {"overall": {"threshold": 0.4}, "per_class": {}}
    assert not store_draw_thresh(str(path), {"f1_best": best})
    assert "--thresh 0.400" in capsys.readouterr().out
    assert path.read_bytes() == before


def test_report_of_a_model_that_finds_nothing(toy):  # noqa: F811
    from frcnn.datasets.voc_folder import voc_folder
    from frcnn.evaluation.report import write_report

    root, cfg, all_boxes, tmp = toy
    empty = [[np.zeros((0, 5), np.float32) for _ in per_image] for per_image in all_boxes]
    out = str(tmp / "empty")
    os.makedirs(out)
    m = write_report(voc_folder(root, "test", cfg), out, empty)
    assert m["coco"]["mean"]["AP"] == 0.0 and m["f1_best"]["overall"]["threshold"] is None
    assert m["tide"]["count"]["missed"] == 3 and m["tide"]["dAP"]["missed"] == pytest.approx(100)
    assert m["confusion"]["matrix"] == [[0, 0, 2], [0, 0, 1], [0, 0, 0]]
    assert os.path.exists(os.path.join(out, "report.html"))


def test_page_lists_the_auto_sized_values_with_their_source(report):
    from frcnn.evaluation.report_html import write_html

    m, out, _, _ = report
    m["run"]["cfg_text"] = ("# chosen by frcnn.autocfg\n# images: 4, short side median 100 px -> "
                            "TRAIN/TEST.SCALES (96,)\nTRAIN:\n  SCALES: [96]\n")
    page = open(write_html(out, m)).read()
    assert "<li>images: 4, short side median 100 px -&gt; TRAIN/TEST.SCALES (96,)</li>" in page
    assert "<li>chosen by" not in page and "SCALES: [96]" in page
