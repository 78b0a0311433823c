"""The solver: Caffe-style SGD over a FasterRCNN (or a part of it), with snapshots and resume.

One loop serves every alt-opt stage and end2end training. What py-faster-rcnn keeps in
solver.prototxt files comes from cfg.SOLVER (lr, momentum, decay, bias lr multiplier) and from
the caller (max_iters, stepsize, frozen layers).
"""
import glob
import os
import random
import re
import sys
import time
from collections import deque

import numpy as np
import torch

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


def build_optimizer(model, cfg, base_lr=None):
    """CaffeSGD over the trainable parameters: weights at lr, biases at BIAS_LR_MULT x lr.

    Weight decay is applied to biases too when cfg.SOLVER.BIAS_DECAY (Caffe's decay_mult 1).
    Frozen parameters (requires_grad False) are left out.
    """
    base_lr = cfg.SOLVER.BASE_LR if base_lr is None else base_lr
    wd = cfg.SOLVER.WEIGHT_DECAY
    weights, biases = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (biases if name.endswith("bias") else weights).append(p)
    groups = []
    if weights:
        groups.append(dict(params=weights, lr=base_lr, lr_mult=1.0, weight_decay=wd))
    if biases:
        groups.append(dict(params=biases, lr=base_lr * cfg.SOLVER.BIAS_LR_MULT,
                           lr_mult=cfg.SOLVER.BIAS_LR_MULT,
                           weight_decay=wd if cfg.SOLVER.BIAS_DECAY else 0.0))
    if not groups:
        raise ValueError("no trainable parameters: every layer is frozen")
    return CaffeSGD(groups, lr=base_lr, momentum=cfg.SOLVER.MOMENTUM, weight_decay=wd)


def step_lr(base_lr, gamma, stepsize, iteration):
    """Caffe's 'step' policy: base_lr * gamma ^ floor(iteration / stepsize)."""
    if not stepsize or stepsize <= 0:
        return base_lr
    return base_lr * gamma ** (iteration // stepsize)


def _set_lr(optimizer, lr):
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)


def seed_all(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def get_rng_states():
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
              "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states):
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def snapshot_path(output_dir, prefix, iteration):
    return os.path.join(output_dir, f"{prefix}_iter_{iteration}.pth")


def final_path(output_dir, prefix):
    return os.path.join(output_dir, f"{prefix}_final.pth")


def find_snapshot(output_dir, prefix):
    """Newest `<prefix>_iter_<N>.pth` in output_dir, or None."""
    pat = re.compile(re.escape(prefix) + r"_iter_(\d+)\.pth$")
    best = None
    for p in glob.glob(os.path.join(glob.escape(output_dir), f"{glob.escape(prefix)}_iter_*.pth")):
        m = pat.search(os.path.basename(p))
        if m and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), p)
    return None if best is None else best[1]


def save_atomic(obj, path):
    """torch.save to path.tmp then rename, so a killed run never leaves half a file."""
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def export_state_dict(model):
    """Weights for inference/next stages: bbox_pred un-normalised when the model has a head."""
    model = du.unwrap_model(model)
    if hasattr(model, "unnormalized_state_dict"):
        return model.unnormalized_state_dict()
    return model.state_dict()


def _to_device(batch, device):
    def mv(x):
        return None if x is None else x.to(device, non_blocking=True)

    props = batch.get("proposals")
    return (mv(batch["images"]), mv(batch["im_info"]), [mv(g) for g in batch["gt_boxes"]],
            None if props is None else [mv(p) for p in props])


class _TB:
    """TensorBoard scalars when tensorboard is installed; silently nothing otherwise."""

    def __init__(self, log_dir):
        self.w = None
        if log_dir is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard not installed
            return
        self.w = SummaryWriter(log_dir)

    def add(self, tag, value, step):
        if self.w is not None:
            self.w.add_scalar(tag, value, step)

    def close(self):
        if self.w is not None:
            self.w.close()


