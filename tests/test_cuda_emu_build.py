"""Build-level guards of the CUDA path that need no GPU: a CUDA tensor given to a CPU-only build
gets a clear "rebuild with FORCE_CUDA=1" error, and the CPU kernels are compiled without FMA
contraction (the CUDA kernels use --fmad=false), so both round the same way."""
import ast
import os
import types

import pytest
import torch

from frcnn.ops import _ext, nms, roi_pool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeCudaTensor:
    """Stands in for a CUDA tensor on a machine without CUDA (only what require() reads)."""
    is_cuda = True
    device = torch.device("cuda", 0)


@pytest.fixture
def cpu_only_build(monkeypatch):
    monkeypatch.setattr(_ext, "_C", types.SimpleNamespace(WITH_CUDA=0, __file__="frcnn/_C.so"))


def test_cuda_tensor_on_cpu_only_build_says_rebuild(cpu_only_build):
    with pytest.raises(RuntimeError, match=r"CUDA tensor \(cuda:0\).*built without CUDA kernels"
                                           r".*FORCE_CUDA=1 make build"):
        _ext.require(torch.zeros(2), FakeCudaTensor())


def test_op_wrappers_check_the_device_first(cpu_only_build):
    with pytest.raises(RuntimeError, match="FORCE_CUDA=1"):
        nms(FakeCudaTensor(), FakeCudaTensor(), 0.5)
    with pytest.raises(RuntimeError, match="FORCE_CUDA=1"):
        roi_pool(FakeCudaTensor(), FakeCudaTensor(), (7, 7), 1 / 16)


def test_cpu_tensors_and_cuda_builds_pass(monkeypatch, cpu_only_build):
    _ext.require(torch.zeros(2), torch.zeros(3, dtype=torch.float64))
    monkeypatch.setattr(_ext, "_C", types.SimpleNamespace(WITH_CUDA=1, __file__="frcnn/_C.so"))
    _ext.require(FakeCudaTensor())


def test_missing_build_still_says_run_make(monkeypatch):
    monkeypatch.setattr(_ext, "_C", None)
    with pytest.raises(RuntimeError, match="frcnn ops are not built: run make"):
        _ext.require(torch.zeros(1))


def _list_assigned(path, name):
    """The string list literal assigned to `name` anywhere in the file."""
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            if isinstance(node.value, ast.List):
                return [ast.literal_eval(e) for e in node.value.elts]
    raise AssertionError(f"no list literal `{name} = [...]` in {path}")


def test_cpu_and_emulator_builds_disable_fma_contraction():
    # gcc contracts a * b + c into an FMA by default where the target has one (-march=native,
    # aarch64): the CPU kernels would then round differently from CUDA (--fmad=false).
    assert "-ffp-contract=off" in _list_assigned(os.path.join(ROOT, "setup.py"), "cxx")
    assert "-ffp-contract=off" in _list_assigned(os.path.join(ROOT, "csrc", "emu", "build_emu.py"), "cxx")
    make = open(os.path.join(ROOT, "Makefile")).read()
    assert "--fmad=false" in make and "-ffp-contract=off" in make
