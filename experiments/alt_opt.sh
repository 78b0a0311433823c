#!/bin/bash
# Train Faster R-CNN by 4-step alternating optimisation, then test it.
#
#   ./experiments/alt_opt.sh                      # TINY on the synthetic shapes set, CPU, no download
#   ./experiments/alt_opt.sh NET DATASET [--set KEY VALUE ...]
#
# NET: VGG16, ZF, TINY, ELITE0.  DATASET: pascal_voc, pascal_voc_0712, coco, shapes, cards,
# voc_folder:<path>.  Env: DEVICE (cpu|cuda), WEIGHTS (ImageNet weights file), CFG (yml),
# CARDS_DIR (the cards VOC folder).  Logs go to experiments/logs/.
set -e
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
  set -- TINY shapes
fi
exec ./experiments/scripts/faster_rcnn_alt_opt.sh "$@"
