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
source experiments/scripts/_prologue.sh alt_opt

set -x
"${LAUNCH[@]}" tools/train_faster_rcnn_alt_opt.py --net "$NET" ${WEIGHTS:+--weights "$WEIGHTS"} \
  --imdb "$TRAIN_IMDB" --cfg "$CFG" "${TRAIN_SEED_ARGS[@]}" \
  --device "$DEVICE" --final-file "$RESULT/final" "${EXTRA_ARGS[@]}"
set +x
NET_FINAL=$(cat "$RESULT/final")
TRAIN_S=$((SECONDS - START))

set -x
"${LAUNCH[@]}" tools/test_net.py --net "$NET" --model "$NET_FINAL" --imdb "$TEST_IMDB" --cfg "$CFG" \
  --device "$DEVICE" --map-file "$RESULT/map" "${EXTRA_ARGS[@]}"
set +x
{ read -r MAP; read -r MAP_AREA; } < "$RESULT/map"
echo "alt-opt $NET $DATASET: mAP $MAP, AP@0.5 area under the curve $MAP_AREA, on $TEST_IMDB (train ${TRAIN_S}s, total $((SECONDS - START))s)"
echo "model: $NET_FINAL  log: $LOG"
# test_net's folder: <OUTPUT_DIR>/<EXP_DIR>/<test imdb>/<model name>/, beside the training's
REPORT=$(ls -t "$(dirname "$(dirname "$NET_FINAL")")"/*/"$(basename "$NET_FINAL" .pth)"/report.html \
  2>/dev/null | head -1 || true)
echo "report: ${REPORT:-none (no matplotlib / pycocotools?)} (open it in a browser)"