def train_model(model, roidb, cfg, output_dir, max_iters, stepsize, ims_per_batch,
                with_proposals, frozen=(), resume=True, device=None, prefix="model",
                iter_size=1, seed=None, amp=None, num_workers=None, base_lr=None,
                loader_fn=None, log_dir="auto", progress=None, extra=None):
    """Train `model` for `max_iters` SGD updates; returns the path of the final weights.

    model: FasterRCNN (any parts); train-mode forward returns a dict of scalar losses.
    roidb: list of roidb dicts (flips already appended; proposals merged when with_proposals).
    max_iters, stepsize: updates, lr *= SOLVER.GAMMA every `stepsize` updates.
    ims_per_batch: images per forward; iter_size: forwards accumulated per update.
    frozen: module-name prefixes relative to `model` whose parameters are not trained.
    resume: continue from the newest `<prefix>_iter_<N>.pth` in output_dir (exactly: model,
      optimizer, iteration, RNG states and data position are restored); when
      `<prefix>_final.pth` exists already it is returned untouched.
    loader_fn: (start_batch) -> iterator of batches; default frcnn.roi_data.loader.make_data_loader.
    extra: dict stored in the final file (e.g. net name, classes, bbox means/stds).
    Snapshots `<prefix>_iter_<N>.pth` every TRAIN.SNAPSHOT_ITERS and at the end, and the final
    weights `<prefix>_final.pth` ({'model': state dict with bbox_pred un-normalised, ...}).
    """
    rank, world = du.get_rank(), du.get_world_size()
    device = torch.device(device or cfg.DEVICE)
    seed = cfg.RNG_SEED if seed is None else seed
    base_lr = cfg.SOLVER.BASE_LR if base_lr is None else base_lr
    # N processes = N x the batch: lr x N under DIST.LR_SCALING 'linear' (see du.lr_scale)
    lr_factor = du.lr_scale(cfg, world)
    base_lr = base_lr * lr_factor
    use_amp = bool(cfg.SOLVER.AMP if amp is None else amp) and device.type == "cuda"
    os.makedirs(output_dir, exist_ok=True)
    out_final = final_path(output_dir, prefix)
    if resume and os.path.exists(out_final):
        if rank == 0:
            print(f"[{prefix}] {out_final} exists: nothing to train")
        return out_final

    frozen_names = freeze(model, frozen)
    model.to(device)
    model.train()
    optimizer = build_optimizer(model, cfg, base_lr)
    scaler = torch.amp.GradScaler("cuda") if use_amp else None

    start_iter = 0
    seed_all(seed + rank)
    snap = find_snapshot(output_dir, prefix) if resume else None
    if snap is not None:
        state = torch.load(snap, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        # each rank continues its own RNG stream (snapshots made by N ranks keep N states)
        rngs = state.get("rng_per_rank")
        set_rng_states(rngs[rank] if rngs and len(rngs) == world else state["rng"])
        start_iter = state["iteration"]
        if state["data"]["seed"] != seed or state["data"].get("world_size", 1) != world:
            print(f"[{prefix}] warning: snapshot data order (seed {state['data']['seed']}, "
                  f"world {state['data'].get('world_size', 1)}) differs from this run")
        if rank == 0:
            print(f"[{prefix}] resumed from {snap} at iteration {start_iter}")

    train_model_ = du.wrap_model(model, device, find_unused_parameters=bool(
        cfg.DIST.FIND_UNUSED_PARAMETERS) if "DIST" in cfg else False)
    # per-image sampling streams from (seed, batch index, global position): the same samples
    # whatever the number of processes, and on resume
    sampler_gens = du.ImageGenerators(seed, device) if hasattr(model, "generator") else None
    old_generator = getattr(model, "generator", None)
    if loader_fn is None:
        from frcnn.roi_data.loader import make_data_loader

        def loader_fn(start_batch):
            return make_data_loader(roidb, cfg, ims_per_batch, seed, start_iter=start_batch,
                                    num_workers=num_workers, rank=rank, world_size=world,
                                    with_proposals=with_proposals)
    data = iter(loader_fn(start_iter * iter_size))

    if rank == 0:
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"[{prefix}] {max_iters} iters (lr {base_lr:g}, x{cfg.SOLVER.GAMMA:g} every "
              f"{stepsize}), {ims_per_batch} img/batch x {iter_size}"
              + (f" x {world} processes (lr x{lr_factor:g}, DIST.LR_SCALING "
                 f"{cfg.DIST.LR_SCALING})" if world > 1 else "")
              + f", {len(roidb)} roidb entries, "
              f"{n_train} trainable params, {len(frozen_names)} frozen tensors, device {device}"
              + (", amp" if use_amp else ""))
    tb = _TB(None if rank != 0 else
             (os.path.join(output_dir, "tb", prefix) if log_dir == "auto" else log_dir))
    display = max(1, int(cfg.SOLVER.DISPLAY))
    smooth = deque(maxlen=display)
    parts_smooth = {}
    show_bar = rank == 0 and (progress if progress is not None else sys.stderr.isatty())
    bar = None
    if show_bar:
        from tqdm import tqdm

        bar = tqdm(total=max_iters, initial=start_iter, desc=prefix, dynamic_ncols=True)
    t_start = time.perf_counter()
    t_disp = t_start
    it = start_iter
    while it < max_iters:
        lr = step_lr(base_lr, cfg.SOLVER.GAMMA, stepsize, it)
        _set_lr(optimizer, lr)
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        parts = {}
        for micro in range(iter_size):
            batch = next(data)
            images, im_info, gt_boxes, proposals = _to_device(batch, device)
            if sampler_gens is not None and "iteration" in batch:
                n = images.shape[0]
                model.generator = sampler_gens.for_batch(batch["iteration"], rank * n, n)
            # accumulate locally, all-reduce once per update
            with du.no_sync(train_model_, micro < iter_size - 1), \
                    torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
                losses = train_model_(images, im_info, gt_boxes, proposals) \
                    if with_proposals else train_model_(images, im_info, gt_boxes)
            loss = sum(losses.values())
            if not torch.isfinite(loss).item():
                detail = ", ".join(f"{k}={float(v.detach()):g}" for k, v in losses.items())
                raise FloatingPointError(
                    f"[{prefix}] non-finite loss at iteration {it} ({detail}); images "
                    f"{batch['image_ids']}. Lower SOLVER.BASE_LR or check these annotations.")
            with du.no_sync(train_model_, micro < iter_size - 1):
                if scaler is not None:
                    scaler.scale(loss / iter_size).backward()
                else:
                    (loss / iter_size).backward()
            total += loss.item() / iter_size
            for k, v in losses.items():
                parts[k] = parts.get(k, 0.0) + float(v.detach()) / iter_size
        if it == start_iter:
            _check_all_grads(model, prefix, world)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        it += 1
        smooth.append(total)
        for k, v in parts.items():
            parts_smooth.setdefault(k, deque(maxlen=display)).append(v)
        show = it % display == 0 or it == max_iters
        if show:  # smoothed losses averaged over ranks (a collective: every rank takes part)
            shown = du.all_reduce_means([np.mean(smooth)]
                                        + [np.mean(v) for v in parts_smooth.values()])
        if rank == 0:
            tb.add(f"{prefix}/loss", total, it)
            for k, v in parts.items():
                tb.add(f"{prefix}/{k}", v, it)
            tb.add(f"{prefix}/lr", lr, it)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(smooth):.4f}",
                                s_it=f"{(time.perf_counter() - t_start) / (it - start_iter):.3f}")
            if show:
                now = time.perf_counter()
                n = display if it % display == 0 else (it % display)
                msg = (f"[{prefix}] iter {it}/{max_iters} loss {shown[0]:.4f} ("
                       + ", ".join(f"{k} {v:.4f}" for k, v in zip(parts_smooth, shown[1:]))
                       + f") lr {lr:g} {(now - t_disp) / max(n, 1):.3f} s/iter")
                t_disp = now
                if bar is not None:
                    bar.write(msg)
                else:
                    print(msg, flush=True)
        if it % cfg.TRAIN.SNAPSHOT_ITERS == 0 or it == max_iters:
            rngs = du.all_gather_object(get_rng_states())  # every rank's, for an exact resume
            if rank == 0:
                path = snapshot_path(output_dir, prefix, it)
                save_atomic({"iteration": it, "model": model.state_dict(),
                             "optimizer": optimizer.state_dict(),
                             "scaler": scaler.state_dict() if scaler is not None else None,
                             "rng": rngs[0], "rng_per_rank": rngs,
                             "data": {"seed": seed, "next_batch": it * iter_size,
                                      "ims_per_batch": ims_per_batch, "world_size": world},
                             "max_iters": max_iters, "stepsize": stepsize}, path)
            du.barrier()
    if bar is not None:
        bar.close()
    tb.close()
    if sampler_gens is not None:
        model.generator = old_generator
    if rank == 0:
        elapsed = time.perf_counter() - t_start
        done = max(it - start_iter, 1)
        print(f"[{prefix}] done: {it - start_iter} iters in {elapsed:.1f} s "
              f"({elapsed / done:.3f} s/iter)")
        final = {"model": export_state_dict(model), "iteration": it}
        final.update(extra or {})
        save_atomic(final, out_final)
    du.barrier()
    model.eval()
    return out_final


def _check_all_grads(model, prefix, world):
    """Every trainable parameter must get a gradient: under DDP (find_unused_parameters False)
    one that does not stalls the gradient reduction of the next iteration."""
    missing = du.parameters_without_grad(model)
    if not missing:
        return
    msg = (f"[{prefix}] trainable parameters without a gradient: {missing[:6]}"
           f"{' ...' if len(missing) > 6 else ''}; freeze them (frozen=...) or build the model "
           "without that part")
    if world > 1:
        raise RuntimeError(msg + " (needed by DistributedDataParallel)")
    if du.get_rank() == 0:
        print("warning: " + msg, flush=True)


def load_weights(path):
    """The state dict inside a final file or a snapshot written by train_model."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    return state["model"] if isinstance(state, dict) and "model" in state else state


def check_finite_params(model):
    """Names of parameters holding NaN/inf (for error messages)."""
    return [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]


__all__ = ["CaffeSGD", "freeze", "build_optimizer", "step_lr", "train_model", "find_snapshot",
           "load_weights", "export_state_dict", "seed_all"]
