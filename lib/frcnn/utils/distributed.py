"""Rank / world-size helpers.

Single-process runs need nothing from here but `get_rank() == 0`. Under `torchrun`
(RANK / WORLD_SIZE / LOCAL_RANK in the environment) `init_distributed` joins the process
group (gloo on CPU, nccl on CUDA); the solver then wraps the model with `wrap_model` and
each rank reads its own shard (the loader takes rank / world_size).
"""
import os

import torch
import torch.distributed as dist


def is_dist():
    return dist.is_available() and dist.is_initialized()


def get_rank():
    return dist.get_rank() if is_dist() else int(os.environ.get("RANK", 0)) if _launched() else 0


def get_world_size():
    return dist.get_world_size() if is_dist() else 1


def get_local_rank():
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main_process():
    return get_rank() == 0


def _launched():
    """True when started by torchrun (the env it sets is present)."""
    return "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_distributed(device="cpu"):
    """Join the process group when launched by torchrun; returns (rank, world_size, device).

    device: 'cpu' or 'cuda'; with 'cuda' each rank takes cuda:LOCAL_RANK.
    """
    if not _launched() or is_dist():
        return get_rank(), get_world_size(), torch.device(device)
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(get_local_rank())
        dev = torch.device("cuda", get_local_rank())
    dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), dev


def barrier():
    if is_dist():
        dist.barrier()


def wrap_model(model, device):
    """DistributedDataParallel around `model` when a process group is up, else `model`."""
    if not is_dist():
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if torch.device(device).type == "cuda" else None
    return DDP(model, device_ids=ids, find_unused_parameters=True)


def unwrap_model(model):
    return model.module if hasattr(model, "module") else model


def all_reduce_mean(value):
    """Average a python float across ranks (for logging only)."""
    if not is_dist():
        return value
    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t)
    return t.item() / get_world_size()
