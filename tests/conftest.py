"""Puts lib/ on sys.path so tests import the in-place build of `frcnn`."""
import os
import sys

LIB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib")
if LIB not in sys.path:
    sys.path.insert(0, LIB)


def pytest_terminal_summary(terminalreporter):
    """One line, not one per test, when the emulated CUDA kernel tests skipped for want of the
    emulator (tests/cuda_target.py gives each of them that reason)."""
    emu = [r for r in terminalreporter.stats.get("skipped", [])
           if "_C_cuda_emu is not built" in str(getattr(r, "longrepr", ""))]
    if emu:
        terminalreporter.write_line(
            f"note: {len(emu)} emulated CUDA kernel tests skipped: frcnn._C_cuda_emu is not built; "
            "`make test` builds it when the CUDA toolkit's headers are there (set CUDA_HOME), "
            "or run `make cuda-emu`")
