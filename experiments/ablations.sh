#!/bin/bash
# The paper's ablations (Table 2, Table 8 anchors, Table 9 lambda, alternating vs joint) on any
# data set; writes output/<EXP_DIR>/ablations.md with the paper's VOC 2007 numbers beside ours.
#
#   ./experiments/ablations.sh NET DATASET [--quick] [--families t2,t8,t9,joint] [--set KEY VALUE ...]
#   ./experiments/ablations.sh TINY shapes --quick      # CI-sized (tiny sets, a few dozen iterations)
#   nice ./experiments/ablations.sh ELITE0 cards        # the full run of docs/RESULTS.md
#
# NET, DATASET, DEVICE, WEIGHTS, CARDS_DIR as experiments/alt_opt.sh. Reruns skip finished models.
set -e -o pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  sed -n 2,10p "$0"; exit 2
fi
NET=$1; DATASET=$2; shift 2
QUICK=(); FAMS=(); SETS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=(--quick); shift ;;
    --families) FAMS=(--families "$2"); shift 2 ;;
    --set) shift; SETS=(--set "$@"); break ;;
    *) echo "unknown argument '$1'" >&2; exit 2 ;;
  esac
done
CFG_USER=${CFG:-}
source experiments/scripts/_datasets.sh end2end
CFG_E2E=$CFG
CFG=$CFG_USER
source experiments/scripts/_datasets.sh alt_opt
CFG_ALT=$CFG
for f in "$CFG_ALT" "$CFG_E2E"; do
  [ -f "$f" ] || { echo "config $f not found (needed for $NET on $DATASET)" >&2; exit 2; }
done
PYTHON=${PYTHON:-python}
DEVICE=${DEVICE:-cpu}
mkdir -p experiments/logs
LOG="experiments/logs/ablations_${NET}_$(echo "$DATASET" | tr -c 'A-Za-z0-9_\n' '_').txt.$(date +'%Y-%m-%d_%H-%M-%S')"
exec &> >(tee -a "$LOG")
echo "Logging output to $LOG"
set -x
exec "$PYTHON" experiments/ablations.py --net "$NET" --dataset "$DATASET" \
  --train-imdb "$TRAIN_IMDB" --test-imdb "$TEST_IMDB" --cfg-alt "$CFG_ALT" --cfg-e2e "$CFG_E2E" \
  ${WEIGHTS:+--weights "$WEIGHTS"} --device "$DEVICE" "${QUICK[@]}" "${FAMS[@]}" "${SETS[@]}"
