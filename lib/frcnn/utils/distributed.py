"""Multi-process (torchrun / DistributedDataParallel) helpers.

Single-process runs need nothing from here: every helper degrades to the 1-process answer
(rank 0, world 1, the model itself, the local list). Under `torchrun` (RANK / WORLD_SIZE /
LOCAL_RANK in the environment) `init_distributed` joins the process group (nccl on CUDA, gloo
on CPU); the solver wraps the model with `wrap_model`; each rank reads its slice of every
global batch (frcnn.roi_data.loader takes rank / world_size); rank 0 alone writes files.

Layout independence: the random anchor / RoI sampling of each image is drawn from its own
generator seeded by (seed, batch index, position of the image in the global batch)
(`ImageGenerators`), so 2 GPUs x 1 image sample exactly what 1 GPU x 2 images samples, and a
resumed run samples what an uninterrupted one did.
"""
import datetime
import os

import numpy as np
import torch
import torch.distributed as dist

_SAMPLING_STREAM = 7  # keeps image-sampling seeds apart from the loader's (seed, stream, k) streams


# --- rank / world --------------------------------------------------------------------------
def is_dist():
    return dist.is_available() and dist.is_initialized()


def _launched():
    """True when started by torchrun with more than one process (its env is present)."""
    return "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def get_rank():
    return dist.get_rank() if is_dist() else int(os.environ.get("RANK", 0)) if _launched() else 0


def get_world_size():
    return dist.get_world_size() if is_dist() else 1


def get_local_rank():
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main_process():
    return get_rank() == 0


def backend_for(device):
    """nccl for CUDA devices, gloo otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init_distributed(device="cpu", timeout_min=30):
    """Join the process group when launched by torchrun; returns (rank, world_size, device).

    device: 'cpu', 'cuda' or 'cuda:N'; under torchrun with CUDA each rank takes
    cuda:LOCAL_RANK (the N of 'cuda:N' is ignored: torchrun assigns the GPUs).
    Without torchrun (or WORLD_SIZE 1) nothing is initialised: (0, 1, device).
    """
    dev = torch.device(device)
    if is_dist():
        if dev.type == "cuda":
            dev = torch.device("cuda", torch.cuda.current_device())
        return get_rank(), get_world_size(), dev
    if not _launched():
        return 0, 1, dev
    if dev.type == "cuda":
        n = torch.cuda.device_count()
        if get_local_rank() >= n:
            raise RuntimeError(f"LOCAL_RANK {get_local_rank()} but only {n} visible GPUs: "
                               "use --nproc_per_node <= the number of GPUs on each node")
        torch.cuda.set_device(get_local_rank())
        dev = torch.device("cuda", get_local_rank())
    kw = {"device_id": dev} if dev.type == "cuda" else {}
    dist.init_process_group(backend=backend_for(dev),
                            timeout=datetime.timedelta(minutes=timeout_min), **kw)
    return dist.get_rank(), dist.get_world_size(), dev


def setup_for_tool(cfg, quiet=True):
    """init_distributed for a tool's main: sets cfg.DEVICE to this rank's device (cuda:LOCAL_RANK)
    and, with `quiet`, silences stdout on ranks other than 0 (errors still reach stderr).
    -> (rank, world_size, device)."""
    timeout = cfg.DIST.TIMEOUT_MIN if "DIST" in cfg else 30
    rank, world, dev = init_distributed(cfg.DEVICE, timeout)
    if world > 1:
        cfg.DEVICE = str(dev)
        if quiet and rank != 0:
            import sys

            sys.stdout = open(os.devnull, "w")
    return rank, world, dev


def cleanup():
    """Leave the process group (end of a tool's main)."""
    if is_dist():
        dist.barrier()
        dist.destroy_process_group()


def barrier():
    if is_dist():
        dist.barrier()


# --- model ---------------------------------------------------------------------------------
def _has_batch_stats(model):
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
               for m in model.modules())


def wrap_model(model, device, find_unused_parameters=False):
    """DistributedDataParallel around `model` when a process group is up, else `model`.

    Only parameters with requires_grad join the gradient all-reduce, so frozen layers cost
    nothing. find_unused_parameters stays False: every stage model holds only the parts it
    trains (build_model(parts=...)) and its frozen layers, so each trainable parameter gets a
    gradient every backward (train_model checks this on the first iteration with
    `parameters_without_grad`). Buffers are broadcast only when a BatchNorm keeps running
    statistics; ours are frozen (ELITE0) or absent (VGG16, ZF; TINY uses GroupNorm).
    """
    if not is_dist():
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    device = torch.device(device)
    ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    import inspect

    # buffers are synced at construction; per forward only if they change (BN running stats)
    sync = _has_batch_stats(model)
    key = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP).parameters \
        else "broadcast_buffers"  # renamed in newer torch
    return DDP(model, device_ids=ids, find_unused_parameters=find_unused_parameters,
               gradient_as_bucket_view=True, **{key: sync})


def unwrap_model(model):
    return model.module if hasattr(model, "module") else model


