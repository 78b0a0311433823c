"""Trainer: the step (forward, backward, optimizer step) and the hook points around it.

The idea is detectron2's engine/train_loop.py: the loop knows nothing of lr schedules, logging
or snapshots; hooks do, reading the trainer's state (iteration, last losses, window of recent
steps). Losses stay on the device as 0-dim tensors; hooks turn the recent window into floats
once per window (`window_floats`), so a step costs no host sync.
"""
import contextlib
import sys
import weakref

import torch

from frcnn.utils import distributed as du


class HookBase:
    """Override any of before_train / before_step / after_step / after_train.

    `self.trainer` is set when the hook is registered; the hook keeps only a weak reference
    (the trainer holds its hooks, so a strong one would be a cycle that keeps the model, the
    optimizer and the data loader alive after training). after_train runs even when a step
    raised: a hook that must act only on a finished run checks `trainer.finished`.
    A hook with state worth resuming overrides state_dict / load_state_dict (it goes into the
    snapshots).
    """

    _trainer_ref = None

    @property
    def trainer(self):
        return None if self._trainer_ref is None else self._trainer_ref()

    @trainer.setter
    def trainer(self, trainer):
        self._trainer_ref = None if trainer is None else weakref.ref(trainer)

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass

    def before_train(self):
        pass

    def before_step(self):
        pass

    def after_step(self):
        pass

    def after_train(self):
        pass


def _to_device(batch, device):
    def mv(x):
        return None if x is None else x.to(device, non_blocking=True)

    props = batch.get("proposals")
    return (mv(batch["images"]), mv(batch["im_info"]), [mv(g) for g in batch["gt_boxes"]],
            None if props is None else [mv(p) for p in props])


class Trainer:
    """Runs iterations [start_iter, max_iter) of SGD over `data`, calling the hooks.

    model: the module whose forward returns a dict of scalar losses in train mode;
      `ddp_model` (DistributedDataParallel around it) is called instead when given.
    data: an iterator of batches (dicts with images, im_info, gt_boxes, proposals, image_ids,
      iteration), e.g. frcnn.roi_data.loader.make_data_loader.
    iter_size: forwards accumulated per update (gradients averaged).
    generators: frcnn.utils.distributed.ImageGenerators or None; when given, every image gets its
      own sampling generator, passed to the forward as `generators=`.
    autocast: None, or (device_type, dtype) for torch.autocast; grad_scaler: a GradScaler (fp16).
    window: steps per window (logging, finite check); the window's losses are kept as tensors.
    """

    def __init__(self, model, optimizer, data, *, iter_size=1, generators=None, autocast=None,
                 grad_scaler=None, ddp_model=None, window=20):
        self.model = model
        self.forward_model = ddp_model if ddp_model is not None else model
        self.optimizer = optimizer
        self.data = data
        self.iter_size = int(iter_size)
        self.generators = generators
        self.autocast = autocast
        self.grad_scaler = grad_scaler
        self.window_size = max(1, int(window))
        self.device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.rank = du.get_rank()
        self.hooks = []
        self.iter = self.start_iter = self.max_iter = 0
        self.window = []            # [{'iter', 'losses': {k: 0-dim tensor}, 'image_ids'}]
        self._floats = None

    def register_hooks(self, hooks):
        for h in hooks:
            if h is None:
                continue
            h.trainer = self
            self.hooks.append(h)

    def state_dict(self):
        """The hooks' states, in registration order (snapshots keep it; `load_state_dict`)."""
        return {"hooks": [(type(h).__name__, h.state_dict()) for h in self.hooks]}

    def load_state_dict(self, state):
        for h, (name, hook_state) in zip(self.hooks, state.get("hooks", [])):
            if type(h).__name__ == name:
                h.load_state_dict(hook_state)

    @property
    def finished(self):
        return self.iter >= self.max_iter

    # -- the loop -------------------------------------------------------------------------
    def train(self, start_iter, max_iter):
        self.iter = self.start_iter = int(start_iter)
        self.max_iter = int(max_iter)
        self.model.train()
        try:
            for h in self.hooks:
                h.before_train()
            while self.iter < self.max_iter:
                for h in self.hooks:
                    h.before_step()
                self.run_step()
                self.iter += 1
                for h in self.hooks:
                    h.after_step()
                if self.window_ends():
                    self.window, self._floats = [], None
        except BaseException:
            self._after_train(failing=True)
            raise
        self._after_train(failing=False)

    def _after_train(self, failing):
        """Every hook's after_train; when a step failed, an after_train error is printed and
        the step's error is the one raised."""
        for h in self.hooks:
            try:
                h.after_train()
            except Exception as e:  # noqa: BLE001 - keep the original error
                if not failing:
                    raise
                print(f"warning: {type(h).__name__}.after_train failed after the error below: "
                      f"{type(e).__name__}: {e}", file=sys.stderr, flush=True)

    def window_ends(self):
        return self.iter % self.window_size == 0 or self.iter == self.max_iter

    def _forward_context(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        device_type, dtype = self.autocast
        return torch.autocast(device_type, dtype=dtype)

    def run_step(self):
        """One update: iter_size forwards and backwards, then the optimizer step."""
        self.optimizer.zero_grad(set_to_none=True)
        step_losses, image_ids = {}, []
        for micro in range(self.iter_size):
            batch = next(self.data)
            images, im_info, gt_boxes, proposals = _to_device(batch, self.device)
            kwargs = {} if proposals is None else {"proposals": proposals}
            if self.generators is not None:
                n = images.shape[0]
                kwargs["generators"] = self.generators.for_batch(batch["iteration"],
                                                                 self.rank * n, n)
            # accumulate locally, all-reduce once per update
            with du.no_sync(self.forward_model, micro < self.iter_size - 1):
                with self._forward_context():
                    losses = self.forward_model(images, im_info, gt_boxes, **kwargs)
                loss = sum(losses.values()) / self.iter_size
                if self.grad_scaler is not None:
                    self.grad_scaler.scale(loss).backward()
                else:
                    loss.backward()
            for k, v in losses.items():
                v = v.detach().float() / self.iter_size
                step_losses[k] = step_losses[k] + v if k in step_losses else v
            image_ids.append(list(batch.get("image_ids", [])))
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()
        self.window.append({"iter": self.iter + 1, "losses": step_losses, "image_ids": image_ids})
        self._floats = None

    def window_floats(self):
        """[(iteration, {loss name: float, 'total_loss': float})] of the current window; one
        host sync per call (cached until the next step)."""
        if self._floats is None:
            names = sorted({k for w in self.window for k in w["losses"]})
            if not self.window:
                self._floats = []
            else:
                rows = torch.stack([torch.stack([w["losses"].get(k, torch.zeros((), device=self.device))
                                                 .to(self.device) for k in names])
                                    for w in self.window]).cpu().tolist()
                self._floats = []
                for w, row in zip(self.window, rows):
                    d = {k: v for k, v in zip(names, row) if k in w["losses"]}
                    d["total_loss"] = sum(d.values())
                    self._floats.append((w["iter"], d))
        return self._floats
