"""SOLVER.SCHEDULE plateau: the decisions on a scripted measure sequence, the held-out slice's
determinism, the measures on hand-worked cases, and exact resume inside a patience window."""
import csv
import os

import numpy as np
import pytest
import torch

from frcnn.datasets.splits import validation_slice
from frcnn.engine import HookBase
from frcnn.engine.plateau import PlateauState
from frcnn.fast_rcnn import train as T
from frcnn.fast_rcnn.validation import mean_ap_area, plateau_hook_factory
from frcnn.safe_io import load_torch
from test_train import LossRecorder, ToyDetector, _cfg, toy_loader
from train_helpers import Interrupted


def test_plateau_state_on_a_scripted_sequence():
    s = PlateauState(patience=2, max_plateaus=2, gamma=0.1)
    seq = [0.1, 0.2, 0.2, 0.15, 0.3, 0.25, 0.3]
    events, factors = [], []
    for i, v in enumerate(seq):
        events.append(s.update(10 * (i + 1), v))
        factors.append(s.lr_factor)
    # 0.2 again is no improvement; two evaluations without one make a plateau
    assert events == ["improved", "improved", "wait", "drop", "improved", "wait", "stop"]
    assert factors == [1, 1, 1, 0.1, 0.1, 0.1, 0.1]
    assert (s.best, s.best_iter, s.stopped) == (0.3, 50, True)


def test_plateau_state_min_delta_and_three_plateaus():
    s = PlateauState(patience=1, max_plateaus=3, gamma=0.5, min_delta=0.01)
    events = [s.update(i, v) for i, v in enumerate([0.5, 0.505, 0.52, 0.52, 0.6, 0.6])]
    assert events == ["improved", "drop", "improved", "drop", "improved", "stop"]
    assert s.lr_factor == 0.25
    with pytest.raises(ValueError):
        PlateauState(patience=0)


def test_validation_slice_is_deterministic_and_sized():
    names = [f"IMG_{i:04d}" for i in range(296)]
    val = validation_slice(names)
    assert len(val) == 30 and val == sorted(val) and set(val) <= set(names)
    rng = np.random.default_rng(0)
    assert validation_slice(list(rng.permutation(names))) == val  # listing order is irrelevant
    assert len(validation_slice(names[:100])) == 20      # at least 20
    assert len(validation_slice(names[:30])) == 15       # never more than half
    assert validation_slice(names[:1]) == []
    # the slice is the images whose name hash sorts first: a superset of names keeps the rule
    import hashlib
    first = sorted(names, key=lambda n: hashlib.sha1(n.encode()).hexdigest())[:30]
    assert sorted(first) == val
    with pytest.raises(ValueError, match="repeat"):
        validation_slice(["a", "a", "b"])


def test_mean_ap_area_hand_worked():
    gt = [{"boxes": np.array([[0, 0, 9, 9], [20, 20, 29, 29]], float),
           "gt_classes": np.array([1, 1])},
          {"boxes": np.array([[0, 0, 9, 9]], float), "gt_classes": np.array([2])}]
    # class 1: a hit (0.9), a miss (0.8), a hit (0.7): precision 1, 1/2, 2/3 at recall .5, .5, 1
    # -> area AP = 0.5 * 1 + 0.5 * 2/3; class 2: one hit -> 1
    d1 = [np.zeros((0, 5)),
          np.array([[0, 0, 9, 9, .9], [50, 50, 60, 60, .8], [20, 20, 29, 29, .7]]),
          np.zeros((0, 5))]
    d2 = [np.zeros((0, 5)), np.zeros((0, 5)), np.array([[0, 0, 9, 9, .5]])]
    assert mean_ap_area([d1, d2], gt, 3) == pytest.approx((0.5 + 0.5 * 2 / 3 + 1.0) / 2)


# evaluations every 2 iterations, patience 3, two plateaus, ceiling 30: the lr drops after the
# evaluation at 12, the best is at 14, the run stops at 20
SCRIPT = {2: .1, 4: .2, 6: .25, 8: .24, 10: .23, 12: .22, 14: .3, 16: .29, 18: .28, 20: .27,
          22: .5, 24: .5, 26: .5, 28: .5, 30: .5}


