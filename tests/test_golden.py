"""Golden values of one training forward of TINY on a fixed image with fixed seeds.

A change here means the numbers the detector computes changed (init order, anchors, targets,
sampling, losses, ops). If the change is intended, update the values and say why in the commit.
"""
import numpy as np
import torch

from frcnn.config import get_default_cfg
from frcnn.models import build_model

GOLDEN = {                     # torch 2.13 CPU, float32
    "rpn_cls_loss": 0.7096419334411621,
    "rpn_bbox_loss": 0.27230551838874817,
    "cls_loss": 1.1067177057266235,
    "bbox_loss": 0.004917296580970287,
}


def _fixed_image(H=160, W=224):
    """BGR minus means: a textured background with two flat rectangles."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    im = np.stack((np.sin(x / 7.0) * 40, np.cos(y / 5.0) * 40, np.sin((x + y) / 11.0) * 40))
    im[:, 20:90, 30:110] = np.array([90.0, -60.0, 10.0])[:, None, None]
    im[:, 70:150, 120:210] = np.array([-80.0, 70.0, 40.0])[:, None, None]
    return torch.from_numpy(im)[None].float()


def _losses():
    torch.manual_seed(3)
    cfg = get_default_cfg()
    model = build_model("TINY", 3, cfg).train()
    gens = [torch.Generator().manual_seed(3)]
    gt = [torch.tensor([[30., 20., 109., 89., 1.], [120., 70., 209., 149., 2.]])]
    with torch.no_grad():
        return {k: v.item() for k, v in model(_fixed_image(), torch.tensor([[160., 224., 1.]]), gt,
                                              generators=gens).items()}


def test_golden_losses():
    got = _losses()
    assert set(got) == set(GOLDEN)
    for k, v in GOLDEN.items():
        assert abs(got[k] - v) <= 1e-5 + 1e-4 * abs(v), (k, got[k], v)
