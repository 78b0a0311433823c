"""Shared by the training tests: train_model with the cfg turned into its arguments, and a hook
that interrupts a run right after a snapshot (an in-process stand-in for kill -9)."""
from frcnn.engine import HookBase
from frcnn.engine.checkpoint import roidb_signature
from frcnn.fast_rcnn import train as T


class Interrupted(Exception):
    pass


class StopAt(HookBase):
    """Raise Interrupted after iteration `k` and all its hooks (its snapshot, if one is due):
    before step k + 1 starts."""

    def __init__(self, k):
        self.k = k

    def before_step(self):
        if self.trainer.iter == self.k:
            raise Interrupted(self.k)


def train(model, loader_fn, cfg, out, max_iters, stepsize, ims, prefix, *, roidb=(), seed=None,
          iter_size=1, stop_at=None, frozen=(), resume=True):
    """T.train_model as the tools call it; stop_at=k interrupts after iteration k."""
    solver = T.SolverParams.from_cfg(cfg, max_iters, stepsize)
    hooks = [StopAt(stop_at)] if stop_at else []
    try:
        return T.train_model(model, loader_fn, solver, out, prefix, ims_per_batch=ims,
                             seed=cfg.RNG_SEED if seed is None else seed,
                             data_signature=roidb_signature(list(roidb)), iter_size=iter_size,
                             frozen=frozen, resume=resume, device="cpu", hooks=hooks,
                             log_dir=None, progress=False)
    except Interrupted:
        return None
