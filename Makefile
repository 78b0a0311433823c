# make            install missing requirements (never replaces torch), build the ops in place
# make test       build what the tests need (ops; the CUDA emulator when the toolkit's headers are
#                 there), run the tests     make bench        time the ops (tools/bench_ops.py)
# make cuda-check compile every .cu with nvcc alone (no GPU or CUDA torch needed)
# make cuda-emu   build frcnn._C_cuda_emu: the .cu kernels run on the CPU by csrc/emu (no GPU)
# make cuda-emu-sanitize  the emulated kernels under ASan and TSan, plus negative controls
# make clean      remove build products
PYTHON ?= python
NVCC ?= nvcc
# CUDA 13 dropped sm_70 (Volta); sm_75 is its oldest target. Override e.g. CUDA_CHECK_ARCHS="70 80 90".
CUDA_CHECK_ARCHS ?= $(shell $(NVCC) --list-gpu-arch 2>/dev/null | grep -q compute_70 && echo "70 80 90" || echo "75 80 90")
CU_SOURCES := $(wildcard csrc/cuda/*.cu)

.PHONY: all build deps test bench cuda-check cuda-emu cuda-emu-sanitize clean

all: deps build

deps:
	$(PYTHON) tools/install_missing.py requirements.txt

build:
	$(PYTHON) setup.py build_ext --inplace

# The emulated CUDA kernel tests need frcnn._C_cuda_emu: rebuilt when a kernel or the emulator
# changed, when the toolkit's headers are there; else one line says why those tests skip.
test: build
	@if [ -n "$(CUDA_INC)" ]; then $(MAKE) --no-print-directory $(EMU_SO); else \
	  echo "make test: no CUDA toolkit headers (cuda_fp16.h; set CUDA_HOME): the emulated CUDA kernel tests skip"; fi
	$(PYTHON) -m pytest -q tests

bench:
	$(PYTHON) tools/bench_ops.py

# torch's own nvcc flags (COMMON_NVCC_FLAGS: no implicit half conversions etc.), as setup.py's
# CUDAExtension passes them; a fallback list when torch cannot be imported.
TORCH_NVCC_FLAGS ?= $(shell $(PYTHON) -c "from torch.utils.cpp_extension import COMMON_NVCC_FLAGS as f; print(' '.join(f))" 2>/dev/null || echo -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__ --expt-relaxed-constexpr)
TORCH_INCLUDES ?= $(shell $(PYTHON) -c "from torch.utils.cpp_extension import include_paths as p; print(' '.join('-I' + d for d in p()))" 2>/dev/null)
GLUE_SOURCES := $(wildcard csrc/cuda/*.cpp)

cuda-check:
	@command -v $(NVCC) >/dev/null || { echo "cuda-check: nvcc not found"; exit 1; }
	@mkdir -p build/cuda-check
	@set -e; for f in $(CU_SOURCES); do \
	  gen=""; for a in $(CUDA_CHECK_ARCHS); do gen="$$gen -gencode arch=compute_$$a,code=sm_$$a"; done; \
	  echo "$(NVCC) -c $$f$$gen $(TORCH_NVCC_FLAGS)"; \
	  $(NVCC) -std=c++17 -O3 --fmad=false $(TORCH_NVCC_FLAGS) --resource-usage -Werror all-warnings -Xcompiler -Wall $$gen \
	    -c $$f -o build/cuda-check/$$(basename $$f .cu).o > build/cuda-check/$$(basename $$f .cu).usage 2>&1 \
	    || { cat build/cuda-check/$$(basename $$f .cu).usage; exit 1; }; \
	done
	@echo "cuda-check: OK, $(words $(CU_SOURCES)) .cu files compiled for sm: $(CUDA_CHECK_ARCHS)"
	@echo "cuda-check: registers / spills per kernel and architecture (nvcc --resource-usage):"
	@cat build/cuda-check/*.usage | $(PYTHON) scripts/cuda_usage.py
	@# CPU wheels ship c10/cuda's headers but not the generated cuda_cmake_macros.h: a stub
	@# (searched after torch's own include directories) stands in for it.
	@mkdir -p build/cuda-check/stub/c10/cuda/impl && \
	  echo '#define C10_CUDA_BUILD_SHARED_LIBS' > build/cuda-check/stub/c10/cuda/impl/cuda_cmake_macros.h
	@if [ -n "$(TORCH_INCLUDES)" ]; then set -e; for f in $(GLUE_SOURCES); do \
	  echo "syntax check $$f (torch headers, -DFRCNN_WITH_CUDA, torch's nvcc -D flags)"; \
	  $(CXX) -std=c++20 -fsyntax-only -Wall -Werror -DFRCNN_WITH_CUDA=1 $(filter -D%,$(TORCH_NVCC_FLAGS)) \
	    $(TORCH_INCLUDES) -I$(CUDA_INC) -Icsrc/cuda -idirafter build/cuda-check/stub $$f; done; \
	  echo "cuda-check: OK, $(words $(GLUE_SOURCES)) glue .cpp files syntax-checked"; \
	else echo "cuda-check: torch not importable, glue .cpp files not checked"; fi

# --- CUDA emulator (docs/CUDA_TESTING.md). Needs the toolkit's headers only.
CUDA_INC ?= $(shell for d in "$$CUDA_HOME" "$$(dirname "$$(dirname "$$(readlink -f "$$(command -v $(NVCC))")")")" /usr/local/cuda; do \
  [ -n "$$d" ] && [ -f "$$d/include/cuda_fp16.h" ] && { echo "$$d/include"; break; }; done)
EMU_CXX ?= g++
# torch's nvcc -D flags (no implicit half conversions), as the real build compiles the .cu files.
EMU_FLAGS := -std=c++20 -g -O1 -pthread -ffp-contract=off -fno-omit-frame-pointer \
  -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ \
  -D__CUDA_NO_HALF2_OPERATORS__ -Icsrc/emu -Icsrc/cuda -I$(CUDA_INC)
EMU_CU := $(CU_SOURCES) $(wildcard csrc/emu/*.cu)
EMU_DRIVER_SRC := csrc/emu/cuda_emu.cpp csrc/emu/emu_driver.cpp
# gcc's TSan needs the classic address-space layout (newer kernels randomise more bits).
NOASLR := $(shell setarch $$(uname -m) -R true 2>/dev/null && echo setarch $$(uname -m) -R)

EXT_SUFFIX := $(shell $(PYTHON) -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))" 2>/dev/null)
EMU_SO := lib/frcnn/_C_cuda_emu$(EXT_SUFFIX)

cuda-emu:
	@test -n "$(CUDA_INC)" || { echo "cuda-emu: no CUDA toolkit headers (set CUDA_HOME)"; exit 1; }
	CUDA_HOME=$(abspath $(CUDA_INC)/..) $(PYTHON) csrc/emu/build_emu.py

$(EMU_SO): $(EMU_CU) $(wildcard csrc/emu/*.h csrc/emu/*.cpp csrc/emu/*.py csrc/cuda/*.h csrc/cuda/*.cpp)
	CUDA_HOME=$(abspath $(CUDA_INC)/..) $(PYTHON) csrc/emu/build_emu.py

# build/emu/driver-<variant>: asan, tsan, tsan-nobarrier (a __syncthreads removed).
build/emu/driver-%: $(EMU_CU) $(EMU_DRIVER_SRC) csrc/emu/cuda_emu.h csrc/emu/emu_api.h csrc/emu/selftest.h csrc/cuda/kernels.h
	@test -n "$(CUDA_INC)" || { echo "cuda-emu: no CUDA toolkit headers (set CUDA_HOME)"; exit 1; }
	@mkdir -p build/emu/obj-$*
	@set -e; v=$*; san=-fsanitize=$${v%%-*}; [ "$$san" = -fsanitize=asan ] && san=-fsanitize=address; \
	  [ "$$san" = -fsanitize=tsan ] && san=-fsanitize=thread; \
	  extra=""; case $$v in *-nobarrier) extra=-DFRCNN_EMU_DROP_BARRIER;; esac; \
	  objs=""; for f in $(EMU_CU); do o=build/emu/obj-$$v/$$(basename $$f).o; \
	    $(EMU_CXX) $(EMU_FLAGS) $$san $$extra -include csrc/emu/cuda_emu.h -x c++ -c $$f -o $$o; objs="$$objs $$o"; done; \
	  for f in $(EMU_DRIVER_SRC); do o=build/emu/obj-$$v/$$(basename $$f).o; \
	    $(EMU_CXX) $(EMU_FLAGS) $$san -c $$f -o $$o; objs="$$objs $$o"; done; \
	  $(EMU_CXX) $$san -pthread $$objs -o $@; echo "built $@ ($$san $$extra)"

# Zero findings on the real kernels; the negative controls must be reported.
cuda-emu-sanitize: build/emu/driver-asan build/emu/driver-tsan build/emu/driver-tsan-nobarrier
	ASAN_OPTIONS=detect_leaks=1 build/emu/driver-asan --fibers
	ASAN_OPTIONS=detect_leaks=1 build/emu/driver-asan --threads --quick
	@echo "--- control: a batch index == B handed to the kernel must be an ASan heap-buffer-overflow"
	@if ASAN_OPTIONS=detect_leaks=0 build/emu/driver-asan --oob > build/emu/asan-control.log 2>&1; then \
	  echo "cuda-emu-sanitize: the out-of-bounds control was NOT reported by ASan"; exit 1; fi; \
	  grep -q "heap-buffer-overflow" build/emu/asan-control.log || { cat build/emu/asan-control.log; exit 1; }; \
	  grep -m1 "ERROR: AddressSanitizer" build/emu/asan-control.log
	TSAN_OPTIONS=halt_on_error=1 $(NOASLR) build/emu/driver-tsan --quick
	@echo "--- control: the NMS reduce kernel without its second __syncthreads must be a TSan data race"
	@if TSAN_OPTIONS=halt_on_error=1 $(NOASLR) build/emu/driver-tsan-nobarrier --quick > build/emu/tsan-control.log 2>&1; then \
	  echo "cuda-emu-sanitize: the missing barrier was NOT reported by TSan"; exit 1; fi; \
	  grep -q "WARNING: ThreadSanitizer: data race" build/emu/tsan-control.log || { cat build/emu/tsan-control.log; exit 1; }; \
	  grep -m1 -A3 "WARNING: ThreadSanitizer: data race" build/emu/tsan-control.log
	@echo "cuda-emu-sanitize: OK (ASan and TSan clean; both controls reported)"

clean:
	rm -rf build lib/frcnn/_C*.so lib/frcnn/utils/cython_bbox*.so lib/frcnn/utils/cython_bbox.c
