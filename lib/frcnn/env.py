"""Prints the build environment: python -m frcnn.env"""
import platform
import shutil
import subprocess
import sys


def _nvcc_version():
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return "not found"
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=30).stdout
        return f"{nvcc}: " + out.strip().splitlines()[-1]
    except Exception as e:  # noqa: BLE001 - informational only
        return f"{nvcc}: {e}"


def collect():
    """dict of name -> str describing python, torch, CUDA, compiler and the built kernels."""
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch CUDA build": str(torch.version.cuda),
        "CUDA available": str(torch.cuda.is_available()),
    }
    if torch.cuda.is_available():
        info["GPU"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    info["CUDA_HOME"] = str(CUDA_HOME)
    info["nvcc"] = _nvcc_version()
    info["torch threads"] = str(torch.get_num_threads())
    from frcnn.ops import _ext

    if _ext.LOADED:
        C = _ext._C
        info["frcnn._C"] = C.__file__
        info["compiler (frcnn._C)"] = C.COMPILER
        info["frcnn._C CUDA"] = (f"yes (CUDA {C.CUDA_VERSION})" if C.WITH_CUDA else "no")
        for op in ("nms", "roi_pool", "roi_pool_backward"):
            keys = [k for k in ("CPU", "CUDA")
                    if torch._C._dispatch_has_kernel_for_dispatch_key(f"frcnn::{op}", k)]
            info[f"kernels frcnn::{op}"] = ", ".join(keys) or "none"
    else:
        info["frcnn._C"] = f"NOT BUILT: run make ({_ext._ERROR})"
    try:
        from frcnn.utils import cython_bbox
        info["frcnn.utils.cython_bbox"] = cython_bbox.__file__
    except ImportError as e:
        info["frcnn.utils.cython_bbox"] = f"NOT BUILT: run make ({e})"
    return info


def main():
    info = collect()
    width = max(len(k) for k in info)
    for k, v in info.items():
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
