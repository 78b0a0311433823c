"""The one place that turns files into Python objects: files are data, never code.

Unpickling runs whatever the file says, so a model file or a proposals pickle from a stranger
could run commands on this machine. Everything the project reads goes through here:

- load_torch(path): model files, snapshots, weight files; torch.load(weights_only=True) with
  numpy arrays allowed (files written before the ModelFile writer hold numpy bbox stats and the
  numpy RNG state).
- load_pickle(path): proposal, detection and cache pickles in py-faster-rcnn's format, through an
  unpickler that builds only numpy arrays and dtypes, lists, tuples, dicts, sets, numbers,
  strings and bytes (plus the classes a caller names, e.g. a cache's own record types).

A file that asks for anything else is refused with UnsafeFileError naming the file and what it
asked for. `trust(path)` (the tools' `--trust-file PATH`, Detector.from_file(trust_file=True))
loads that one file with plain unpickling, for files the user knows and trusts.
"""
import os
import pickle
import re

import numpy as np

from frcnn.errors import UserError

# Globals a numpy array pickle needs (protocols 2-5, numpy 1.x and 2.x names, Python 2 pickles).
_NUMPY_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles
}
_TRUSTED = set()


class UnsafeFileError(UserError):
    """A file that asks to run code when loaded (`asked`: what it asked for), or one that is
    truncated or corrupt (`asked` None)."""

    def __init__(self, message, asked=None):
        super().__init__(message)
        self.asked = asked


def trust(path):
    """Let `path` load with plain unpickling (the user vouches for it: --trust-file)."""
    _TRUSTED.add(os.path.realpath(str(path)))


def is_trusted(path):
    return os.path.realpath(str(path)) in _TRUSTED


def refusal(path, what, name):
    return UnsafeFileError(
        f"{path}: refused to load this {what}: it asks to run {name}, which a {what} never needs "
        "(it may have been crafted to run code on this machine, or written by other software); "
        f"if you trust the file and where it came from, rerun with --trust-file {path}", name)


def _resolve(module, name):
    if module.startswith("numpy.core."):  # numpy 1.x / Python 2 pickles; numpy 2 moved it
        module = "numpy._core." + module[len("numpy.core."):]
    mod = __import__(module, fromlist=[name])
    return getattr(mod, name)


class Forbidden(pickle.UnpicklingError):
    """RestrictedUnpickler met a global it does not allow; str() is its dotted name."""


class RestrictedUnpickler(pickle.Unpickler):
    """Builds numpy arrays and plain containers only; `allowed` adds classes by object."""

    def __init__(self, f, allowed=()):
        super().__init__(f, encoding="latin1")  # latin1: Python 2 (cPickle) numpy pickles
        self.allowed = {(c.__module__, c.__qualname__): c for c in allowed}

    def find_class(self, module, name):
        if (module, name) in _NUMPY_GLOBALS:
            return _resolve(module, name)
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        raise Forbidden(f"{module}.{name}")


def load_pickle(path, what="pickle", allowed=()):
    """Unpickle `path` with RestrictedUnpickler (plain pickle when trust()ed).

    -> the object. A forbidden global -> UnsafeFileError; a truncated or corrupt file ->
    UnsafeFileError saying so (callers that can rebuild catch it)."""
    path = str(path)
    with open(path, "rb") as f:
        if is_trusted(path):
            return pickle.load(f)
        try:
            return RestrictedUnpickler(f, allowed).load()
        except Forbidden as e:
            raise refusal(path, what, str(e)) from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError,
                KeyError, MemoryError) as e:
            raise UnsafeFileError(f"{path}: not a readable {what} (truncated or corrupt: "
                                  f"{type(e).__name__}: {e}); write it again") from None


def load_cache(path, what="cache", allowed=()):
    """load_pickle for the project's own caches: a refused, truncated or corrupt cache is not an
    error but a cache to rebuild -> None (after a warning naming it)."""
    try:
        return load_pickle(path, what, allowed)
    except UnsafeFileError as e:
        why = (f"it asks to run {e.asked}, this project never writes that" if e.asked else
               "truncated or corrupt")
        print(f"warning: {path}: {what} ignored ({why}); rebuilding it from the source files")
        return None


def torch_safe_globals():
    """What load_torch allows beyond torch's own weights-only set: numpy arrays (old files)."""
    dtypes = [type(np.dtype(t)) for t in (np.bool_, np.int8, np.int16, np.int32, np.int64,
                                          np.uint8, np.uint16, np.uint32, np.uint64, np.float16,
                                          np.float32, np.float64)]
    return [_resolve(m, n) for m, n in sorted(_NUMPY_GLOBALS)
            if not m.startswith("numpy.core")] + dtypes


def load_torch(path, what="model file", mmap=False):
    """torch.load(path, weights_only=True) on the CPU, numpy arrays allowed.

    -> the object. A forbidden global -> UnsafeFileError naming it; a file torch cannot read
    (truncated, corrupt, not a torch file) -> UnsafeFileError saying so."""
    import torch

    path = str(path)
    if is_trusted(path):
        return torch.load(path, map_location="cpu", mmap=mmap, weights_only=False)
    try:
        with torch.serialization.safe_globals(torch_safe_globals()):
            return torch.load(path, map_location="cpu", mmap=mmap, weights_only=True)
    except pickle.UnpicklingError as e:
        m = (re.search(r"GLOBAL ([\w.]+)", str(e))
             or re.search(r"but got <class '([\w.]+)'>", str(e)))
        if m:
            raise refusal(path, what, m.group(1)) from None
        detail = re.search(r"WeightsUnpickler error: *(.+)", str(e))
        raise refusal(path, what, "code (" + (detail.group(1).strip() if detail else
                                              str(e).splitlines()[0]) + ")") from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise UnsafeFileError(f"{path}: not a readable {what} (truncated or corrupt: {first}); "
                              "write it again or give another file") from None


def numpy_to_tensors(obj):
    """Numpy arrays (and scalars) inside dicts/lists/tuples -> tensors (and Python numbers), so
    a file written with it needs nothing beyond torch's weights-only set."""
    import torch

    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return type(obj)((k, numpy_to_tensors(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(numpy_to_tensors(v) for v in obj)
    return obj


__all__ = ["UnsafeFileError", "RestrictedUnpickler", "load_pickle", "load_cache", "load_torch",
           "trust", "is_trusted", "numpy_to_tensors"]
