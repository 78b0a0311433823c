"""Hooks of the Trainer: each does one job around the step (detectron2's hooks.py idea)."""
import math
import os
import sys
import time

import numpy as np

from frcnn.engine.trainer import HookBase
from frcnn.utils import distributed as du


def step_lr(base_lr, gamma, stepsize, iteration, warmup_iters=0, warmup_factor=1.0):
    """Caffe's 'step' policy: base_lr * gamma ^ floor(iteration / stepsize), times a linear
    warm-up from warmup_factor to 1 over the first warmup_iters iterations (none when 0)."""
    lr = base_lr
    if stepsize and stepsize > 0:
        lr = base_lr * gamma ** (iteration // stepsize)
    if iteration < warmup_iters:
        lr *= warmup_factor + (1.0 - warmup_factor) * iteration / warmup_iters
    return lr


class LRSchedule(HookBase):
    """Caffe 'step' lr (with the optional linear warm-up) before every step; each param group
    keeps its lr_mult (biases 2x)."""

    def __init__(self, base_lr, gamma, stepsize, warmup_iters=0, warmup_factor=1.0):
        self.base_lr, self.gamma, self.stepsize = float(base_lr), float(gamma), stepsize
        self.warmup_iters, self.warmup_factor = int(warmup_iters), float(warmup_factor)
        self.lr = self.base_lr

    def before_step(self):
        self.lr = step_lr(self.base_lr, self.gamma, self.stepsize, self.trainer.iter,
                          self.warmup_iters, self.warmup_factor)
        for g in self.trainer.optimizer.param_groups:
            g["lr"] = self.lr * g.get("lr_mult", 1.0)


class FiniteLossCheck(HookBase):
    """Stops on a NaN/inf loss, naming the iteration and its images.

    Checked once per window and before every snapshot (`check()`), not every step: a check
    is a host sync. Snapshots therefore never hold weights updated by a non-finite loss.
    """

    def __init__(self, prefix):
        self.prefix = prefix

    def after_step(self):
        if self.trainer.window_ends():
            self.check()

    def check(self):
        t = self.trainer
        for (it, losses), w in zip(t.window_floats(), t.window):
            if not all(math.isfinite(v) for v in losses.values()):
                detail = ", ".join(f"{k}={v:g}" for k, v in losses.items() if k != "total_loss")
                ids = [i for ids in w["image_ids"] for i in ids]
                raise FloatingPointError(
                    f"[{self.prefix}] non-finite loss at iteration {it - 1} ({detail}); images "
                    f"{ids}. Lower SOLVER.BASE_LR or check these annotations.")


class FirstStepGradCheck(HookBase):
    """After the first step: every trainable parameter must have had a gradient (under DDP one
    that has none stalls the next reduction)."""

    def __init__(self, prefix):
        self.prefix = prefix

    def after_step(self):
        t = self.trainer
        if t.iter != t.start_iter + 1:
            return
        missing = du.parameters_without_grad(t.model)
        if not missing:
            return
        msg = (f"[{self.prefix}] trainable parameters without a gradient: {missing[:6]}"
               f"{' ...' if len(missing) > 6 else ''}; freeze them or build the model "
               "without that part")
        if du.get_world_size() > 1:
            raise RuntimeError(msg + " (needed by DistributedDataParallel)")
        if du.get_rank() == 0:
            print("warning: " + msg, flush=True)


class MetricsPrinter(HookBase):
    """Smoothed losses (means over the window, averaged over ranks) every window, and a tqdm
    bar on a terminal."""

    def __init__(self, prefix, lr_hook, progress=None):
        self.prefix, self.lr_hook = prefix, lr_hook
        self.progress = progress
        self.bar = None

    def before_train(self):
        t = self.trainer
        show = self.progress if self.progress is not None else sys.stderr.isatty()
        if show and du.get_rank() == 0:
            from tqdm import tqdm

            self.bar = tqdm(total=t.max_iter, initial=t.start_iter, desc=self.prefix,
                            dynamic_ncols=True)
        self.t_start = self.t_window = time.perf_counter()

    def after_step(self):
        t = self.trainer
        if self.bar is not None:
            self.bar.update(1)
        if not t.window_ends():
            return
        rows = [d for _, d in t.window_floats()]
        names = [k for k in rows[-1] if k != "total_loss"]
        means = du.all_reduce_means([np.mean([r["total_loss"] for r in rows])]
                                    + [np.mean([r.get(k, 0.0) for r in rows]) for k in names])
        if du.get_rank() != 0:
            return
        now = time.perf_counter()
        msg = (f"[{self.prefix}] iter {t.iter}/{t.max_iter} loss {means[0]:.4f} ("
               + ", ".join(f"{k} {v:.4f}" for k, v in zip(names, means[1:]))
               + f") lr {self.lr_hook.lr:g} {(now - self.t_window) / max(len(rows), 1):.3f} s/iter")
        self.t_window = now
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{means[0]:.4f}")
            self.bar.write(msg)
        else:
            print(msg, flush=True)

    def after_train(self):
        if self.bar is not None:
            self.bar.close()
        t = self.trainer
        if du.get_rank() == 0:
            elapsed = time.perf_counter() - self.t_start
            done = max(t.iter - t.start_iter, 1)
            print(f"[{self.prefix}] {'done' if t.finished else f'stopped at iteration {t.iter}'}: "
                  f"{t.iter - t.start_iter} iters in {elapsed:.1f} s "
                  f"({elapsed / done:.3f} s/iter)")


class TensorBoard(HookBase):
    """Loss and lr scalars of every step, written once per window (rank 0; needs tensorboard)."""

    def __init__(self, log_dir, prefix, lr_hook):
        self.log_dir, self.prefix, self.lr_hook = log_dir, prefix, lr_hook
        self.writer = None

    def before_train(self):
        if self.log_dir is None or du.get_rank() != 0:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard not installed: nothing to write to
            return
        self.writer = SummaryWriter(self.log_dir)

    def after_step(self):
        if self.writer is None or not self.trainer.window_ends():
            return
        for it, losses in self.trainer.window_floats():
            self.writer.add_scalar(f"{self.prefix}/loss", losses["total_loss"], it)
            for k, v in losses.items():
                if k != "total_loss":
                    self.writer.add_scalar(f"{self.prefix}/{k}", v, it)
        self.writer.add_scalar(f"{self.prefix}/lr", self.lr_hook.lr, self.trainer.iter)

    def after_train(self):
        if self.writer is not None:
            self.writer.close()


class Snapshot(HookBase):
    """Every `period` iterations and at the end: an atomic snapshot (Checkpointer.save), after
    the finite-loss check. After training: the final weights file."""

    def __init__(self, checkpointer, period, finite_check=None, final_extra=None):
        self.ckpt, self.period = checkpointer, int(period)
        self.finite_check = finite_check
        self.final_extra = final_extra or {}

    def after_step(self):
        t = self.trainer
        if t.iter % self.period == 0 or t.iter == t.max_iter:
            if self.finite_check is not None:
                self.finite_check.check()
            self.ckpt.save(t)

    def after_train(self):
        if self.trainer.finished:  # a failed run leaves its snapshots, never a final file
            self.ckpt.save_final(self.trainer, self.final_extra)


class PeriodicEval(HookBase):
    """Every `period` iterations (and at the end): eval_fn(model) -> {metric: value}, printed
    and kept in `self.history`; the model is put back in train mode afterwards."""

    def __init__(self, period, eval_fn, prefix):
        self.period, self.eval_fn, self.prefix = int(period), eval_fn, prefix
        self.history = []

    def state_dict(self):
        return {"history": list(self.history)}

    def load_state_dict(self, state):
        self.history = list(state.get("history", []))

    def _run(self):
        t = self.trainer
        results = self.eval_fn(t.model)
        t.model.train()
        self.history.append((t.iter, results))
        if du.get_rank() == 0:
            print(f"[{self.prefix}] eval at iter {t.iter}: "
                  + ", ".join(f"{k} {v:.4f}" for k, v in results.items()), flush=True)

    def after_step(self):
        t = self.trainer
        if self.period > 0 and (t.iter % self.period == 0 or t.iter == t.max_iter):
            self._run()


__all__ = ["step_lr", "LRSchedule", "FiniteLossCheck", "FirstStepGradCheck", "MetricsPrinter",
           "TensorBoard", "Snapshot", "PeriodicEval"]