def _plateau_run(out, stop_at=None):
    cfg = _cfg()
    cfg.SOLVER.SCHEDULE = "plateau"
    cfg.SOLVER.PLATEAU.EVAL_PERIOD, cfg.SOLVER.PLATEAU.PATIENCE = 2, 3
    torch.manual_seed(0)
    model = ToyDetector()
    rec = LossRecorder(model)
    lrs, step = [], [0]

    def measure(m):
        np.random.rand(3), torch.rand(3)  # the evaluation must not move the training's RNGs
        return SCRIPT[step[0]]

    class Record(HookBase):
        """The lr of every step; the interruption (in-process kill) after iteration stop_at."""

        def before_step(self):
            # the interruption comes after iteration stop_at and all its hooks (its snapshot)
            if stop_at is not None and self.trainer.iter == stop_at:
                raise Interrupted(stop_at)
            step[0] = self.trainer.iter + 1
            lrs.append(self.trainer.optimizer.param_groups[0]["lr"])

    solver = T.SolverParams.from_cfg(cfg, 30, 0)
    plateau = plateau_hook_factory(cfg, measure, "scripted", 30, out, "toy")
    try:
        T.train_model(model, toy_loader(cfg.RNG_SEED), solver, out, "toy", ims_per_batch=2,
                      seed=cfg.RNG_SEED, data_signature="toy", device="cpu", hooks=[Record()],
                      log_dir=None, progress=False, plateau=plateau)
    except Interrupted:
        return rec.losses, lrs, None
    return rec.losses, lrs, model


def _curve(out):
    with open(os.path.join(out, "toy_val.csv")) as f:
        return list(csv.DictReader(f))


def test_plateau_schedule_drops_stops_and_keeps_the_best(tmp_path):
    out = str(tmp_path)
    losses, lrs, model = _plateau_run(out)
    assert len(losses) == 20                                  # stopped at the second plateau
    assert lrs[:12] == [0.01] * 12 and lrs[12:] == [pytest.approx(0.001)] * 8
    rows = _curve(out)
    assert [int(r["iteration"]) for r in rows] == list(range(2, 21, 2))
    assert [r["event"] for r in rows][-5:] == ["drop", "improved", "wait", "wait", "stop"]
    later = load_torch(tmp_path / "toy_iter_15.pth")  # snapshots every 5
    final = load_torch(tmp_path / "toy_final.pth")
    assert final["iteration"] == 20
    best = load_torch(tmp_path / "toy_best.pth")
    assert best["iteration"] == 14
    for k, v in final["model"].items():                       # the final file is the best
        assert torch.equal(v, best["model"][k]), k
    assert any(not torch.equal(v, later["model"][k]) for k, v in final["model"].items())


# killed inside the first / second patience window right after a snapshot (10, 15), and at 14:
# after the evaluation that wrote a new best and its row, 4 iterations after the last snapshot
@pytest.mark.parametrize("stop_at", [10, 14, 15])
def test_plateau_resume_is_exact(tmp_path, stop_at):
    full_losses, full_lrs, full = _plateau_run(str(tmp_path / "a"))
    part_losses, part_lrs, _ = _plateau_run(str(tmp_path / "b"), stop_at=stop_at)
    torch.manual_seed(123)
    np.random.seed(77)
    rest_losses, rest_lrs, resumed = _plateau_run(str(tmp_path / "b"))
    snap = stop_at - stop_at % 5  # the run resumes from its last snapshot (every 5)
    assert part_losses[:snap] + rest_losses == full_losses
    assert part_lrs[:snap] + rest_lrs == full_lrs
    assert _curve(str(tmp_path / "a")) == _curve(str(tmp_path / "b"))
    for (n, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), n


class _Imdb:
    def __init__(self, n):
        self.image_index = [f"im{i:03d}" for i in range(n)]
        self.name, self.num_images = "fake_trainval", n


def test_validation_images_written_beside_the_results(tmp_path, capsys):
    from frcnn.errors import ConfigError
    from frcnn.fast_rcnn.validation import validation_images

    cfg = _cfg()
    assert validation_images(_Imdb(50), cfg, str(tmp_path)) == []  # fixed: nothing held out
    assert not (tmp_path / "validation.txt").exists()
    cfg.SOLVER.SCHEDULE = "plateau"
    imdb = _Imdb(50)
    idx = validation_images(imdb, cfg, str(tmp_path))
    names = (tmp_path / "validation.txt").read_text().split()
    assert names == validation_slice(imdb.image_index) and len(names) == 20
    assert [imdb.image_index[i] for i in idx] == names
    assert "20 of 50 training images held out" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="too few"):
        validation_images(_Imdb(1), cfg, str(tmp_path))
    cfg.SOLVER.SCHEDULE = "cosine"
    with pytest.raises(ConfigError, match="'fixed'.*'plateau'"):
        validation_images(imdb, cfg, str(tmp_path))


