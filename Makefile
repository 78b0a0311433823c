# make            install missing requirements (never replaces torch), build the ops in place
# make test       run the tests          make bench        time the ops (tools/bench_ops.py)
# make cuda-check compile every .cu with nvcc alone (no GPU or CUDA torch needed)
# make clean      remove build products
PYTHON ?= python
NVCC ?= nvcc
# CUDA 13 dropped sm_70 (Volta); sm_75 is its oldest target. Override e.g. CUDA_CHECK_ARCHS="70 80 90".
CUDA_CHECK_ARCHS ?= $(shell $(NVCC) --list-gpu-arch 2>/dev/null | grep -q compute_70 && echo "70 80 90" || echo "75 80 90")
CU_SOURCES := $(wildcard csrc/cuda/*.cu)

.PHONY: all build deps test bench cuda-check clean

all: deps build

deps:
	$(PYTHON) tools/install_missing.py requirements.txt

build:
	$(PYTHON) setup.py build_ext --inplace

test:
	$(PYTHON) -m pytest -q tests

bench:
	$(PYTHON) tools/bench_ops.py

cuda-check:
	@command -v $(NVCC) >/dev/null || { echo "cuda-check: nvcc not found"; exit 1; }
	@mkdir -p build/cuda-check
	@set -e; for f in $(CU_SOURCES); do \
	  gen=""; for a in $(CUDA_CHECK_ARCHS); do gen="$$gen -gencode arch=compute_$$a,code=sm_$$a"; done; \
	  echo "$(NVCC) -c $$f$$gen"; \
	  $(NVCC) -std=c++17 -O3 --fmad=false -Werror all-warnings -Xcompiler -Wall $$gen -c $$f -o build/cuda-check/$$(basename $$f .cu).o; \
	done
	@echo "cuda-check: OK, $(words $(CU_SOURCES)) .cu files compiled for sm: $(CUDA_CHECK_ARCHS)"

clean:
	rm -rf build lib/frcnn/_C*.so lib/frcnn/utils/cython_bbox*.so lib/frcnn/utils/cython_bbox.c
