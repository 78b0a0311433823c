"""tools/bench_proposals.py (the per-image timing of the detection path, Table 5's split) on tiny
cases: real images from a folder, the net and classes read from a model file, and the precision
the detector really runs in (autocast applied around the timed path, and printed)."""
import gzip
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "data", "tiny_final_cf5c673.pth.gz")  # TINY, 3 classes
SMALL = ["--set", "TEST.SCALES", "(96,)", "TEST.MAX_SIZE", "160", "TEST.RPN_PRE_NMS_TOP_N", "300",
         "TEST.RPN_POST_NMS_TOP_N", "50"]


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "tools"))
    import bench_proposals

    return bench_proposals


def _model_file(tmp_path):
    path = str(tmp_path / "tiny_final.pth")
    with gzip.open(FIXTURE, "rb") as g, open(path, "wb") as f:
        shutil.copyfileobj(g, f)
    return path


def test_images_and_model_file(tmp_path):
    import cv2

    folder = tmp_path / "ims"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(((120, 200), (150, 100))):
        cv2.imwrite(str(folder / f"im{i}.png"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "lib"), OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "bench_proposals.py"),
                        "--model", _model_file(tmp_path), "--images", str(folder),
                        "--iters", "2", "--warmup", "0", "--no-amp", "--json", str(out)] + SMALL,
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    # the default --num-classes (21) is not what the file holds: the file's 3 classes are used
    assert "TINY 96x160" in p.stdout and "float32, weights" in p.stdout and "3 classes" in p.stdout
    res = json.loads(out.read_text())
    assert res["net"] == "TINY" and res["classes"] == 3 and res["precision"] == "float32"
    assert tuple(res["shape"]) == (96, 160)  # the first image, 120x200, scaled to 96 short side
    assert set(res["ms"]) == {"conv", "proposal", "region-wise", "total"}


def _autocast_seen(bench, monkeypatch, argv):
    seen = []
    real = bench.detect_timed

    def spy(*a, **k):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return real(*a, **k)

    monkeypatch.setattr(bench, "detect_timed", spy)
    bench.main(argv + ["--iters", "1", "--warmup", "0", "--height", "64", "--width", "96"] + SMALL)
    return seen


def test_amp_really_autocasts_and_is_printed(bench, monkeypatch, capsys):
    assert _autocast_seen(bench, monkeypatch, ["--net", "TINY", "--amp"]) == [torch.bfloat16]
    assert "TINY 64x96 on cpu" in capsys.readouterr().out.split("bfloat16 autocast")[0]
    assert _autocast_seen(bench, monkeypatch, ["--net", "TINY", "--no-amp"]) == [None]
    assert ", float32, random weights" in capsys.readouterr().out


def test_default_precision_is_the_detectors(bench, monkeypatch, capsys):
    """SOLVER.AMP 'auto' (as test_net): bf16 for ZF on a CPU with bf16 units, float32 for TINY."""
    from frcnn import precision

    monkeypatch.setattr(precision, "cpu_has_bf16_matmul", lambda: True)
    assert _autocast_seen(bench, monkeypatch, ["--net", "ZF", "--num-classes", "3"]) == [torch.bfloat16]
    assert _autocast_seen(bench, monkeypatch, ["--net", "TINY"]) == [None]
    out = capsys.readouterr().out
    assert "precision: bf16 autocast on the CPU (SOLVER.AMP auto" in out
    assert "precision: float32 (SOLVER.AMP auto" in out
