import numpy as np
import torch

from frcnn.config import get_default_cfg
from frcnn.utils.bbox_transform import bbox_transform
from frcnn.roi_data.proposal_target import ProposalTargetParams, proposal_target

GT = torch.tensor([[100., 100., 199., 199., 3.], [300., 300., 349., 389., 1.]])


def _rois(n_fg, n_bg, n_ignore, g):
    """n_fg rois with IoU >= 0.5 to gt 0, n_bg with IoU in [0.1, 0.5), n_ignore with IoU < 0.1."""
    j = torch.randint(-8, 9, (n_fg, 4), generator=g).float()
    fg = GT[0, :4] + j
    bg = GT[0, :4] + torch.tensor([60., 0., 60., 0.])            # IoU 40/160 = 0.25
    bg = bg.repeat(n_bg, 1) + torch.randint(-3, 4, (n_bg, 1), generator=g).float()
    far = torch.tensor([[500., 0., 540., 40.]]).repeat(n_ignore, 1)
    return torch.cat((fg, bg, far))


def _cfg(lo=0.1, batch=128, ims=2):
    cfg = get_default_cfg()
    cfg.TRAIN.BG_THRESH_LO = lo
    cfg.TRAIN.BATCH_SIZE = batch
    return ProposalTargetParams.from_cfg(cfg, ims)


def test_counts_many_fg():
    g = torch.Generator().manual_seed(0)
    out = proposal_target(_rois(100, 100, 50, g), GT, 5, _cfg(), generator=g)
    labels = out["labels"]
    assert len(labels) == 64                                     # 128 / 2 images
    assert int((labels > 0).sum()) == 16 and bool((labels[:16] > 0).all())   # round(0.25 * 64)
    assert bool((labels[16:] == 0).all())


def test_counts_few_fg_and_no_replacement():
    g = torch.Generator().manual_seed(1)
    out = proposal_target(_rois(3, 10, 50, g), GT, 5, _cfg(), generator=g)
    labels = out["labels"]
    # 3 jittered fg + the 2 appended gt boxes; bg only 10 candidates: a short batch
    assert int((labels > 0).sum()) == 5 and len(labels) == 15
    out = proposal_target(_rois(3, 10, 50, g), GT, 5, _cfg(lo=0.0), generator=g)
    assert len(out["labels"]) == 64                              # BG_THRESH_LO 0 admits the far rois


def test_gt_appended_when_no_rois():
    out = proposal_target(torch.zeros(0, 4), GT, 5, _cfg())
    assert sorted(out["labels"].tolist()) == [1, 3]
    np.testing.assert_allclose(out["bbox_targets"].abs().sum().item(), 0, atol=1e-6)


def test_targets_class_columns_and_normalisation():
    g = torch.Generator().manual_seed(2)
    rois = _rois(20, 30, 0, g)
    means = torch.arange(20, dtype=torch.float32).view(5, 4) * 0.01
    stds = torch.full((5, 4), 0.1)
    stds[3] = torch.tensor([0.1, 0.1, 0.2, 0.2])
    out = proposal_target(rois, GT, 5, _cfg(), means, stds, generator=g)
    labels, t, inw, outw = out["labels"], out["bbox_targets"], out["bbox_inside_weights"], out["bbox_outside_weights"]
    fg = labels > 0
    for i in range(len(labels)):
        c = int(labels[i])
        if c == 0:
            assert float(t[i].abs().sum()) == 0 and float(inw[i].sum()) == 0
            continue
        raw = bbox_transform(out["rois"][i:i + 1], GT[:1, :4] if c == 3 else GT[1:, :4])[0]
        np.testing.assert_allclose(t[i, 4 * c:4 * c + 4].numpy(), ((raw - means[c]) / stds[c]).numpy(),
                                   rtol=1e-5, atol=1e-6)
        mask = torch.zeros(20, dtype=torch.bool)
        mask[4 * c:4 * c + 4] = True
        assert float(t[i, ~mask].abs().sum()) == 0
        assert inw[i].tolist() == mask.float().tolist() == outw[i].tolist()
    assert int(fg.sum()) == 16


def test_deterministic_with_generator():
    a = proposal_target(_rois(50, 80, 0, torch.Generator().manual_seed(0)), GT, 5, _cfg(),
                        generator=torch.Generator().manual_seed(7))
    b = proposal_target(_rois(50, 80, 0, torch.Generator().manual_seed(0)), GT, 5, _cfg(),
                        generator=torch.Generator().manual_seed(7))
    assert torch.equal(a["rois"], b["rois"])
