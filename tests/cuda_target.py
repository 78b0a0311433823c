"""Which CUDA kernels the test_cuda_emu*.py files run: emulated on the CPU (default) or on a GPU.

FRCNN_CUDA_TEST_DEVICE=cuda runs the same seeded cases on a real GPU (scripts/gpu_check.sh): the
CUDA build's ops on CUDA tensors instead of the emulator; emulator-only tests skip then.
FRCNN_CUDA_TEST_QUICK=1: a tenth of the random cases (for compute-sanitizer's slow tools).

    EMU, skip = select(needs=("roi_align",))   # EMU: torch.ops.frcnn_cuda_emu or None
    if skip: pytestmark = skip
"""
import os

import pytest
import torch

import frcnn.ops  # noqa: F401 - loads frcnn._C (the CPU kernels)

TARGET = os.environ.get("FRCNN_CUDA_TEST_DEVICE", "emu")
QUICK = os.environ.get("FRCNN_CUDA_TEST_QUICK") == "1"
if TARGET not in ("emu", "cuda"):
    raise RuntimeError(f"FRCNN_CUDA_TEST_DEVICE must be emu or cuda, got {TARGET!r}")
emu_only = pytest.mark.skipif(TARGET != "emu", reason="tests the emulator or its parameters")


def ncases(n):
    return max(1, n // 10) if QUICK else n


def select(needs=()):
    """-> (the emulator's op namespace or None, a module-level skip mark or None)."""
    if TARGET == "cuda":
        if torch.cuda.is_available() and getattr(frcnn.ops._ext._C, "WITH_CUDA", 0):
            return None, None
        return None, pytest.mark.skip(reason="FRCNN_CUDA_TEST_DEVICE=cuda needs a GPU and a "
                                             "FORCE_CUDA=1 build")
    try:
        import frcnn._C_cuda_emu  # noqa: F401
        emu = torch.ops.frcnn_cuda_emu
        for op in needs:
            if not hasattr(emu, op):
                raise ImportError(f"this frcnn._C_cuda_emu predates {op}: run make cuda-emu")
        return emu, None
    except ImportError as e:  # pragma: no cover - CI builds it
        return None, pytest.mark.skip(
            reason=f"frcnn._C_cuda_emu is not built ({e}): run `make cuda-emu` (needs the CUDA "
                   "toolkit's headers, no GPU); CI builds it")
