"""Snapshots that resume exactly: model, optimizer, iteration, every rank's RNG states and the
data position, written atomically (a kill -9 at any moment leaves the previous snapshot intact).
A snapshot also records the run's signature (seed, batch, schedule, data); resuming with another
signature is an error that names the difference.

Each snapshot carries a checksum of its content; a truncated or corrupt newest snapshot (a power
cut, a full disk) is skipped with a warning and the run resumes exactly from the previous good
one. A write that fails (disk full) leaves the previous snapshot intact and stops with an error.
Snapshots load with torch.load(weights_only=True) (frcnn.safe_io)."""
import glob
import hashlib
import os
import random
import re

import numpy as np
import torch

from frcnn.errors import ConfigError
from frcnn.model_file import ModelFile
from frcnn.safe_io import UnsafeFileError, load_torch
from frcnn.utils.atomic_file import DiskFull, save_atomic  # noqa: F401  (snapshots and tests)
from frcnn.utils import distributed as du


class ConfigMismatch(ConfigError):
    """Resuming a snapshot made with other settings."""


def get_rng_states():
    """Every RNG's state, as tensors and Python values (a weights-only load reads them; the
    numpy key array as a list, which all_gather_object also pickles)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {"torch": torch.get_rng_state(), "python": random.getstate(),
              "numpy": (kind, keys.tolist(), pos, has_gauss, cached)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states):
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, cached = states["numpy"]  # keys: a list, or numpy (old files)
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def snapshot_path(output_dir, prefix, iteration):
    return os.path.join(output_dir, f"{prefix}_iter_{iteration}.pth")


def final_path(output_dir, prefix):
    return os.path.join(output_dir, f"{prefix}_final.pth")


def find_snapshots(output_dir, prefix):
    """Every `<prefix>_iter_<N>.pth` in output_dir, newest (highest N) first."""
    pat = re.compile(re.escape(prefix) + r"_iter_(\d+)\.pth$")
    found = []
    for p in glob.glob(os.path.join(glob.escape(output_dir), f"{glob.escape(prefix)}_iter_*.pth")):
        m = pat.search(os.path.basename(p))
        if m:
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found, reverse=True)]


def find_snapshot(output_dir, prefix):
    """Newest `<prefix>_iter_<N>.pth` in output_dir, or None."""
    snaps = find_snapshots(output_dir, prefix)
    return snaps[0] if snaps else None




def content_checksum(state):
    """sha256 over a snapshot's content (tensors by bytes, other values by repr), the
    'checksum' entry left out: what a torn or corrupted file would change."""
    h = hashlib.sha256()

    def walk(x):
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy())  # the buffer, not a copy
        elif isinstance(x, np.ndarray):
            h.update(f"A{x.dtype}{x.shape}".encode())
            h.update(np.ascontiguousarray(x).reshape(-1).view(np.uint8))
        elif isinstance(x, dict):
            h.update(b"{")
            for k in sorted(x, key=repr):
                if k != "checksum":
                    h.update(repr(k).encode())
                    walk(x[k])
            h.update(b"}")
        elif isinstance(x, (list, tuple)):
            h.update(b"[")
            for v in x:
                walk(v)
            h.update(b"]")
        else:
            h.update(repr(x).encode())
    walk(state)
    return h.hexdigest()


def roidb_signature(roidb):
    """A short hash of what the data loader reads: images, flips, boxes, proposals count."""
    h = hashlib.sha1()
    for e in roidb:
        if isinstance(e, dict):
            boxes = e.get("boxes")
            h.update(repr((e.get("image"), bool(e.get("flipped")),
                           None if boxes is None else np.asarray(boxes).tobytes(),
                           len(e.get("proposals", ()) if e.get("proposals") is not None else ())))
                     .encode())
        else:
            h.update(repr(e).encode())
    return f"{len(roidb)} entries, sha1 {h.hexdigest()[:12]}"


def run_signature(*, seed, ims_per_batch, iter_size, world_size, max_iters, stepsize, base_lr,
                  data, warmup=(0, 1.0)):
    """What must not change between a snapshot and the run that resumes it (the warm-up only
    when there is one, so snapshots from before it existed still resume)."""
    sig = {"seed": int(seed), "ims_per_batch": int(ims_per_batch), "iter_size": int(iter_size),
           "world_size": int(world_size), "max_iters": int(max_iters),
           "stepsize": int(stepsize or 0), "base_lr": float(base_lr), "data": str(data)}
    if warmup[0]:
        sig["warmup"] = [int(warmup[0]), float(warmup[1])]
    return sig


def export_state_dict(model):
    """Weights for inference/next stages: bbox_pred un-normalised when the model has a head."""
    model = du.unwrap_model(model)
    if hasattr(model, "unnormalized_state_dict"):
        return model.unnormalized_state_dict()
    return model.state_dict()


class Checkpointer:
    """Writes `<prefix>_iter_<N>.pth` snapshots and `<final_prefix>_final.pth` (rank 0) and
    resumes the newest snapshot exactly.

    signature: run_signature(...) of this run; resume() refuses a snapshot with another one.
    """

    def __init__(self, output_dir, prefix, model, optimizer, signature, grad_scaler=None,
                 final_prefix=None):
        self.output_dir, self.prefix = output_dir, prefix
        self.final_prefix = final_prefix or prefix
        self.model, self.optimizer, self.grad_scaler = model, optimizer, grad_scaler
        self.signature = signature
        self.trainer_state = None  # the resumed snapshot's Trainer.state_dict() (hook states)
        os.makedirs(output_dir, exist_ok=True)

    @property
    def final_file(self):
        return final_path(self.output_dir, self.final_prefix)

    def resume(self):
        """Load the newest good snapshot; -> its iteration (0 when there is none). A truncated or
        corrupt newer one is named in a warning and skipped (the previous one resumes exactly)."""
        for snap in find_snapshots(self.output_dir, self.prefix):
            state = self.read_snapshot(snap)
            if state is not None:
                break
        else:
            return 0
        self.check_signature(state.get("signature"), snap)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.grad_scaler is not None and state.get("scaler"):
            self.grad_scaler.load_state_dict(state["scaler"])
        rngs = state["rng_per_rank"]
        set_rng_states(rngs[du.get_rank()])
        self.trainer_state = state.get("trainer")
        if du.get_rank() == 0:
            print(f"[{self.prefix}] resumed from {snap} at iteration {state['iteration']}")
        return int(state["iteration"])

    def read_snapshot(self, snap):
        """The snapshot's dict, or None (with a warning) when it is truncated or corrupt.
        Snapshots written before checksums existed load unchecked; a file that asks to run
        code is an error (safe_io), never skipped quietly."""
        try:
            state = load_torch(snap, "snapshot")
            bad = not isinstance(state, dict) or "model" not in state
            why = "not a snapshot"
            if not bad and "checksum" in state:
                bad, why = state["checksum"] != content_checksum(state), "checksum mismatch"
        except UnsafeFileError as e:
            if "refused" in str(e):
                raise
            bad, why = True, str(e).split(": ", 1)[-1]
        if bad and du.get_rank() == 0:
            print(f"warning: {snap}: truncated or corrupt ({why}); skipping it, resuming from "
                  "the previous snapshot")
        return None if bad else state

    def check_signature(self, old, path):
        if old is None:
            raise ConfigMismatch(
                f"{path}: snapshot without a run signature (written by an older version); "
                "delete it or pass --no-resume to start this stage over")
        diff = [f"{k}: snapshot {old.get(k)!r}, now {v!r}" for k, v in self.signature.items()
                if old.get(k) != v]
        if diff:
            raise ConfigMismatch(
                f"{path} was written by a run with other settings ({'; '.join(diff)}). "
                "Resuming would not reproduce either run: restore the settings, or start over "
                "with --no-resume (or another EXP_DIR, or delete the snapshots "
                f"{os.path.join(self.output_dir, self.prefix)}_iter_*.pth)")

    def save(self, trainer):
        """Snapshot at trainer.iter (every rank takes part: RNG states are gathered)."""
        it = trainer.iter
        rngs = du.all_gather_object(get_rng_states())
        failed = None
        if du.get_rank() == 0:
            state = {"iteration": it, "model": self.model.state_dict(),
                     "optimizer": self.optimizer.state_dict(),
                     "scaler": self.grad_scaler.state_dict() if self.grad_scaler else None,
                     "rng_per_rank": rngs, "signature": self.signature,
                     "trainer": trainer.state_dict(),
                     "data": {"next_batch": it * trainer.iter_size}}
            state["checksum"] = content_checksum(state)
            try:
                save_atomic(state, snapshot_path(self.output_dir, self.prefix, it))
            except DiskFull as e:
                failed = str(e)
        failed = du.all_gather_object(failed)[0]  # every rank stops alike (no hang at a barrier)
        if failed:
            raise DiskFull(failed)

    def save_final(self, trainer, extra=None):
        if du.get_rank() == 0:
            ModelFile.from_flat(export_state_dict(self.model),
                                {"iteration": trainer.iter, **(extra or {})}).save(self.final_file)
        du.barrier()
