"""tools/export.py / frcnn.export: the torch.export program, loaded in a process that imports only
torch and the ops library, gives the Detector's detections (random-weight TINY and ELITE0, whose
TF 'SAME' padding depends on the image size; 3 image sizes)."""
import glob
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from frcnn.fast_rcnn.test import get_test_blob

from test_api import small_cfg, CLASSES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LOADER = r"""
import glob, json, sys
import numpy as np, torch
torch.ops.load_library(glob.glob(sys.argv[1])[0])
extra = {"classes.json": ""}
ep = torch.export.load(sys.argv[2], extra_files=extra)
assert not [m for m in sys.modules if m.split(".")[0] == "frcnn"], "frcnn Python code imported"
prog = ep.module()
data = np.load(sys.argv[3])
out = {}
with torch.no_grad():
    for i in range(int(data["n"])):
        b, s, l = prog(*(torch.from_numpy(data[f"{k}{i}"]) for k in ("images", "im_info", "size")))
        out[f"b{i}"], out[f"s{i}"], out[f"l{i}"] = b.numpy(), s.numpy(), l.numpy()
np.savez(sys.argv[4], classes=np.array(json.loads(extra["classes.json"])["classes"]), **out)
"""


@pytest.mark.parametrize("net", ["TINY", "ELITE0"])
def test_exported_program_matches_detector(tmp_path, net):
    from frcnn import Detector
    from frcnn.models import build_model

    torch.manual_seed(0)
    m = build_model(net, len(CLASSES), small_cfg(), pretrained=False)
    pth = str(tmp_path / f"{net.lower()}_faster_rcnn_final.pth")
    torch.save({"model": m.state_dict(), "net": net, "classes": CLASSES}, pth)
    (tmp_path / "cfg.yml").write_text("TEST:\n  SCALES: [160]\n  MAX_SIZE: 320\n"
                                      "  RPN_POST_NMS_TOP_N: 100\n")
    im_path = str(tmp_path / "a.jpg")
    rng = np.random.default_rng(0)
    cv2.imwrite(im_path, cv2.GaussianBlur(rng.integers(0, 255, (200, 280, 3), np.uint8), (9, 9), 3))
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "lib"))
    out = str(tmp_path / "det.pt2")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "export.py"), "--model", pth,
                        "--out", out, "--score-thresh", "0.1", "--check", im_path],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0 and "same" in p.stdout, p.stdout + p.stderr
    det = Detector.from_file(pth, score_thresh=0.1)
    ims = [cv2.GaussianBlur(rng.integers(0, 255, hw + (3,), np.uint8), (9, 9), 3)
           for hw in [(240, 320), (400, 150), (90, 90)]]
    data = {"n": len(ims)}
    for i, im in enumerate(ims):
        images, im_info, _ = get_test_blob(im, det.cfg)
        data.update({f"images{i}": images.numpy(), f"im_info{i}": im_info.numpy(),
                     f"size{i}": np.array(im.shape[:2], np.float32)})
    np.savez(tmp_path / "in.npz", **data)
    (tmp_path / "load.py").write_text(LOADER)
    so = os.path.join(ROOT, "lib", "frcnn", "_C*.so")
    assert glob.glob(so)
    p = subprocess.run([sys.executable, str(tmp_path / "load.py"), so, out, str(tmp_path / "in.npz"),
                        str(tmp_path / "res.npz")], capture_output=True, text=True, timeout=300,
                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert p.returncode == 0, p.stderr
    res = np.load(tmp_path / "res.npz")
    assert list(res["classes"]) == CLASSES
    n = 0
    for i, im in enumerate(ims):
        d = det(im)
        n += len(d)
        np.testing.assert_array_equal(res[f"l{i}"], d.labels)
        np.testing.assert_allclose(res[f"b{i}"], d.boxes, atol=1e-3)
        np.testing.assert_allclose(res[f"s{i}"], d.scores, atol=1e-6)
    assert n > 10
