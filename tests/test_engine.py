"""The engine and the wiring it relies on: hooks, snapshot names, config keys that must not be
silent, im_detect and the test-time post-processing, and how the model wires its layers
(fg column to the proposal layer, the losses' sigmas, explicit sampling generators)."""
import os

import numpy as np
import pytest
import torch

from frcnn.config import cfg_from_list, get_default_cfg
from frcnn.engine import HookBase, PeriodicEval, Trainer
from frcnn.models import build_model
from frcnn.models import roi_heads as roi_heads_module
from frcnn.models import rpn as rpn_module
from frcnn.roi_data.proposal_target import ProposalTargetParams
from test_train import ToyDetector, _cfg, toy_loader
from train_helpers import train


# --- config keys ------------------------------------------------------------------------------
def test_unused_reference_keys_are_errors_unless_default():
    cfg_from_list(["TRAIN.PROPOSAL_METHOD", "gt"], get_default_cfg())  # the default: accepted
    with pytest.raises(ValueError, match="TRAIN.PROPOSAL_METHOD is not used"):
        cfg_from_list(["TRAIN.PROPOSAL_METHOD", "selective_search"], get_default_cfg())
    with pytest.raises(ValueError, match="ROOT_DIR is not used.*DATA_DIR"):
        cfg_from_list(["ROOT_DIR", "/tmp"], get_default_cfg())


def test_feat_stride_must_match_the_net():
    cfg = get_default_cfg()
    cfg.FEAT_STRIDE = 8
    with pytest.raises(ValueError, match="FEAT_STRIDE 8 does not match TINY"):
        build_model("TINY", 3, cfg)


def test_rois_per_image_follow_the_loader_batch():
    cfg = get_default_cfg()
    assert ProposalTargetParams.from_cfg(cfg, 1).rois_per_image == 128
    assert ProposalTargetParams.from_cfg(cfg, 2).rois_per_image == 64
    m = build_model("TINY", 3, cfg, ims_per_batch=1)
    assert m.head.proposal_target_params.rois_per_image == 128


def test_bbox_reg_off_trains_no_box_regression():
    cfg = get_default_cfg()
    cfg.TRAIN.BBOX_REG = False
    torch.manual_seed(0)
    m = build_model("TINY", 3, cfg, ims_per_batch=1).train()
    im = torch.randn(1, 3, 96, 128) * 50
    gt = [torch.tensor([[10., 10., 60., 70., 1.]])]
    losses = m(im, torch.tensor([[96., 128., 1.]]), gt, generators=[torch.Generator().manual_seed(0)])
    assert set(losses) == {"rpn_cls_loss", "rpn_bbox_loss", "cls_loss"}


# --- snapshots and hooks ----------------------------------------------------------------------
def test_snapshot_infix_names_snapshots(tmp_path):
    cfg = _cfg()
    cfg.TRAIN.SNAPSHOT_INFIX = "run7"
    torch.manual_seed(0)
    train(ToyDetector(), toy_loader(3), cfg, str(tmp_path), 6, 10, 2, "toy")
    names = sorted(os.listdir(tmp_path))
    assert "toy_run7_iter_5.pth" in names and "toy_run7_iter_6.pth" in names
    assert "toy_final.pth" in names and not any(n.startswith("toy_iter_") for n in names)


def test_resume_refuses_other_settings(tmp_path):
    from frcnn.engine import ConfigMismatch

    cfg = _cfg()
    torch.manual_seed(0)
    train(ToyDetector(), toy_loader(3), cfg, str(tmp_path), 12, 10, 2, "toy", stop_at=5)
    with pytest.raises(ConfigMismatch, match=r"max_iters: snapshot 12, now 20.*--no-resume"):
        train(ToyDetector(), toy_loader(3), cfg, str(tmp_path), 20, 10, 2, "toy")
    with pytest.raises(ConfigMismatch, match=r"ims_per_batch: snapshot 2, now 1"):
        train(ToyDetector(), toy_loader(3), cfg, str(tmp_path), 12, 10, 1, "toy")
    assert train(ToyDetector(), toy_loader(3), cfg, str(tmp_path), 12, 10, 2, "toy")


