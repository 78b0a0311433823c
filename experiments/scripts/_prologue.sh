# Sourced by faster_rcnn_alt_opt.sh and faster_rcnn_end2end.sh after `NET DATASET` are read:
# $1 = cfg flavour (alt_opt | end2end). Sets TRAIN_IMDB, TEST_IMDB, CFG, WEIGHTS (_datasets.sh),
# PYTHON, LAUNCH, DEVICE, LOG (output teed there), START, RESULT (a temporary folder); with no
# CFG for a folder data set, sizes the settings from the data, else checks both sets first.
FLAVOUR=$1
source experiments/scripts/_datasets.sh "$FLAVOUR"
PYTHON=${PYTHON:-python}
if [ -n "$GPUS" ] && [ -n "$CPUS" ]; then
  echo "--gpus and --cpus exclude each other" >&2; exit 2
fi
[ -z "$GPUS" ] || DEVICE=${DEVICE:-cuda}
DEVICE=${DEVICE:-cpu}

mkdir -p experiments/logs
LOG="experiments/logs/faster_rcnn_${FLAVOUR}_${NET}_$(echo "$DATASET" | tr -c 'A-Za-z0-9_\n' '_').txt.$(date +'%Y-%m-%d_%H-%M-%S')"
exec &> >(tee -a "$LOG")
echo "Logging output to $LOG"
START=$SECONDS
RESULT=$(mktemp -d)
trap 'rm -rf "$RESULT"' EXIT

if [ "$CFG" = auto ]; then
  # settings from the data (scale, anchors, iterations, ...), written next to the results
  set -x
  "$PYTHON" tools/auto_cfg.py --net "$NET" --imdb "$TRAIN_IMDB" --test-imdb "$TEST_IMDB" \
    --flavour "$FLAVOUR" --path-file "$RESULT/cfg" "${EXTRA_ARGS[@]}"
  set +x
  CFG=$(cat "$RESULT/cfg")
elif [ "$DATASET" = cards ] || [ "$CFG_DEFAULT" = auto ]; then
  "$PYTHON" tools/check_dataset.py --errors-only --cfg "$CFG" "$TRAIN_IMDB" "$TEST_IMDB" "${EXTRA_ARGS[@]}"
fi

# Processes (DDP under torchrun when more than one): GPUS=N (--gpus N) on cuda unless DEVICE
# says cpu; CPUS=N (--cpus N) on the CPU, gloo, 1 thread each; neither, on the CPU: the cfg's
# DIST.CPU_PROCESSES, at most one per core
PROCS=${GPUS:-$CPUS}
if [ -n "$CPUS" ]; then
  DEVICE=cpu
elif [ -z "$PROCS" ] && [ "$DEVICE" = cpu ]; then
  PROCS=$("$PYTHON" -c 'import sys; sys.path.insert(0, "lib")
from frcnn.config import cfg_from_file, get_default_cfg
print(int(cfg_from_file(sys.argv[1], get_default_cfg()).DIST.CPU_PROCESSES))' "$CFG")
  CORES=$(nproc 2>/dev/null || echo 1)
  [ "$PROCS" -le "$CORES" ] || PROCS=$CORES
fi
if [ -n "$PROCS" ] && [ "$PROCS" -gt 1 ]; then
  LAUNCH=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$PROCS")
  echo "$PROCS processes on $DEVICE (DistributedDataParallel)"
else
  LAUNCH=("$PYTHON")
fi

# SEED (alt_opt.sh --seed S): the training's seed, TRAIN_SEED_ARGS for the training tool; the
# run writes to <EXP_DIR>_seed<S> so runs of several seeds do not resume one another
TRAIN_SEED_ARGS=()
if [ -n "$SEED" ]; then
  TRAIN_SEED_ARGS=(--seed "$SEED")
  EXP_DIR=$("$PYTHON" -c 'import sys, yaml
print((yaml.safe_load(open(sys.argv[1])) or {}).get("EXP_DIR", "default"))' "$CFG")
  WITH_SEED=(); SET_SEEN=
  for a in "${EXTRA_ARGS[@]}"; do  # before the user's own --set pairs: an EXP_DIR there wins
    WITH_SEED+=("$a")
    if [ "$a" = --set ] && [ -z "$SET_SEEN" ]; then WITH_SEED+=(EXP_DIR "${EXP_DIR}_seed$SEED"); SET_SEEN=1; fi
  done
  [ -n "$SET_SEEN" ] || WITH_SEED+=(--set EXP_DIR "${EXP_DIR}_seed$SEED")
  EXTRA_ARGS=("${WITH_SEED[@]}")
fi
