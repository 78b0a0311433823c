#!/bin/bash
# Train Faster R-CNN by 4-step alternating optimisation, then test it.
#
#   ./experiments/alt_opt.sh                      # TINY on the synthetic shapes set, CPU, no download
#   ./experiments/alt_opt.sh NET DATASET [--gpus N | --cpus N] [--seed S] [--set KEY VALUE ...]
#
# NET: VGG16, ZF, TINY, ELITE0.  DATASET: pascal_voc, pascal_voc_0712, coco, shapes, shapes_crowded, cards,
# voc_folder:<path>, coco_json:<json>:<images>[+coco_json:<test json>:<images>].
# voc_folder / coco_json without CFG: settings sized from the data (tools/auto_cfg.py, written
# to output/auto_alt_opt/<imdb>/cfg.yml); both sets are checked first (tools/check_dataset.py).
# Env: DEVICE (cpu|cuda), WEIGHTS (ImageNet weights file), CFG (yml), CARDS_DIR (the cards VOC
# folder), SEED (= --seed S: the training's seed, default the cfg's RNG_SEED; results go to
# output/<EXP_DIR>_seed<S>/).  Logs go to experiments/logs/.
# --gpus N: N processes with torchrun + DDP (nccl; DEVICE defaults to cuda; DEVICE=cpu uses gloo),
# N x the batch, lr x N (DIST.LR_SCALING, see docs/MULTI_GPU.md).
# --cpus N: N CPU processes (gloo, 1 thread each), the same DDP; on the CPU the default is the
# cfg's DIST.CPU_PROCESSES (2 for shapes, whose DIST.SCHEDULE_SCALING linear keeps the images
# seen: 2 x 1 thread trains TINY ~1.6x faster than 1 x 2 threads; 1 for cards).
set -e
cd "$(dirname "$0")/.."
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --gpus) [ $# -ge 2 ] || { echo "--gpus needs a number" >&2; exit 2; }
            export GPUS=$2; shift 2 ;;
    --gpus=*) export GPUS=${1#--gpus=}; shift ;;
    --cpus) [ $# -ge 2 ] || { echo "--cpus needs a number" >&2; exit 2; }
            export CPUS=$2; shift 2 ;;
    --cpus=*) export CPUS=${1#--cpus=}; shift ;;
    --seed) [ $# -ge 2 ] || { echo "--seed needs a number" >&2; exit 2; }
            export SEED=$2; shift 2 ;;
    --set) ARGS+=("$@"); break ;;  # the rest are KEY VALUE pairs
    *) ARGS+=("$1"); shift ;;
  esac
done
set -- "${ARGS[@]}"
for n in "$GPUS" "$CPUS"; do
  if [ -n "$n" ] && ! [ "$n" -ge 1 ] 2>/dev/null; then
    echo "--gpus / --cpus take a positive number, got '$n'" >&2; exit 2
  fi
done
if [ $# -eq 0 ] || [ "$1" = --set ]; then
  set -- TINY shapes "$@"
fi
exec ./experiments/scripts/faster_rcnn_alt_opt.sh "$@"
