#!/usr/bin/env bash
# Everything GPU-side in one command, for the first machine with an NVIDIA GPU (none was
# available while this was written; the CUDA kernels are otherwise tested on the CPU emulator,
# docs/CUDA_TESTING.md). Writes one markdown report; every step runs even if one fails.
#
#   scripts/gpu_check.sh [REPORT]            default: gpu_check_<host>_<UTC time>.md
#
# Steps: environment; FORCE_CUDA=1 build; the seeded CUDA == CPU tests (tests/test_cuda_emu.py
# with FRCNN_CUDA_TEST_DEVICE=cuda) and the op tests; compute-sanitizer memcheck + racecheck
# (+ synccheck) when installed; tools/bench_ops.py --device cuda (ours vs torchvision.ops when
# installed); tools/bench_proposals.py --device cuda for VGG16 and ZF; a short VGG16 alt-opt
# (stage 1 RPN ITERS iterations, the other stages a few) without and with --amp.
#
# Environment: PYTHON (python), ITERS (300), IMDB (voc_2007_trainval when data/VOCdevkit2007
# exists, else shapes_train), VGG16_WEIGHTS (data/imagenet_models/vgg16.pth when present, else
# random init), SKIP_TRAIN=1 / SKIP_BENCH=1 / SKIP_SANITIZER=1 to leave steps out,
# TORCH_CUDA_ARCH_LIST (the visible GPU's when unset).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python}
ITERS=${ITERS:-300}
REPORT=${1:-gpu_check_$(hostname -s)_$(date -u +%Y%m%dT%H%M%SZ).md}
case $REPORT in /*) ;; *) REPORT=$ROOT/$REPORT ;; esac
LOGDIR=${REPORT%.md}_logs
mkdir -p "$LOGDIR"
export PYTHONPATH=$ROOT/lib${PYTHONPATH:+:$PYTHONPATH}
SUMMARY=()
FAILED=0

# step NAME CMD...: runs CMD, tees its output into the report (last 200 lines) and a log file.
step() {
  local name=$1
  shift
  local log
  log=$LOGDIR/$(echo "$name" | tr -c 'A-Za-z0-9_.-' '_').log
  echo "=== $name: $*" >&2
  local t0=$SECONDS
  ("$@") >"$log" 2>&1
  local rc=$?
  local dt=$((SECONDS - t0))
  {
    echo
    echo "## $name"
    echo
    echo "\`$*\` -> exit $rc in ${dt}s (full log: $log)"
    echo
    echo '```'
    tail -n 200 "$log"
    echo '```'
  } >>"$REPORT"
  if [ $rc -eq 0 ]; then SUMMARY+=("| $name | ok | ${dt}s |"); else
    SUMMARY+=("| $name | FAILED (exit $rc) | ${dt}s |"); FAILED=$((FAILED + 1)); fi
  tail -n 3 "$log" >&2
  return 0
}

skip() { SUMMARY+=("| $1 | skipped: $2 | |"); echo "=== $1: skipped ($2)" >&2; }

{
  echo "# frcnn GPU check"
  echo
  echo "$(date -u) on $(hostname), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
    "$(git diff --quiet 2>/dev/null || echo '(with local changes)')"
} >"$REPORT"

# ---------------------------------------------------------------------------- environment
env_info() {
  nvidia-smi || echo "nvidia-smi not found"
  command -v nvcc && nvcc --version
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, \
'available', torch.cuda.is_available(), [torch.cuda.get_device_name(i) for i in \
range(torch.cuda.device_count())])"
  "$PYTHON" -c "import torchvision; print('torchvision', torchvision.__version__)" 2>/dev/null \
    || echo "torchvision not installed (bench_ops.py then times ours only)"
  command -v compute-sanitizer || echo "compute-sanitizer not found"
  uptime
}
step "environment" env_info

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no GPU visible to torch: nothing GPU-side can run" | tee -a "$REPORT" >&2
  exit 1
fi

# ----------------------------------------------------------------------------------- build
build_cuda() {
  FORCE_CUDA=1 make build PYTHON="$PYTHON" &&
    "$PYTHON" -m frcnn.env &&
    "$PYTHON" -c "import frcnn._C as c, sys; print('WITH_CUDA', c.WITH_CUDA); sys.exit(0 if c.WITH_CUDA else 1)"
}
step "build (FORCE_CUDA=1)" build_cuda

# ----------------------------------------------------------------------------------- tests
step "CUDA == CPU, seeded cases (tests/test_cuda_emu.py on the GPU)" \
  env FRCNN_CUDA_TEST_DEVICE=cuda "$PYTHON" -m pytest -q -rs tests/test_cuda_emu.py
step "op tests (tests/test_nms.py tests/test_roi_pool.py: their CUDA cases run here)" \
  "$PYTHON" -m pytest -q -rs tests/test_nms.py tests/test_roi_pool.py
[ -f tests/test_roi_align.py ] && step "roi_align tests" "$PYTHON" -m pytest -q -rs tests/test_roi_align.py

# ----------------------------------------------------------------------- compute-sanitizer
if [ "${SKIP_SANITIZER:-0}" = 1 ]; then
  skip "compute-sanitizer" "SKIP_SANITIZER=1"
elif ! command -v compute-sanitizer >/dev/null; then
  skip "compute-sanitizer" "not installed (part of the CUDA toolkit)"
else
  # No caching allocator: every tensor is its own allocation, so memcheck sees overruns
  # between tensors. A tenth of the random cases keeps the slow tools in minutes.
  san() {
    local tool=$1
    shift
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 FRCNN_CUDA_TEST_DEVICE=cuda FRCNN_CUDA_TEST_QUICK=1 \
      compute-sanitizer --tool "$tool" --error-exitcode 99 --print-limit 20 \
      "$PYTHON" -m pytest -q -x tests/test_cuda_emu.py "$@"
  }
  step "compute-sanitizer memcheck" san memcheck
  step "compute-sanitizer racecheck" san racecheck -k "nms"
  step "compute-sanitizer synccheck" san synccheck -k "nms"
fi

# -------------------------------------------------------------------------------- benches
if [ "${SKIP_BENCH:-0}" = 1 ]; then
  skip "benchmarks" "SKIP_BENCH=1"
else
  step "bench_ops --device cuda" "$PYTHON" tools/bench_ops.py --device cuda
  step "bench_proposals VGG16 --device cuda" "$PYTHON" tools/bench_proposals.py --net VGG16 \
    --device cuda --json "$LOGDIR/bench_proposals_vgg16.json"
  step "bench_proposals ZF --device cuda" "$PYTHON" tools/bench_proposals.py --net ZF \
    --device cuda --json "$LOGDIR/bench_proposals_zf.json"
fi

# ------------------------------------------------------------------------- training stage
if [ "${SKIP_TRAIN:-0}" = 1 ]; then
  skip "VGG16 alt-opt" "SKIP_TRAIN=1"
else
  if [ -n "${IMDB:-}" ]; then :; elif [ -d data/VOCdevkit2007 ]; then IMDB=voc_2007_trainval; else
    IMDB=shapes_train; fi
  WEIGHTS=${VGG16_WEIGHTS:-data/imagenet_models/vgg16.pth}
  WARGS=()
  [ -f "$WEIGHTS" ] && WARGS=(--weights "$WEIGHTS")
  # Stage 1 RPN runs ITERS iterations (the timed stage); the others a few, so the whole
  # pipeline (proposals, RoI pooling forward/backward under AMP) runs once on the GPU.
  alt_opt() {
    local tag=$1
    shift
    "$PYTHON" tools/train_faster_rcnn_alt_opt.py --net VGG16 "${WARGS[@]}" \
      --imdb "$IMDB" --cfg experiments/cfgs/faster_rcnn_alt_opt.yml --no-resume --device cuda \
      "$@" --set EXP_DIR "gpu_check_$tag" ALT_OPT.ITERS "($ITERS, 20, 20, 20)" \
      ALT_OPT.STEPSIZES "(100000, 100000, 100000, 100000)"
  }
  step "VGG16 alt-opt, stage 1 RPN $ITERS it, fp32 ($IMDB${WARGS[*]:+, ${WARGS[*]}})" alt_opt fp32
  step "VGG16 alt-opt, stage 1 RPN $ITERS it, --amp ($IMDB)" alt_opt amp --amp
fi

# -------------------------------------------------------------------------------- summary
{
  echo
  echo "## Summary"
  echo
  echo "| step | result | time |"
  echo "|---|---|---|"
  printf '%s\n' "${SUMMARY[@]}"
  echo
  echo "$FAILED step(s) failed. Logs: $LOGDIR"
} >>"$REPORT"
echo "report: $REPORT ($FAILED failed step(s))" >&2
[ "$FAILED" -eq 0 ]