class _GtImdb:
    """Two images' gt roidb (what the measures read), images stood in for by their index."""
    num_classes = 3
    roidb = [{"boxes": np.array([[10, 10, 49, 49], [60, 10, 99, 49]], np.float32),
              "gt_classes": np.array([1, 2]), "gt_overlaps": np.eye(3, dtype=np.float32)[[1, 2]]},
             {"boxes": np.array([[0, 0, 29, 29]], np.float32), "gt_classes": np.array([1]),
              "gt_overlaps": np.eye(3, dtype=np.float32)[[1]]}]


def test_measures_read_the_held_out_images_gt(monkeypatch):
    from frcnn.fast_rcnn import validation as V

    imdb = _GtImdb()
    junk = np.tile([[200, 200, 220, 220]], (5, 1)).astype(np.float32)
    monkeypatch.setattr(V, "_read", lambda imdb, i: i)
    # proposals: the gt boxes after 5 junk boxes; top 5 see none of them, top 7 all
    monkeypatch.setattr(V, "im_proposals", lambda m, i, cfg: (
        np.vstack([junk, imdb.roidb[i]["boxes"]]), None))
    model = torch.nn.Linear(1, 1)
    assert V.rpn_average_recall(model, imdb, [0, 1], None, top_n=7) == pytest.approx(1.0)
    assert V.rpn_average_recall(model, imdb, [0, 1], None, top_n=5) == 0.0
    assert V.rpn_average_recall(model, imdb, [1], None, top_n=7) == pytest.approx(1.0)

    def im_detect(m, i, cfg, proposals):  # every gt box, scored for its own class only
        b = imdb.roidb[i]["boxes"]
        scores = np.zeros((len(b), 3), np.float32)
        scores[np.arange(len(b)), imdb.roidb[i]["gt_classes"]] = 0.9
        return scores, np.tile(b, (1, 3))
    monkeypatch.setattr(V, "im_detect", im_detect)
    cfg = _cfg()
    assert V.detection_map(model, imdb, [0, 1], cfg) == pytest.approx(1.0)
    # image 1 alone has no class-2 gt: the mean is over class 1 only
    assert V.detection_map(model, imdb, [1], cfg) == pytest.approx(1.0)


# -- real processes: the alt-opt tool under SOLVER.SCHEDULE plateau, killed with SIGKILL -----
PLATEAU_SETS = ["SOLVER.SCHEDULE", "plateau", "SOLVER.PLATEAU.EVAL_PERIOD", "1",
                "SOLVER.PLATEAU.PATIENCE", "2", "ALT_OPT.ITERS", "(4,4,4,4)"]  # ceilings 6


def _curves(out):
    import glob

    return {os.path.basename(p): open(p).read()
            for p in sorted(glob.glob(os.path.join(out, "*_val.csv")))}


def test_alt_opt_plateau_kill9_in_a_patience_window_resumes_exactly(tmp_path):
    from test_reproducible import _alt_opt, _assert_same, _kill_when, _run

    ref, killed = tmp_path / "ref", tmp_path / "killed"
    log = _run(_alt_opt(ref) + PLATEAU_SETS)
    out = ref / "alt" / "shapes_train"
    held_out = (out / "validation.txt").read_text().split()
    assert len(held_out) == 4 and "4 of 8 training images held out" in log  # at most half
    curves = _curves(str(out))
    assert len(curves) == 4 and all(c.count("\n") >= 2 for c in curves.values())
    # RPN stages' final files are their best evaluation's weights
    for stage in ("stage1_rpn", "stage2_rpn"):
        best = load_torch(out / f"tiny_{stage}_best.pth")
        final = load_torch(out / f"tiny_{stage}_final.pth")
        assert all(torch.equal(v, best["model"][k]) for k, v in final["model"].items())
    # killed after stage 1 Fast R-CNN's snapshot at iteration 4: after its lr drop (at 3), inside
    # the next patience window (this tiny run measures ~0 mAP: best at 1, waits, stops at 5)
    events = [ln.split(",")[-1] for ln in curves["tiny_stage1_fast_rcnn_val.csv"].split()[1:]]
    assert events[2:] == ["drop", "wait", "stop"]
    _kill_when(_alt_opt(killed) + PLATEAU_SETS,
               str(killed / "alt" / "shapes_train" / "tiny_stage1_fast_rcnn_iter_4.pth"))
    _run(_alt_opt(killed) + PLATEAU_SETS)
    _assert_same(str(out / "tiny_faster_rcnn_final.pth"),
                 str(killed / "alt" / "shapes_train" / "tiny_faster_rcnn_final.pth"))
    assert _curves(str(killed / "alt" / "shapes_train")) == curves
