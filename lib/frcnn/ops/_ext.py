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


def require(*tensors):
    """Raises a RuntimeError saying how to build the ops when frcnn._C is missing, or when a
    CUDA tensor reaches a build without CUDA kernels (instead of the dispatcher's "Could not
    run 'frcnn::nms' with arguments from the 'CUDA' backend")."""
    if _C is None:
        raise RuntimeError(
            "frcnn ops are not built: run make (in the repository root; it runs "
            f"`python setup.py build_ext --inplace`). Import error: {_ERROR}")
    for t in tensors:
        if getattr(t, "is_cuda", False) and not getattr(_C, "WITH_CUDA", 0):
            raise RuntimeError(
                f"frcnn ops got a CUDA tensor ({t.device}) but {_C.__file__} was built without "
                "CUDA kernels. Rebuild with them: FORCE_CUDA=1 make build (needs the CUDA "
                "toolkit and a CUDA build of torch; see README, GPU build), or move the "
                "tensors to the CPU.")