class _Count(HookBase):
    def __init__(self):
        self.calls = []

    def before_train(self):
        self.calls.append("before_train")

    def after_step(self):
        self.calls.append(self.trainer.iter)

    def after_train(self):
        self.calls.append("after_train")


def test_trainer_runs_hooks_and_periodic_eval():
    torch.manual_seed(0)
    model = ToyDetector()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    trainer = Trainer(model, opt, iter(toy_loader(3)(0)), window=4)
    seen = []

    def evaluate(m):
        assert not m.training or True
        seen.append(trainer.iter)
        m.eval()
        return {"mAP": 0.5}

    count, ev = _Count(), PeriodicEval(4, evaluate, "toy")
    trainer.register_hooks([count, ev])
    trainer.train(0, 10)
    assert count.calls == ["before_train"] + list(range(1, 11)) + ["after_train"]
    assert seen == [4, 8, 10] and [h[0] for h in ev.history] == [4, 8, 10]
    assert model.training  # put back in train mode after each evaluation
    assert len(trainer.window) == 0  # windows are flushed at 4, 8 and the end


class _FailAt(HookBase):
    def __init__(self, k):
        self.k = k

    def after_step(self):
        if self.trainer.iter == self.k:
            raise RuntimeError(f"step {self.k} failed")


def test_after_train_runs_when_a_step_raises_and_no_final_file_is_written(tmp_path):
    from frcnn.engine import Checkpointer, Snapshot

    torch.manual_seed(0)
    model = ToyDetector()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    trainer = Trainer(model, opt, iter(toy_loader(3)(0)), window=4)
    ckpt = Checkpointer(str(tmp_path), "toy", model, opt, {"seed": 0})
    count = _Count()
    trainer.register_hooks([count, Snapshot(ckpt, 2), _FailAt(3)])
    with pytest.raises(RuntimeError, match="step 3 failed"):
        trainer.train(0, 10)
    assert count.calls == ["before_train", 1, 2, 3, "after_train"]
    assert os.path.exists(tmp_path / "toy_iter_2.pth")   # the work done so far is kept
    assert not os.path.exists(ckpt.final_file)           # but it is not a finished model
    trainer.hooks.pop()  # the same trainer, no failure: the final file is written
    trainer.train(3, 4)
    assert count.calls[-2:] == [4, "after_train"] and os.path.exists(ckpt.final_file)


def test_hook_error_in_after_train_does_not_hide_the_step_error(capsys):
    class BadAfter(HookBase):
        def after_train(self):
            raise ValueError("cleanup failed")

    model = ToyDetector()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.01),
                      iter(toy_loader(3)(0)), window=4)
    trainer.register_hooks([BadAfter(), _FailAt(1)])
    with pytest.raises(RuntimeError, match="step 1 failed"):
        trainer.train(0, 3)
    assert "BadAfter.after_train failed" in capsys.readouterr().err


def test_hooks_hold_a_weak_reference_to_the_trainer():
    import gc
    import weakref

    model = ToyDetector()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.01),
                      iter(toy_loader(3)(0)), window=4)
    hook = _Count()
    trainer.register_hooks([hook])
    assert hook.trainer is trainer
    ref = weakref.ref(trainer)
    del trainer
    gc.collect()
    assert ref() is None and hook.trainer is None


def test_hook_state_is_snapshotted_and_resumed(tmp_path):
    """PeriodicEval's history survives an interrupted run: snapshot at 4, resume to 8."""
    cfg = _cfg()
    cfg.TRAIN.SNAPSHOT_ITERS = 4

    def run(stop_at=None):
        torch.manual_seed(0)
        ev = PeriodicEval(2, lambda m: {"it": float(len(ev.history))}, "toy")
        from frcnn.engine.checkpoint import roidb_signature
        from frcnn.fast_rcnn import train as T

        solver = T.SolverParams.from_cfg(cfg, 8, 7)
        extra = [_FailAt(stop_at)] if stop_at else []
        try:
            T.train_model(ToyDetector(), toy_loader(3), solver, str(tmp_path), "toy",
                          ims_per_batch=2, seed=3, data_signature=roidb_signature([]),
                          device="cpu", hooks=[ev] + extra, log_dir=None, progress=False)
        except RuntimeError:
            pass
        return ev.history

    assert [h[0] for h in run(stop_at=5)] == [2, 4]
    resumed = run()
    assert [h[0] for h in resumed] == [2, 4, 6, 8]  # 2 and 4 from the snapshot of iteration 4
    assert [h[1]["it"] for h in resumed] == [0.0, 1.0, 2.0, 3.0]