def parameters_without_grad(model):
    """Names of trainable parameters whose .grad is None after a backward.

    Such parameters would stall DDP's gradient reduction (find_unused_parameters=False):
    freeze them or build the model without that part.
    """
    return [n for n, p in unwrap_model(model).named_parameters()
            if p.requires_grad and p.grad is None]


def no_sync(model, active):
    """model.no_sync() when `active` and `model` is DDP (gradient accumulation), else a no-op."""
    import contextlib

    if active and hasattr(model, "no_sync"):
        return model.no_sync()
    return contextlib.nullcontext()


# --- learning rate -------------------------------------------------------------------------
LR_SCALING_RULES = ("linear", "none")


def lr_scale(cfg, world_size=None):
    """Factor on the base lr for `world_size` processes under cfg.DIST.LR_SCALING.

    'linear' (Goyal et al. 2017): N processes see N x the reference batch, so lr x N.
    'none': the lr of the single-GPU reference whatever N.
    """
    world = get_world_size() if world_size is None else int(world_size)
    rule = str(cfg.DIST.LR_SCALING).lower() if "DIST" in cfg else "linear"
    if rule not in LR_SCALING_RULES:
        raise ValueError(f"DIST.LR_SCALING {cfg.DIST.LR_SCALING!r}: use one of {LR_SCALING_RULES}")
    return float(world) if rule == "linear" else 1.0


SCHEDULE_SCALING_RULES = ("none", "linear")


def schedule_scale(cfg, world_size=None):
    """Divisor of the iterations and lr step sizes for `world_size` processes under
    cfg.DIST.SCHEDULE_SCALING.

    'none': the iterations as given, so N processes see N x the images of one.
    'linear': iterations / N, so a run sees the same number of images whatever N (a schedule
    written for one process keeps its length in epochs; with LR_SCALING linear, the usual
    large-batch recipe).
    """
    world = get_world_size() if world_size is None else int(world_size)
    rule = str(cfg.DIST.SCHEDULE_SCALING).lower() if "DIST" in cfg else "none"
    if rule not in SCHEDULE_SCALING_RULES:
        raise ValueError(f"DIST.SCHEDULE_SCALING {cfg.DIST.SCHEDULE_SCALING!r}: "
                         f"use one of {SCHEDULE_SCALING_RULES}")
    return world if rule == "linear" else 1


# --- per-image sampling generators ---------------------------------------------------------
def image_seed(seed, batch_index, position):
    """64-bit seed of the sampling stream of image `position` of global batch `batch_index`."""
    ss = np.random.SeedSequence([int(seed), _SAMPLING_STREAM, int(batch_index), int(position)])
    return int(ss.generate_state(1, np.uint64)[0])


class ImageGenerators:
    """torch.Generators (on `device`) reseeded for each batch: one per image of this rank.

    `for_batch(k, first_pos, n)` -> n generators for global positions first_pos .. first_pos+n-1
    of batch k; pass them to the forward as `generators=` (one per image).
    """

    def __init__(self, seed, device="cpu"):
        self.seed = int(seed)
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self._pool = []

    def for_batch(self, batch_index, first_pos, n):
        while len(self._pool) < n:
            self._pool.append(torch.Generator(device=self.device))
        gens = self._pool[:n]
        for i, g in enumerate(gens):
            g.manual_seed(image_seed(self.seed, batch_index, first_pos + i))
        return gens


# --- sharding work and gathering results ---------------------------------------------------
def shard_indices(n, rank=None, world_size=None):
    """Indices of the `n` items this rank handles: rank, rank + world, ... (interleaved, so
    ranks get equal shares of an image list that is sorted by anything)."""
    rank = get_rank() if rank is None else rank
    world = get_world_size() if world_size is None else world_size
    return list(range(rank, n, world))


def gather_by_index(local, n, dst=0):
    """Join per-rank results into one list of length n on rank `dst` (None on other ranks).

    local: dict {index: result} of this rank (from shard_indices); every index 0..n-1 must come
    from exactly one rank. Without a process group: the list itself.
    """
    if not is_dist():
        out = [None] * n
        for i, v in local.items():
            out[i] = v
        return out
    parts = [None] * get_world_size() if get_rank() == dst else None
    dist.gather_object(local, parts, dst=dst)
    if get_rank() != dst:
        return None
    out = [None] * n
    seen = 0
    for p in parts:
        for i, v in p.items():
            out[i] = v
            seen += 1
    if seen != n:
        raise RuntimeError(f"gathered {seen} results for {n} items: ranks disagree on the image list")
    return out


def broadcast_object(obj, src=0):
    """`obj` of rank `src` on every rank."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj):
    """[obj of rank 0, obj of rank 1, ...] on every rank ([obj] without a process group)."""
    if not is_dist():
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_means(values):
    """Average a list of python floats across ranks in one collective (for logging)."""
    values = [float(v) for v in values]
    if not is_dist():
        return values
    dev = torch.device("cuda", torch.cuda.current_device()) \
        if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    return (t / get_world_size()).tolist()


def all_reduce_mean(value):
    """Average a python float across ranks (for logging only)."""
    if not is_dist():
        return value
    dev = torch.device("cuda", torch.cuda.current_device()) \
        if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([float(value)], dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    return t.item() / get_world_size()
