"""Solver: Caffe SGD, lr schedule, frozen layers, snapshots, exact resume, NaN stop."""
import os

import numpy as np
import pytest
import torch
import torch.nn as nn

from frcnn.config import get_default_cfg
from frcnn.fast_rcnn import train as T
from frcnn.safe_io import load_torch
from train_helpers import train


class ToyDetector(nn.Module):
    """Mimics the FasterRCNN training interface; uses torch and numpy RNGs like target sampling."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2))

    def forward(self, images, im_info, gt_boxes, proposals=None):
        f = self.backbone(images).mean(dim=(2, 3))
        idx = torch.from_numpy(np.random.permutation(f.shape[0]))  # numpy RNG
        noise = torch.randn(f.shape) * 0.01                          # torch RNG
        out = self.head(f[idx] + noise)
        tgt = torch.stack([g[:, 4].sum() for g in gt_boxes])[idx]
        return {"cls_loss": (out[:, 0] - tgt).pow(2).mean(), "bbox_loss": out[:, 1].abs().mean()}


def toy_loader(seed, ims=2):
    def fn(start):
        def gen():
            k = start
            while True:
                g = torch.Generator().manual_seed(seed * 100003 + k)
                yield {"images": torch.randn(ims, 3, 8, 8, generator=g),
                       "im_info": torch.tensor([[8.0, 8.0, 1.0]] * ims),
                       "gt_boxes": [torch.tensor([[0, 0, 4, 4, float(k % 3 + 1)]]) for _ in range(ims)],
                       "proposals": None, "image_ids": [f"img{k}_{i}" for i in range(ims)],
                       "iteration": k}
                k += 1
        return gen()
    return fn


def _cfg():
    cfg = get_default_cfg()
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SOLVER.DISPLAY = 1000
    cfg.TRAIN.SNAPSHOT_ITERS = 5
    return cfg


class LossRecorder:
    def __init__(self, model):
        self.losses = []
        orig = model.forward

        def fwd(*a, **k):
            out = orig(*a, **k)
            self.losses.append(float(sum(out.values()).detach()))
            return out
        model.forward = fwd


def _run(tmp, max_iters, cfg, stop_at=None, resume=True):
    torch.manual_seed(0)
    model = ToyDetector()
    rec = LossRecorder(model)
    if stop_at is not None:
        # interrupted right after the snapshot of iteration stop_at
        train(model, toy_loader(cfg.RNG_SEED), cfg, tmp, max_iters, 7, 2, "toy", stop_at=stop_at)
        torch.manual_seed(123)  # a different process state: resume must not depend on it
        np.random.seed(77)
        model = ToyDetector()
        rec2 = LossRecorder(model)
        train(model, toy_loader(cfg.RNG_SEED), cfg, tmp, max_iters, 7, 2, "toy")
        return rec.losses + rec2.losses, model
    train(model, toy_loader(cfg.RNG_SEED), cfg, tmp, max_iters, 7, 2, "toy", resume=resume)
    return rec.losses, model


def test_resume_is_exact(tmp_path):
    cfg = _cfg()
    full, m1 = _run(str(tmp_path / "a"), 20, cfg)
    half, m2 = _run(str(tmp_path / "b"), 20, cfg, stop_at=10)
    assert len(full) == len(half) == 20
    assert full == half
    for (n, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), n


def test_snapshots_and_final(tmp_path):
    cfg = _cfg()
    _run(str(tmp_path), 12, cfg)
    names = sorted(os.listdir(tmp_path))
    assert "toy_iter_5.pth" in names and "toy_iter_10.pth" in names and "toy_iter_12.pth" in names
    assert T.find_snapshot(str(tmp_path), "toy").endswith("toy_iter_12.pth")
    snap = load_torch(tmp_path / "toy_iter_5.pth")
    assert snap["iteration"] == 5 and snap["data"]["next_batch"] == 5
    assert {"torch", "numpy", "python"} <= set(snap["rng_per_rank"][0])
    assert snap["signature"]["max_iters"] == 12 and snap["signature"]["seed"] == cfg.RNG_SEED
    assert "model" in load_torch(tmp_path / "toy_final.pth")


def test_optimizer_groups_and_frozen():
    cfg = get_default_cfg()
    model = ToyDetector()
    T.freeze(model, ["backbone"])
    opt = T.build_optimizer(model, T.SolverParams.from_cfg(cfg, 10, 5), 0.001)
    ids = {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(id(p) not in ids for p in model.backbone.parameters())
    by_mult = {g["lr_mult"]: g for g in opt.param_groups}
    assert by_mult[2.0]["lr"] == pytest.approx(0.002) and by_mult[1.0]["lr"] == pytest.approx(0.001)
    assert by_mult[2.0]["weight_decay"] == by_mult[1.0]["weight_decay"] == 0.0005
    assert T.step_lr(0.001, 0.1, 30, 29) == pytest.approx(0.001)
    assert T.step_lr(0.001, 0.1, 30, 30) == pytest.approx(0.0001)


def test_warmup_rises_linearly_then_follows_the_steps():
    # lr 0.02, x0.1 at 8, warm-up over 4 iterations from 0.5 x: 0.01, 0.0125, 0.015, 0.0175, 0.02
    got = [T.step_lr(0.02, 0.1, 8, i, 4, 0.5) for i in range(10)]
    want = [0.01, 0.0125, 0.015, 0.0175, 0.02, 0.02, 0.02, 0.02, 0.002, 0.002]
    assert got == pytest.approx(want)
    assert T.step_lr(0.02, 0.1, 8, 0) == 0.02  # no warm-up by default (the reference's lr)
    cfg = get_default_cfg()
    cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.WARMUP_FACTOR = 201, 0.5
    cfg.DIST.SCHEDULE_SCALING = "linear"
    s = T.SolverParams.from_cfg(cfg, 1000, 750, world_size=2)
    assert (s.max_iters, s.stepsize, s.warmup_iters, s.warmup_factor) == (500, 375, 101, 0.5)


def test_caffe_sgd_matches_formula():
    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = T.CaffeSGD([dict(params=[w], lr=0.1, weight_decay=0.5)], lr=0.1, momentum=0.9)
    v = torch.zeros(2)
    ref = w.detach().clone()
    for step in range(3):
        lr = 0.1 if step < 2 else 0.01
        opt.param_groups[0]["lr"] = lr
        w.grad = torch.tensor([0.3, 0.7])
        v = 0.9 * v + lr * (w.grad + 0.5 * ref)
        ref = ref - v
        opt.step()
        assert torch.allclose(w.detach(), ref)


def test_nan_loss_names_images(tmp_path):
    cfg = _cfg()

    class Bad(ToyDetector):
        def forward(self, *a, **k):
            out = super().forward(*a, **k)
            out["cls_loss"] = out["cls_loss"] * float("nan")
            return out

    with pytest.raises(FloatingPointError, match="iteration 0 .*img0_0"):
        train(Bad(), toy_loader(3), cfg, str(tmp_path), 3, 10, 2, "bad")
    assert not os.path.exists(tmp_path / "bad_iter_3.pth")  # no snapshot of NaN weights


def _shapes_cfg(tmp):
    cfg = get_default_cfg()
    cfg.SOLVER.DISPLAY = 1000
    cfg.TRAIN.SNAPSHOT_ITERS = 1000
    cfg.TRAIN.SCALES = (160,)
    cfg.TRAIN.MAX_SIZE = 270
    cfg.TRAIN.NUM_WORKERS = 0
    cfg.TRAIN.RPN_PRE_NMS_TOP_N = 600
    cfg.TRAIN.RPN_POST_NMS_TOP_N = 100
    cfg.TRAIN.HAS_RPN = True
    cfg.ANCHOR_SCALES = (2, 4, 8)
    cfg.SHAPES.NUM_TRAIN = 8
    cfg.SHAPES.NUM_TEST = 2
    return cfg


def test_resume_exact_on_tiny_detector(tmp_path):
    """End2end TINY on shapes: 6 iterations == 3 + resume 3 (losses and weights)."""
    from frcnn.datasets.factory import get_imdb
    from frcnn.models import build_model
    from frcnn.roi_data.loader import loader_factory
    from frcnn.roi_data.roidb import get_training_roidb

    cfg = _shapes_cfg(tmp_path)
    cfg.TRAIN.SNAPSHOT_ITERS = 3
    imdb = get_imdb("shapes_train", cfg)
    roidb = get_training_roidb(imdb, cfg)

    def run(out, stop_at=None):
        losses = []

        def make():
            torch.manual_seed(0)
            m = build_model("TINY", imdb.num_classes, cfg)
            rec = LossRecorder(m)
            rec.losses = losses
            return m

        loader = loader_factory(roidb, cfg, 1, cfg.RNG_SEED)
        if stop_at:
            train(make(), loader, cfg, out, 6, 4, 1, "t", roidb=roidb, iter_size=2,
                  stop_at=stop_at)
            torch.manual_seed(99)
        m = make()
        train(m, loader, cfg, out, 6, 4, 1, "t", roidb=roidb, iter_size=2)
        return losses, m

    a, ma = run(str(tmp_path / "a"))
    b, mb = run(str(tmp_path / "b"), stop_at=3)
    assert len(a) == len(b) == 12  # 6 updates x iter_size 2
    assert a == b
    for (n, x), (_, y) in zip(ma.state_dict().items(), mb.state_dict().items()):
        assert torch.equal(x, y), n


def test_detections_for_image_threshold_nms_cap():
    """test_net's per-image post-processing: score > thresh, per-class NMS, cap over classes."""
    from frcnn.fast_rcnn.test import detections_for_image

    R, K = 6, 3
    scores = np.zeros((R, K), np.float32)
    boxes = np.zeros((R, 4 * K), np.float32)
    base = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60],
                     [0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 45, 45]], np.float32)
    for j in range(K):
        boxes[:, 4 * j:4 * j + 4] = base
    scores[:, 1] = [0.9, 0.8, 0.7, 0.04, 0.0, 0.0]   # row 1 overlaps row 0 -> suppressed
    scores[:, 2] = [0.0, 0.0, 0.0, 0.0, 0.6, 0.05]   # 0.05 is not > 0.05
    dets = detections_for_image(scores, boxes, K, 0.05, 0.3, 100)
    assert dets[1][:, 4].tolist() == pytest.approx([0.9, 0.7])
    assert dets[2][:, 4].tolist() == pytest.approx([0.6])
    capped = detections_for_image(scores, boxes, K, 0.05, 0.3, 2)
    assert sorted(np.hstack([capped[1][:, 4], capped[2][:, 4]]).tolist()) == pytest.approx([0.7, 0.9])


def test_timer_median():
    from frcnn.utils.timer import Timer

    t = Timer()
    t.times = [5.0, 1.0, 2.0, 3.0]
    assert t.median(skip=1) == 2.0
