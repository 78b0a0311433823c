"""SOLVER.SCHEDULE plateau: a stage measures itself on held-out images every EVAL_PERIOD
iterations, multiplies the lr by GAMMA after PATIENCE evaluations without improvement, stops at
the MAX_PLATEAUS-th such plateau (or at the ceiling, the stage's ITERS), and ends with the weights
of its best evaluation (Ultralytics' patience, detectron2's BestCheckpointer).

The decisions are a function of the measured sequence alone (`PlateauState.update`), and the
sequence is kept in `<prefix>_val.csv` beside the snapshots. A resumed run replays the rows up
to its snapshot's iteration, so after kill -9 it takes the same decisions as an uninterrupted
run (the evaluation changes no RNG state: it is saved and put back around it).
"""
import csv
import os


from frcnn.engine.checkpoint import get_rng_states, save_atomic, set_rng_states
from frcnn.engine.trainer import HookBase
from frcnn.utils import distributed as du

CSV_FIELDS = ("iteration", "measure", "value", "best", "best_iteration", "lr_factor", "event")


class PlateauState:
    """The schedule's decisions from a sequence of (iteration, value), higher = better.

    update() -> 'improved' (a new best), 'wait', 'drop' (lr x gamma from the next step) or
    'stop' (the MAX_PLATEAUS-th plateau: train no further).
    """

    def __init__(self, patience, max_plateaus=2, gamma=0.1, min_delta=0.0):
        if patience < 1 or max_plateaus < 1:
            raise ValueError("SOLVER.PLATEAU: PATIENCE and MAX_PLATEAUS must be >= 1")
        self.patience, self.max_plateaus = int(patience), int(max_plateaus)
        self.gamma, self.min_delta = float(gamma), float(min_delta)
        self.best, self.best_iter = None, None
        self.waited, self.plateaus, self.stopped = 0, 0, False

    @property
    def lr_factor(self):
        return self.gamma ** min(self.plateaus, self.max_plateaus - 1)

    def update(self, iteration, value):
        value = float(value)
        if self.best is None or value > self.best + self.min_delta:
            self.best, self.best_iter, self.waited = value, int(iteration), 0
            return "improved"
        self.waited += 1
        if self.waited < self.patience:
            return "wait"
        self.waited = 0
        self.plateaus += 1
        if self.plateaus >= self.max_plateaus:
            self.stopped = True
            return "stop"
        return "drop"


def read_curve(path, up_to):
    """Rows of a `_val.csv` with iteration <= up_to (later rows belong to a lost future)."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if int(r["iteration"]) <= up_to]


def write_curve(path, rows):
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class PlateauSchedule(HookBase):
    """Evaluates `measure_fn(model) -> float` every `period` iterations and at the ceiling;
    scales the lr that `lr_hook` set by the state's factor; stops the trainer; keeps the best
    weights in `<prefix>_best.pth` and loads them back after training (register it before the
    Snapshot hook, so the final file holds them)."""

    def __init__(self, state, measure_fn, measure_name, period, lr_hook, output_dir, prefix):
        self.state, self.measure_fn, self.measure_name = state, measure_fn, measure_name
        self.period, self.lr_hook = int(period), lr_hook
        self.curve_path = os.path.join(output_dir, f"{prefix}_val.csv")
        self.best_path = os.path.join(output_dir, f"{prefix}_best.pth")
        self.prefix, self.rows = prefix, []

    def before_train(self):
        t = self.trainer
        self.rows = read_curve(self.curve_path, t.start_iter)
        for r in self.rows:
            self.state.update(int(r["iteration"]), float(r["value"]))
        if du.get_rank() == 0 and t.start_iter:
            write_curve(self.curve_path, self.rows)
        if self.state.stopped:
            t.max_iter = t.start_iter

    def before_step(self):
        f = self.state.lr_factor
        if f != 1.0:
            self.lr_hook.lr *= f
            for g in self.trainer.optimizer.param_groups:
                g["lr"] = self.lr_hook.lr * g.get("lr_mult", 1.0)

    def after_step(self):
        t = self.trainer
        if t.iter % self.period and t.iter != t.max_iter:
            return
        rng = get_rng_states()
        value = float(self.measure_fn(t.model))
        set_rng_states(rng)
        t.model.train()
        event = self.state.update(t.iter, value)
        if event == "improved" and du.get_rank() == 0:
            save_atomic({"iteration": t.iter, "model": t.model.state_dict()}, self.best_path)
        self.rows.append({"iteration": t.iter, "measure": self.measure_name, "value": repr(value),
                          "best": repr(self.state.best), "best_iteration": self.state.best_iter,
                          "lr_factor": repr(self.state.lr_factor), "event": event})
        if du.get_rank() == 0:
            write_curve(self.curve_path, self.rows)
            print(f"[{self.prefix}] val {self.measure_name} {value:.4f} at iter {t.iter} "
                  f"(best {self.state.best:.4f} at {self.state.best_iter}): {event}", flush=True)
        if event == "stop":
            t.max_iter = t.iter
        du.barrier()

    def after_train(self):
        if self.state.best_iter is None:
            return
        from frcnn.safe_io import load_torch

        best = load_torch(self.best_path, "best weights")
        if int(best["iteration"]) != self.state.best_iter:
            raise RuntimeError(
                f"{self.best_path} holds iteration {best['iteration']}, the curve "
                f"{self.curve_path} says {self.state.best_iter}; delete both and the stage's "
                "snapshots to train the stage again")
        du.unwrap_model(self.trainer.model).load_state_dict(best["model"])
        if du.get_rank() == 0:
            print(f"[{self.prefix}] keeping the best weights: iter {self.state.best_iter}, "
                  f"val {self.measure_name} {self.state.best:.4f}", flush=True)


__all__ = ["PlateauState", "PlateauSchedule", "read_curve", "write_curve"]