# --- test time --------------------------------------------------------------------------------
class _StubDetector(torch.nn.Module):
    """Returns fixed RoIs (scaled image coords), class probabilities and deltas."""

    def __init__(self, rois, cls_prob, bbox_pred):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.out = {"rois": rois, "cls_prob": cls_prob, "bbox_pred": bbox_pred}
        self.seen = None

    def forward(self, images, im_info, proposals=None):
        self.seen = (images.shape, im_info.clone())
        return dict(self.out)


def test_im_detect_unscales_decodes_and_clips():
    """Hand-worked: a 100x200 image tested at scale 200 is resized x2; RoIs come back / 2."""
    from frcnn.fast_rcnn.test import im_detect

    cfg = get_default_cfg()
    cfg.TEST.SCALES = (200,)
    im = np.zeros((100, 200, 3), np.uint8)
    rois = torch.tensor([[0., 20., 40., 60., 80.], [0., 380., 0., 420., 10.]])
    prob = torch.tensor([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    deltas = torch.zeros(2, 12)
    deltas[0, 8] = 0.1                      # class 2 of RoI 0: dx = 0.1 of the width 21
    model = _StubDetector(rois, prob, deltas)
    scores, boxes = im_detect(model, im, cfg)
    assert model.seen[0] == (1, 3, 200, 400)
    assert model.seen[1].tolist() == [[200.0, 400.0, 2.0]]
    np.testing.assert_allclose(scores, prob.numpy())
    # RoI 0 = [10, 20, 30, 40] in the image: w = h = 21; zero deltas give x2 = cx + w/2 = 31
    np.testing.assert_allclose(boxes[0, 4:8], [10, 20, 31, 41], atol=1e-4)
    np.testing.assert_allclose(boxes[0, 8:12], [12.1, 20, 33.1, 41], atol=1e-4)
    # RoI 1 = [190, 0, 210, 5] -> decoded [190, 0, 211, 6], clipped to x <= 199
    np.testing.assert_allclose(boxes[1, 4:8], [190, 0, 199, 6], atol=1e-4)
    cfg.TEST.BBOX_REG = False
    _, raw = im_detect(model, im, cfg)
    np.testing.assert_allclose(raw[0, 8:12], [10, 20, 30, 40], atol=1e-4)


def test_detections_use_the_nms_threshold():
    """Two boxes of class 1 with IoU 0.5: NMS 0.3 keeps one, NMS 0.7 keeps both."""
    from frcnn.fast_rcnn.test import detections_for_image

    boxes = np.zeros((2, 8), np.float32)
    boxes[0, 4:] = [0, 0, 9, 9]
    boxes[1, 4:] = [0, 0, 9, 4]              # 50 of 100 pixels (+1 convention): IoU 0.5
    scores = np.array([[0.1, 0.9], [0.2, 0.8]], np.float32)
    assert len(detections_for_image(scores, boxes, 2, 0.05, 0.3, 100)[1]) == 1
    assert len(detections_for_image(scores, boxes, 2, 0.05, 0.7, 100)[1]) == 2


# --- wiring -----------------------------------------------------------------------------------
def _tiny(parts=("rpn", "head")):
    torch.manual_seed(0)
    return build_model("TINY", 3, get_default_cfg(), parts=parts, ims_per_batch=1)


def test_proposal_layer_gets_the_fg_column(monkeypatch):
    seen = []
    real = rpn_module.proposal_layer

    def spy(fg, deltas, anchors, im_info, params):
        seen.append((fg.clone(), params))
        return real(fg, deltas, anchors, im_info, params)

    monkeypatch.setattr(rpn_module, "proposal_layer", spy)
    model = _tiny().eval()
    im = torch.randn(1, 3, 96, 128) * 50
    with torch.no_grad():
        model(im, torch.tensor([[96., 128., 1.]]))
        # the layout the model's forward gives the backbone on the CPU (same conv algorithms)
        cls, _ = model.rpn.predict(model.backbone(im.contiguous(memory_format=torch.channels_last)))
    fg = torch.softmax(cls, dim=2)[0, :, 1]
    assert torch.equal(seen[0][0], fg) and not torch.equal(seen[0][0], 1 - fg)
    assert seen[0][1] is model.rpn.test_proposal_params


def test_losses_get_the_papers_sigmas(monkeypatch):
    got = {}
    real_rpn, real_frcn = rpn_module.rpn_losses, roi_heads_module.fast_rcnn_losses

    def rpn_spy(*a, sigma):
        got["rpn"] = sigma
        return real_rpn(*a, sigma=sigma)

    def frcn_spy(*a, sigma):
        got["fast_rcnn"] = sigma
        return real_frcn(*a, sigma=sigma)

    monkeypatch.setattr(rpn_module, "rpn_losses", rpn_spy)
    monkeypatch.setattr(roi_heads_module, "fast_rcnn_losses", frcn_spy)
    gt = [torch.tensor([[10., 10., 60., 70., 1.]])]
    im, info = torch.randn(1, 3, 96, 128) * 50, torch.tensor([[96., 128., 1.]])
    _tiny().train()(im, info, gt)
    assert got == {"rpn": 3.0, "fast_rcnn": 1.0}
    # the head's sigma is a cfg key (torchvision's beta 1/9 = sigma 3); the RPN's stays 3
    cfg = get_default_cfg()
    cfg.TRAIN.BBOX_SMOOTH_L1_SIGMA = 3.0
    build_model("TINY", 3, cfg, ims_per_batch=1).train()(im, info, gt)
    assert got == {"rpn": 3.0, "fast_rcnn": 3.0}


def test_generators_decide_the_samples():
    """The same generators give the same losses; other generators other samples."""
    cfg = get_default_cfg()
    cfg.ANCHOR_SCALES = (2, 4, 8)
    torch.manual_seed(0)
    model = build_model("TINY", 3, cfg, ims_per_batch=1).train()
    im = torch.randn(1, 3, 160, 224) * 50
    info = torch.tensor([[160., 224., 1.]])
    gt = [torch.tensor([[10., 10., 60., 70., 1.], [70., 20., 120., 90., 2.]])]
    run = lambda s: {k: float(v) for k, v in model(  # noqa: E731
        im, info, gt, generators=[torch.Generator().manual_seed(s)]).items()}
    with torch.no_grad():
        a, b, c = run(1), run(1), run(2)
    assert a == b and a != c
    with pytest.raises(ValueError, match="2 sampling generators for 1 images"):
        model(im, info, gt, generators=[torch.Generator(), torch.Generator()])


def test_bf16_autocast_training_step_keeps_float32_losses():
    """--amp on the CPU: the forward runs under bf16 autocast (convs, RoI pooling on bf16
    features with float32 RoIs), the losses and target arithmetic stay float32, and the step
    is close to the float32 one."""
    from frcnn.fast_rcnn.train import SolverParams, build_optimizer

    cfg = get_default_cfg()
    cfg.ANCHOR_SCALES = (2, 4, 8)
    im = torch.randn(1, 3, 128, 160) * 50
    info = torch.tensor([[128., 160., 1.]])
    gt = [torch.tensor([[10., 10., 60., 70., 1.], [70., 20., 120., 90., 2.]])]
    losses = {}
    for name, enabled in (("fp32", False), ("bf16", True)):
        torch.manual_seed(0)
        model = build_model("TINY", 3, cfg, ims_per_batch=1).train()
        opt = build_optimizer(model, SolverParams.from_cfg(cfg, 1, 0))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            out = model(im, info, gt, generators=[torch.Generator().manual_seed(0)])
        assert all(v.dtype == torch.float32 for v in out.values())
        sum(out.values()).backward()
        opt.step()
        losses[name] = {k: float(v.detach()) for k, v in out.items()}
    for k, v in losses["fp32"].items():
        assert abs(losses["bf16"][k] - v) <= 0.05 * abs(v) + 0.02, (k, v, losses["bf16"][k])
