# Sourced by faster_rcnn_alt_opt.sh and faster_rcnn_end2end.sh after `NET DATASET` are read:
# $1 = cfg flavour (alt_opt | end2end). Sets TRAIN_IMDB, TEST_IMDB, CFG, WEIGHTS (_datasets.sh),
# PYTHON, LAUNCH, DEVICE, LOG (output teed there), START, RESULT (a temporary folder); with no
# CFG for a folder data set, sizes the settings from the data, else checks both sets first.
FLAVOUR=$1
source experiments/scripts/_datasets.sh "$FLAVOUR"
PYTHON=${PYTHON:-python}
# GPUS=N (alt_opt.sh --gpus N): N processes under torchrun (DDP), on cuda unless DEVICE says cpu
if [ -n "$GPUS" ] && [ "$GPUS" -gt 1 ]; then
  DEVICE=${DEVICE:-cuda}
  LAUNCH=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$GPUS")
else
  LAUNCH=("$PYTHON")
fi
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
elif [ "$DATASET" = cards ] || [[ "$DATASET" == voc_folder:* || "$DATASET" == coco_json:* ]]; then
  "$PYTHON" tools/check_dataset.py --errors-only --cfg "$CFG" "$TRAIN_IMDB" "$TEST_IMDB" "${EXTRA_ARGS[@]}"
fi
