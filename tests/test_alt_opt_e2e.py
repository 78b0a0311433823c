"""CI end to end: a short 4-stage alt-opt of TINY on shapes, then test_net, as a user runs them.

The mAP floor is far above what a broken stage reaches (an untrained or mis-assembled detector
scores ~0.0-0.05 on shapes); this short run measured 0.83 mAP in 4.3 min on 2 busy cores on the
set of the time (docs/RESULTS.md; shapes_alt_opt.yml has had its own, easier set since
2026-11-22).
"""
import os
import re
import subprocess
import sys

import pytest
import torch
from frcnn.safe_io import load_torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(ROOT, "experiments", "cfgs", "shapes_alt_opt.yml")
MAP_FLOOR = 0.6
# short schedule: all four stages, a few hundred iterations each (~2-3 min on 2 cores)
ITERS = "(800,1200,400,600)"
STEPS = "(600,900,300,450)"


def _run(args, timeout=900):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.run([sys.executable] + args, cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=timeout)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp("alt_opt_out"))
    sets = ["--set", "OUTPUT_DIR", out_dir, "EXP_DIR", "ci", "ALT_OPT.ITERS", ITERS,
            "ALT_OPT.STEPSIZES", STEPS, "SOLVER.DISPLAY", "100"]
    log = _run(["tools/train_faster_rcnn_alt_opt.py", "--net", "TINY", "--imdb", "shapes_train",
                "--cfg", CFG] + sets)
    return out_dir, sets, log


def test_stages_written(trained):
    out_dir, _, log = trained
    d = os.path.join(out_dir, "ci", "shapes_train")
    for name in ("stage1_rpn_final.pth", "stage1_rpn_proposals.pkl", "stage1_fast_rcnn_final.pth",
                 "stage2_rpn_final.pth", "stage2_rpn_proposals.pkl", "stage2_fast_rcnn_final.pth",
                 "faster_rcnn_final.pth"):
        assert os.path.exists(os.path.join(d, "tiny_" + name)), name
    final = load_torch(os.path.join(d, "tiny_faster_rcnn_final.pth"))
    assert final["classes"][0] == "__background__" and final["net"] == "TINY"
    # saved un-normalised: identity normalisation buffers
    assert torch.equal(final["model"]["bbox_stds"], torch.ones_like(final["model"]["bbox_stds"]))
    # stage 2 froze the convs: same convs in Fast R-CNN 1, 2 and the final model
    f1 = load_torch(os.path.join(d, "tiny_stage1_fast_rcnn_final.pth"))["model"]
    f2 = load_torch(os.path.join(d, "tiny_stage2_fast_rcnn_final.pth"))["model"]
    r2 = load_torch(os.path.join(d, "tiny_stage2_rpn_final.pth"))["model"]
    for k, v in final["model"].items():
        if k.startswith("backbone."):
            assert torch.equal(v, f1[k]) and torch.equal(v, f2[k]) and torch.equal(v, r2[k]), k
        if k.startswith("rpn."):
            assert torch.equal(v, r2[k]), k
        if k.startswith("head."):
            assert torch.equal(v, f2[k]), k
    assert "stage times" in log


def test_rerun_skips_finished_stages(trained):
    out_dir, sets, _ = trained
    log = _run(["tools/train_faster_rcnn_alt_opt.py", "--net", "TINY", "--imdb", "shapes_train",
                "--cfg", CFG] + sets, timeout=300)
    assert log.count("skip: ") == 7, log[-3000:]
    assert "iters (lr" not in log  # nothing trained


def test_rerun_with_another_seed_refuses_the_finished_stages(trained):
    """Skipping a stage trained with another seed would report the old run as the new one."""
    out_dir, sets, _ = trained
    p = subprocess.run([sys.executable, "tools/train_faster_rcnn_alt_opt.py", "--net", "TINY",
                        "--imdb", "shapes_train", "--cfg", CFG, "--seed", "4"] + sets, cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-2000:]
    assert "trained with seed 3, this run has seed 4" in p.stderr and "EXP_DIR" in p.stderr
    assert "Traceback" not in p.stderr


def test_net_map_floor(trained):
    out_dir, sets, _ = trained
    model = os.path.join(out_dir, "ci", "shapes_train", "tiny_faster_rcnn_final.pth")
    log = _run(["tools/test_net.py", "--net", "TINY", "--model", model, "--imdb", "shapes_test",
                "--cfg", CFG] + sets, timeout=600)
    m = re.findall(r"Mean AP = ([0-9.]+)", log)
    assert m, log[-3000:]
    assert re.search(r"im_detect [0-9.]+ ms/image, misc [0-9.]+ ms/image", log)
    mAP = float(m[-1])
    print(f"CI short alt-opt mAP {mAP:.4f}")
    assert mAP >= MAP_FLOOR, log[-3000:]
