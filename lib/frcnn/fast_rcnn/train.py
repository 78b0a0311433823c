"""The solver: Caffe-style SGD over a FasterRCNN (or a part of it), with snapshots and resume.

One `train_model` serves every alt-opt stage and end2end training: it builds the optimizer,
the Trainer (frcnn.engine) and its hooks, resumes the newest snapshot, and trains. What
py-faster-rcnn keeps in solver.prototxt files is a SolverParams record (from cfg.SOLVER and the
caller's max_iters / stepsize / lr).
"""
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from frcnn.engine import (Checkpointer, FiniteLossCheck, FirstStepGradCheck, LRSchedule,
                          MetricsPrinter, Snapshot, TensorBoard, Trainer, run_signature)
from frcnn.engine.checkpoint import export_state_dict, final_path, find_snapshot, snapshot_path
from frcnn.engine.hooks import step_lr
from frcnn.engine.results_csv import ResultsCSV
from frcnn.model_file import load_weights  # noqa: F401  (the state dict of a final file)
from frcnn.utils import distributed as du


class CaffeSGD(torch.optim.Optimizer):
    """SGD with momentum as Caffe computes it.

    v <- momentum * v + lr * (grad + weight_decay * w);  w <- w - v.
    torch.optim.SGD keeps lr outside the velocity, which differs right after an lr step;
    Caffe (and so py-faster-rcnn) folds it in. Each group has 'lr' and 'weight_decay'.
    """

    def __init__(self, params, lr, momentum=0.9, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if wd != 0:
                    g = g.add(p, alpha=wd)
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = torch.zeros_like(p)
                buf.mul_(mom).add_(g, alpha=lr)
                p.sub_(buf)
        return loss


def _matches(name, prefixes):
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def freeze(model, prefixes):
    """Set requires_grad False on parameters under the module-name `prefixes`.

    prefixes: e.g. ["backbone.conv1_1", "backbone.conv2_2"] or ["backbone"] (names relative
    to `model`). Returns the list of frozen parameter names.
    """
    frozen = []
    for name, p in model.named_parameters():
        if _matches(name, prefixes):
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


@dataclass(frozen=True)
class SolverParams:
    """What a solver.prototxt holds: schedule, SGD numbers, display and snapshot periods."""

    max_iters: int
    stepsize: int
    base_lr: float = 0.001
    gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0005
    bias_lr_mult: float = 2.0
    bias_decay: bool = True
    display: int = 20
    snapshot_iters: int = 10000
    snapshot_infix: str = ""
    lr_scaling: str = ""        # how lr and schedule were scaled for N processes (for the log)
    warmup_iters: int = 0       # lr rises linearly from warmup_factor x lr over these iterations
    warmup_factor: float = 1.0

    @classmethod
    def from_cfg(cls, cfg, max_iters, stepsize, base_lr=None, world_size=None):
        """base_lr (default SOLVER.BASE_LR) x the DIST.LR_SCALING factor and max_iters /
        stepsize / the DIST.SCHEDULE_SCALING divisor for world_size processes (N processes =
        N x the batch; du.lr_scale, du.schedule_scale)."""
        S = cfg.SOLVER
        factor = du.lr_scale(cfg, world_size)
        lr = float(S.BASE_LR if base_lr is None else base_lr) * factor
        world = du.get_world_size() if world_size is None else int(world_size)
        div = du.schedule_scale(cfg, world)
        max_iters, stepsize = int(max_iters), int(stepsize or 0)
        warmup = int(S.WARMUP_ITERS)
        note = ""
        if world > 1:
            note = f"lr x{factor:g}, DIST.LR_SCALING {cfg.DIST.LR_SCALING}"
            if div > 1:
                note += f"; iterations {max_iters} / {div}, DIST.SCHEDULE_SCALING linear"
                max_iters = max(1, -(-max_iters // div))   # ceil: never shorter than asked
                stepsize = -(-stepsize // div)
                warmup = -(-warmup // div)
        return cls(max_iters=max_iters, stepsize=stepsize, base_lr=lr,
                   warmup_iters=warmup, warmup_factor=float(S.WARMUP_FACTOR),
                   lr_scaling=note,
                   gamma=float(S.GAMMA), momentum=float(S.MOMENTUM),
                   weight_decay=float(S.WEIGHT_DECAY), bias_lr_mult=float(S.BIAS_LR_MULT),
                   bias_decay=bool(S.BIAS_DECAY), display=int(S.DISPLAY),
                   snapshot_iters=int(cfg.TRAIN.SNAPSHOT_ITERS),
                   snapshot_infix=str(cfg.TRAIN.SNAPSHOT_INFIX))


def build_optimizer(model, solver, base_lr=None):
    """CaffeSGD over the trainable parameters: weights at lr, biases at bias_lr_mult x lr.

    Weight decay is applied to biases too when solver.bias_decay (Caffe's decay_mult 1).
    Frozen parameters (requires_grad False) are left out.
    """
    base_lr = solver.base_lr if base_lr is None else base_lr
    wd = solver.weight_decay
    weights, biases = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (biases if name.endswith("bias") else weights).append(p)
    groups = []
    if weights:
        groups.append(dict(params=weights, lr=base_lr, lr_mult=1.0, weight_decay=wd))
    if biases:
        groups.append(dict(params=biases, lr=base_lr * solver.bias_lr_mult,
                           lr_mult=solver.bias_lr_mult,
                           weight_decay=wd if solver.bias_decay else 0.0))
    if not groups:
        raise ValueError("no trainable parameters: every layer is frozen")
    return CaffeSGD(groups, lr=base_lr, momentum=solver.momentum, weight_decay=wd)


def seed_all(seed):
    """Seed python, numpy and torch (CPU and CUDA) RNGs; tools call it before building
    anything random (model init, synthetic data, loaders)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _accepts_generators(model):
    import inspect

    try:
        return "generators" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def train_model(model, loader_fn, solver, output_dir, prefix, *, ims_per_batch, seed,
                data_signature, iter_size=1, frozen=(), resume=True, device="cpu", amp=None,
                extra=None, hooks=(), log_dir="auto", progress=None,
                find_unused_parameters=False, plateau=None):
    """Train `model` for solver.max_iters updates; returns the path of the final weights.

    model: FasterRCNN (any parts); its train-mode forward returns a dict of scalar losses.
    loader_fn: (start_batch) -> iterator of batches (frcnn.roi_data.loader.loader_factory).
    solver: SolverParams. ims_per_batch: images per forward (the loader's; recorded in the
      snapshot signature); iter_size: forwards accumulated per update.
    seed: the run's seed (global RNG = seed + rank at the start; per-image sampling streams).
    data_signature: e.g. roidb_signature(roidb); a snapshot of other data is not resumed.
    frozen: module-name prefixes relative to `model` whose parameters are not trained.
    resume: continue from the newest `<prefix>[_<infix>]_iter_<N>.pth` exactly; when
      `<prefix>_final.pth` exists already it is returned untouched.
    amp: None, torch.float16 (CUDA, with a GradScaler) or torch.bfloat16 (autocast, no scaler).
    extra: dict stored in the final file (net name, classes, bbox means/stds, ...).
    hooks: more engine hooks (e.g. PeriodicEval), run after the standard ones, before Snapshot.
    find_unused_parameters: DistributedDataParallel's (DIST.FIND_UNUSED_PARAMETERS).
    plateau: None, or (lr hook) -> frcnn.engine.plateau.PlateauSchedule (SOLVER.SCHEDULE
      plateau); it runs before the snapshot hook, so the final file holds the best weights.
    """
    rank, world = du.get_rank(), du.get_world_size()
    device = torch.device(device)
    base_lr = solver.base_lr
    out_final = final_path(output_dir, prefix)
    if resume and (os.path.exists(out_final)):
        if rank == 0:
            print(f"[{prefix}] {out_final} exists: nothing to train")
        return out_final

    frozen_names = freeze(model, frozen)
    model.to(device)
    optimizer = build_optimizer(model, solver, base_lr)
    scaler = _grad_scaler(amp, device)
    ckpt = _checkpointer(model, optimizer, scaler, solver, output_dir, prefix, seed=seed,
                         ims_per_batch=ims_per_batch, iter_size=iter_size, world=world,
                         data_signature=data_signature)
    seed_all(seed + rank)
    start_iter = ckpt.resume() if resume else 0
    ddp = du.wrap_model(model, device, find_unused_parameters)
    generators = du.ImageGenerators(seed, device) if _accepts_generators(model) else None
    data = iter(loader_fn(start_iter * iter_size))

    if rank == 0:
        print(f"[{prefix}] " + _run_summary(model, solver, ims_per_batch, iter_size, world,
                                            len(frozen_names), device, amp))
    trainer = Trainer(model, optimizer, data, iter_size=iter_size, generators=generators,
                      autocast=None if amp is None else (device.type, amp), grad_scaler=scaler,
                      ddp_model=None if ddp is model else ddp, window=solver.display)
    tb_dir = os.path.join(output_dir, "tb", prefix) if log_dir == "auto" else log_dir
    trainer.register_hooks(_hooks(prefix, solver, ckpt, extra, tb_dir, progress,
                                  hooks, output_dir, plateau))
    if ckpt.trainer_state is not None:
        trainer.load_state_dict(ckpt.trainer_state)
    trainer.train(start_iter, solver.max_iters)
    model.eval()
    return out_final


def _checkpointer(model, optimizer, scaler, solver, output_dir, prefix, *, seed, ims_per_batch,
                  iter_size, world, data_signature):
    """The run's Checkpointer; its signature holds what a resumed run must share exactly."""
    snap_prefix = prefix + (f"_{solver.snapshot_infix}" if solver.snapshot_infix else "")
    signature = run_signature(seed=seed, ims_per_batch=ims_per_batch, iter_size=iter_size,
                              world_size=world, max_iters=solver.max_iters,
                              stepsize=solver.stepsize, base_lr=solver.base_lr,
                              data=data_signature,
                              warmup=(solver.warmup_iters, solver.warmup_factor))
    return Checkpointer(output_dir, snap_prefix, model, optimizer, signature, scaler,
                        final_prefix=prefix)


def _grad_scaler(amp, device):
    """A GradScaler for float16 autocast (CUDA only); None otherwise (bf16 needs none)."""
    if amp != torch.float16:
        return None
    if device.type != "cuda":
        raise ValueError("float16 mixed precision needs CUDA; on the CPU use bfloat16")
    return torch.amp.GradScaler("cuda")


def _hooks(prefix, solver, ckpt, extra, tb_dir, progress, more, output_dir, plateau=None):
    """The standard hooks around the caller's (`more`), in their order; `plateau(lr)`
    (SOLVER.SCHEDULE plateau) before the snapshot hook, so the final file holds the best
    weights."""
    lr = LRSchedule(solver.base_lr, solver.gamma, solver.stepsize, solver.warmup_iters,
                    solver.warmup_factor)
    finite = FiniteLossCheck(prefix)
    # Snapshot last: a snapshot holds every hook's state (and RNG) after the step's hooks ran
    return ([lr, finite, FirstStepGradCheck(prefix), MetricsPrinter(prefix, lr, progress),
             TensorBoard(tb_dir, prefix, lr)] + ([plateau(lr)] if plateau else []) + list(more)
            + [ResultsCSV(output_dir, prefix, lr),
               Snapshot(ckpt, solver.snapshot_iters, finite, extra)])


def _run_summary(model, solver, ims_per_batch, iter_size, world, n_frozen, device, amp):
    """The one line train_model prints before training: schedule, batch, parameters, device."""
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    warm = (f", warm-up from x{solver.warmup_factor:g} over {solver.warmup_iters}"
            if solver.warmup_iters else "")
    return (f"{solver.max_iters} iters (lr {solver.base_lr:g}, x{solver.gamma:g} every "
            f"{solver.stepsize}{warm}), {ims_per_batch} img/batch x {iter_size}"
            + (f" x {world} processes ({solver.lr_scaling})" if world > 1 else "")
            + f", {n_train} trainable params, {n_frozen} frozen tensors, "
            f"device {device}" + (f", amp {str(amp).replace('torch.', '')}" if amp else ""))


__all__ = ["CaffeSGD", "SolverParams", "freeze", "build_optimizer", "step_lr", "train_model",
           "find_snapshot", "snapshot_path", "final_path", "load_weights", "export_state_dict",
           "seed_all"]


