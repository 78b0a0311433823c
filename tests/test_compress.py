"""Truncated-SVD compression of fc6/fc7 (tools/compress_net.py)."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from frcnn.config import get_default_cfg
from frcnn.models import build_model
from frcnn.models.compress import SVDLinear, compress_head, default_ranks, svd_structure

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_svd_linear_is_best_rank_k():
    torch.manual_seed(0)
    lin = torch.nn.Linear(40, 30)
    x = torch.randn(8, 40)
    full = SVDLinear.from_linear(lin, 30)          # full rank: the same layer
    torch.testing.assert_close(full(x), lin(x), rtol=1e-5, atol=1e-5)
    m = SVDLinear.from_linear(lin, 5)
    assert m.L.weight.shape == (5, 40) and m.U.weight.shape == (30, 5) and m.L.bias is None
    W = lin.weight.detach().double()
    approx = (m.U.weight @ m.L.weight).double()
    s = torch.linalg.svdvals(W)
    # Eckart-Young: the error of the best rank-5 approximation is sqrt(sum of the dropped s^2)
    assert torch.linalg.norm(W - approx).item() == pytest.approx(torch.sqrt((s[5:] ** 2).sum()).item(), rel=1e-4)
    torch.testing.assert_close(m(x), x @ approx.float().T + lin.bias, rtol=1e-4, atol=1e-5)


def test_compress_head_and_reload(tmp_path):
    torch.manual_seed(0)
    cfg = get_default_cfg()
    model = build_model("TINY", 4, cfg, parts=("head",), pretrained=False).eval()
    assert default_ranks(model) == {"fc6": 64, "fc7": 16}
    n0 = sum(p.numel() for p in model.head.parameters())
    done = compress_head(model, {"fc6": 32, "fc7": 0})
    # fc6 3136 x 256 (+ bias) -> 3136 x 32 + 32 x 256 (+ bias)
    assert n0 - sum(p.numel() for p in model.head.parameters()) == 3136 * 256 - 32 * (3136 + 256)
    assert done == {"fc6": 32} and isinstance(model.head.fc6, SVDLinear)
    assert isinstance(model.head.fc7, torch.nn.Linear)
    with pytest.raises(TypeError, match="already compressed"):
        compress_head(model, {"fc6": 8})
    fresh = svd_structure(build_model("TINY", 4, cfg, parts=("head",), pretrained=False), done)
    fresh.load_state_dict(model.state_dict())
    pooled = torch.randn(3, 128, 7, 7)
    torch.testing.assert_close(fresh.eval().head.top(pooled), model.head.top(pooled))


def test_compress_tool(tmp_path):
    """The tool writes a model that test_net's loader rebuilds: the same outputs as compressing
    in process; fc6 at full rank (256) keeps fc6 exact."""
    torch.manual_seed(0)
    cfg = get_default_cfg()
    model = build_model("TINY", 4, cfg, parts=("rpn", "head"), pretrained=False).eval()
    src = tmp_path / "tiny_faster_rcnn_final.pth"
    torch.save({"model": model.state_dict(), "net": "TINY",
                "classes": ["__background__", "a", "b", "c"]}, src)
    p = subprocess.run([sys.executable, "tools/compress_net.py", "--net", "TINY", "--model",
                        str(src), "--fc6", "256", "--fc7", "64"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    out = tmp_path / "tiny_faster_rcnn_final_svd_fc6_256_fc7_64.pth"
    assert out.exists()
    from frcnn.model_file import ModelFile

    small = ModelFile.load(str(out)).build(cfg, net="TINY", num_classes=4)
    assert isinstance(small.head.fc6, SVDLinear) and small.head.fc7.k == 64
    import copy

    ref = copy.deepcopy(model)
    compress_head(ref, {"fc6": 256, "fc7": 64})
    pooled = torch.randn(5, 128, 7, 7)
    x = torch.relu(model.head.conv_reduce(pooled)).flatten(1) if hasattr(model.head, "conv_reduce") else None
    with torch.no_grad():
        torch.testing.assert_close(small.head.top(pooled), ref.head.top(pooled))
        if x is not None:
            torch.testing.assert_close(small.head.fc6(x), model.head.fc6(x), rtol=1e-4, atol=1e-4)
