"""Loads the compiled library frcnn._C, which registers torch.ops.frcnn.*."""
import importlib

import torch  # noqa: F401 - loads libc10/libtorch, which frcnn._C links against

_C = None
_ERROR = None
try:
    _C = importlib.import_module("frcnn._C")
except ImportError as e:  # not built: the ops raise on use, with what to do
    _ERROR = e

LOADED = _C is not None


def require():
    """Raises a RuntimeError saying how to build the ops when frcnn._C is missing."""
    if _C is None:
        raise RuntimeError(
            "frcnn ops are not built: run make (in the repository root; it runs "
            f"`python setup.py build_ext --inplace`). Import error: {_ERROR}")
