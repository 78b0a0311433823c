#!/bin/bash
# Usage: ./experiments/scripts/faster_rcnn_end2end.sh NET DATASET [--seed S] [--set KEY VALUE ...]
# Example: ./experiments/scripts/faster_rcnn_end2end.sh VGG16 pascal_voc --set EXP_DIR foobar
# Approximate joint training with tools/train_net.py (END2END.MAX_ITERS, or ITERS=N), then test_net.
# --seed S as in alt_opt.sh (the training's seed; results go to output/<EXP_DIR>_seed<S>/).
set -e -o pipefail
cd "$(dirname "$0")/../.."
if [ $# -lt 2 ]; then
  sed -n 2,5p "$0"; exit 2
fi
NET=$1; DATASET=$2; shift 2
if [ "$1" = --seed ]; then
  [ $# -ge 2 ] || { echo "--seed needs a number" >&2; exit 2; }
  export SEED=$2; shift 2
fi
EXTRA_ARGS=("$@")
source experiments/scripts/_prologue.sh end2end

set -x
"${LAUNCH[@]}" tools/train_net.py --net "$NET" ${WEIGHTS:+--weights "$WEIGHTS"} --imdb "$TRAIN_IMDB" \
  --cfg "$CFG" "${TRAIN_SEED_ARGS[@]}" \
  --device "$DEVICE" ${ITERS:+--iters "$ITERS"} --final-file "$RESULT/final" "${EXTRA_ARGS[@]}"
set +x
NET_FINAL=$(cat "$RESULT/final")

set -x
"${LAUNCH[@]}" tools/test_net.py --net "$NET" --model "$NET_FINAL" --imdb "$TEST_IMDB" --cfg "$CFG" \
  --device "$DEVICE" --map-file "$RESULT/map" "${EXTRA_ARGS[@]}"
set +x
{ read -r MAP; read -r MAP_AREA; } < "$RESULT/map"
echo "end2end $NET $DATASET: mAP $MAP, AP@0.5 area under the curve $MAP_AREA, on $TEST_IMDB (total $((SECONDS - START))s)"
echo "model: $NET_FINAL  log: $LOG"
# test_net's folder: <OUTPUT_DIR>/<EXP_DIR>/<test imdb>/<model name>/, beside the training's
REPORT=$(ls -t "$(dirname "$(dirname "$NET_FINAL")")"/*/"$(basename "$NET_FINAL" .pth)"/report.html \
  2>/dev/null | head -1 || true)
echo "report: ${REPORT:-none (no matplotlib / pycocotools?)} (open it in a browser)"
