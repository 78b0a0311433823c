#!/bin/bash
# Usage: ./experiments/scripts/faster_rcnn_alt_opt.sh NET DATASET [--set KEY VALUE ...]
# Example: ./experiments/scripts/faster_rcnn_alt_opt.sh VGG16 pascal_voc --set EXP_DIR foobar
# Trains with tools/train_faster_rcnn_alt_opt.py, then tests the final model with tools/test_net.py.
set -e -o pipefail
cd "$(dirname "$0")/../.."
if [ $# -lt 2 ]; then
  sed -n 2,4p "$0"; exit 2
fi
NET=$1; DATASET=$2; shift 2
EXTRA_ARGS=("$@")
source experiments/scripts/_datasets.sh alt_opt
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
LOG="experiments/logs/faster_rcnn_alt_opt_${NET}_$(echo "$DATASET" | tr -c 'A-Za-z0-9_\n' '_').txt.$(date +'%Y-%m-%d_%H-%M-%S')"
exec &> >(tee -a "$LOG")
echo "Logging output to $LOG"
START=$SECONDS
RESULT=$(mktemp -d)
trap 'rm -rf "$RESULT"' EXIT

if [ "$CFG" = auto ]; then
  # settings from the data (scale, anchors, iterations, ...), written next to the results
  set -x
  "$PYTHON" tools/auto_cfg.py --net "$NET" --imdb "$TRAIN_IMDB" --test-imdb "$TEST_IMDB" \
    --flavour alt_opt --path-file "$RESULT/cfg" "${EXTRA_ARGS[@]}"
  set +x
  CFG=$(cat "$RESULT/cfg")
elif [ "$DATASET" = cards ] || [[ "$DATASET" == voc_folder:* || "$DATASET" == coco_json:* ]]; then
  "$PYTHON" tools/check_dataset.py --errors-only --cfg "$CFG" "$TRAIN_IMDB" "$TEST_IMDB" "${EXTRA_ARGS[@]}"
fi

set -x
"${LAUNCH[@]}" tools/train_faster_rcnn_alt_opt.py --net "$NET" ${WEIGHTS:+--weights "$WEIGHTS"} \
  --imdb "$TRAIN_IMDB" --cfg "$CFG" --device "$DEVICE" --final-file "$RESULT/final" "${EXTRA_ARGS[@]}"
set +x
NET_FINAL=$(cat "$RESULT/final")
TRAIN_S=$((SECONDS - START))

set -x
"${LAUNCH[@]}" tools/test_net.py --net "$NET" --model "$NET_FINAL" --imdb "$TEST_IMDB" --cfg "$CFG" \
  --device "$DEVICE" --map-file "$RESULT/map" "${EXTRA_ARGS[@]}"
set +x
MAP=$(cat "$RESULT/map")
echo "alt-opt $NET $DATASET: mAP $MAP on $TEST_IMDB (train ${TRAIN_S}s, total $((SECONDS - START))s)"
echo "model: $NET_FINAL  log: $LOG"
