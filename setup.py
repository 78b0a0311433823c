"""Builds frcnn._C (C++ ops, plus CUDA kernels when possible) and frcnn.utils.cython_bbox.

    python setup.py build_ext --inplace     # what `make` runs
    pip install -e .                        # editable install, package in lib/

CUDA is built when a CUDA toolkit is found and torch is a CUDA build and either a GPU is visible
or FORCE_CUDA=1. Target GPUs come from TORCH_CUDA_ARCH_LIST (torch's default when unset); no
-arch is hard-coded here. FORCE_CUDA=0 disables CUDA.
"""
import glob
import os

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

CSRC = "csrc"


def want_cuda():
    """(build_cuda: bool, reason: str)"""
    force = os.environ.get("FORCE_CUDA")
    if force == "0":
        return False, "FORCE_CUDA=0"
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is a CPU-only build"
    if CUDA_HOME is None:
        return False, "no CUDA toolkit found (set CUDA_HOME)"
    if force == "1":
        return True, "FORCE_CUDA=1"
    if torch.cuda.is_available():
        return True, "a GPU is visible"
    return False, "no GPU visible (set FORCE_CUDA=1 to build the CUDA kernels anyway)"


def extensions():
    cpu_sources = ([os.path.join(CSRC, "ops.cpp")]
                   + sorted(glob.glob(os.path.join(CSRC, "cpu", "*.cpp"))))
    # The Cython module is C++ too: torch's BuildExtension compiles every source with -std=c++20.
    # -fno-trapping-math lets gcc vectorise the branch-free NMS loop (no result changes).
    # -fopenmp so at::parallel_for runs in parallel (it is serial without _OPENMP); libgomp is
    # the one torch already loaded (same soname).
    # -ffp-contract=off: no fused multiply-adds (gcc fuses by default where the target has FMA,
    # e.g. -march=native or aarch64), so the CPU kernels round like the CUDA ones (--fmad=false).
    cxx = ["-O3", "-fopenmp", "-fno-trapping-math", "-ffp-contract=off"]
    define_macros = []
    build_cuda, reason = want_cuda()
    if build_cuda:
        sources = (cpu_sources + sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cpp")))
                   + sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cu"))))
        define_macros += [("FRCNN_WITH_CUDA", "1"), ("FRCNN_CUDA_VERSION", torch.version.cuda)]
        # --fmad=false: the same IoU/bin arithmetic as the CPU kernels. Architectures come from
        # TORCH_CUDA_ARCH_LIST (or the visible GPUs), read by torch's cpp_extension.
        ext = CUDAExtension("frcnn._C", sources, define_macros=define_macros,
                            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "--fmad=false"]},
                            extra_link_args=["-fopenmp"])
        what = (f"frcnn._C: CPU + CUDA kernels (CUDA {torch.version.cuda}, {reason}, "
                f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', '<torch default>')})")
    else:
        ext = CppExtension("frcnn._C", cpu_sources, define_macros=define_macros,
                           extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])
        what = f"frcnn._C: CPU kernels only ({reason})"
    cython_ext = Extension("frcnn.utils.cython_bbox",
                           [os.path.join("lib", "frcnn", "utils", "cython_bbox.pyx")],
                           include_dirs=[np.get_include()], language="c++",
                           extra_compile_args=["-O3"],
                           define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")])
    # Generated C++ goes under build/, out of the source tree.
    cythonized = cythonize([cython_ext], language_level=3, quiet=True,
                           build_dir=os.path.join("build", "cython"))
    return [ext] + cythonized, what


EXTENSIONS, WHAT = extensions()


class Build(BuildExtension):
    def run(self):
        super().run()
        print(f"[frcnn setup] built {WHAT}")
        print("[frcnn setup] built frcnn.utils.cython_bbox (Cython bbox_overlaps)")


setup(
    name="frcnn",
    version="0.1.0",
    description="Faster R-CNN (Ren et al. 2015) in PyTorch, faithful to py-faster-rcnn",
    package_dir={"": "lib"},
    packages=find_packages("lib"),
    ext_modules=EXTENSIONS,
    cmdclass={"build_ext": Build.with_options(use_ninja=True)},
    python_requires=">=3.9",
    zip_safe=False,
)
