# DATASET + NET -> TRAIN_IMDB, TEST_IMDB, CFG_DEFAULT, WEIGHTS_DEFAULT.
# $1 = cfg flavour (alt_opt | end2end); sourced by _prologue.sh and ablations.sh.
FLAVOUR=$1
case "$DATASET" in
  pascal_voc)
    TRAIN_IMDB=voc_2007_trainval; TEST_IMDB=voc_2007_test
    CFG_DEFAULT=experiments/cfgs/faster_rcnn_${FLAVOUR}.yml ;;
  pascal_voc_0712)
    TRAIN_IMDB=voc_0712_trainval; TEST_IMDB=voc_2007_test
    CFG_DEFAULT=experiments/cfgs/faster_rcnn_${FLAVOUR}.yml ;;
  coco)
    TRAIN_IMDB=coco_2014_train; TEST_IMDB=coco_2014_minival
    CFG_DEFAULT=experiments/cfgs/faster_rcnn_${FLAVOUR}.yml ;;
  shapes)
    TRAIN_IMDB=shapes_train; TEST_IMDB=shapes_test
    CFG_DEFAULT=experiments/cfgs/shapes_${FLAVOUR}.yml ;;
  shapes_crowded)
    # synthetic crowded scenes (30-60 shapes of 12-40 px per image), sized like a folder
    TRAIN_IMDB=shapes_crowded_train; TEST_IMDB=shapes_crowded_test
    CFG_DEFAULT=auto ;;
  cards)
    # the shared cards folder, beside the repository unless CARDS_DIR says otherwise
    CARDS_DIR=${CARDS_DIR:-../shared/data/cards_voc/VOCcards}
    if [ ! -d "$CARDS_DIR" ]; then
      echo "cards data set not found at $CARDS_DIR: set CARDS_DIR to the VOCcards folder" >&2; exit 2
    fi
    TRAIN_IMDB=voc_folder:$CARDS_DIR:trainval; TEST_IMDB=voc_folder:$CARDS_DIR:test
    CFG_DEFAULT=experiments/cfgs/cards_${FLAVOUR}.yml ;;
  voc_folder:*)
    # your own folder: settings sized from the data (tools/auto_cfg.py) unless CFG is given
    FOLDER=${DATASET#voc_folder:}
    TRAIN_IMDB=voc_folder:$FOLDER:trainval; TEST_IMDB=voc_folder:$FOLDER:test
    CFG_DEFAULT=auto ;;
  coco_json:*:*)
    # TRAIN_SPEC[+TEST_SPEC] as coco_json:<annotations.json>:<image_dir>; one spec = split rule
    SPEC=${DATASET}
    case "$SPEC" in
      *+coco_json:*) TRAIN_IMDB=${SPEC%%+coco_json:*}; TEST_IMDB=coco_json:${SPEC#*+coco_json:} ;;
      *) TRAIN_IMDB=$SPEC:trainval; TEST_IMDB=$SPEC:test ;;
    esac
    CFG_DEFAULT=auto ;;
  coco_json:*)
    # coco_json:<folder or json>: a COCO export read as a labelled folder
    TRAIN_IMDB=$DATASET:trainval; TEST_IMDB=$DATASET:test
    CFG_DEFAULT=auto ;;
  yolo:*|labelme:*|cvat:*|labelimg:*)
    # a labelled folder in a named format: its own split (or 80/20 by name hash), auto settings
    TRAIN_IMDB=$DATASET:trainval; TEST_IMDB=$DATASET:test
    CFG_DEFAULT=auto ;;
  *)
    if [ -e "$DATASET" ]; then
      # a plain path: the format is detected from what the folder holds (docs/DATA.md)
      TRAIN_IMDB=$DATASET:trainval; TEST_IMDB=$DATASET:test
      CFG_DEFAULT=auto
    else
      echo "unknown DATASET '$DATASET': pascal_voc, pascal_voc_0712, coco, shapes, shapes_crowded, cards, the path of a labelled folder (VOC, labelImg, YOLO, LabelMe, CVAT, COCO), yolo:|labelme:|cvat:|labelimg:<path>, voc_folder:<path> or coco_json:<json>:<images>" >&2
      exit 2
    fi ;;
esac
# a net-specific small-data cfg wins when present (e.g. cards_alt_opt_elite0.yml)
NET_LC=$(echo "$NET" | tr '[:upper:]' '[:lower:]')
NET_CFG=${CFG_DEFAULT%.yml}_${NET_LC}.yml
if [ "$CFG_DEFAULT" != auto ] && [ -f "$NET_CFG" ]; then CFG_DEFAULT=$NET_CFG; fi
CFG=${CFG:-$CFG_DEFAULT}

case "$NET" in
  VGG16) for f in data/imagenet_models/vgg16-397923af.pth data/imagenet_models/VGG16.v2.caffemodel; do
           [ -f "$f" ] && WEIGHTS_DEFAULT=$f && break; done ;;
  ZF)    [ -f data/imagenet_models/ZF.v2.caffemodel ] && WEIGHTS_DEFAULT=data/imagenet_models/ZF.v2.caffemodel ;;
  TINY|ELITE0) ;;  # TINY trains from scratch; ELITE0 loads its bundled ImageNet weights
  *) echo "unknown NET '$NET': VGG16, ZF, TINY or ELITE0" >&2; exit 2 ;;
esac
WEIGHTS=${WEIGHTS:-$WEIGHTS_DEFAULT}
if [ -z "$WEIGHTS" ] && { [ "$NET" = VGG16 ] || [ "$NET" = ZF ]; }; then
  echo "no ImageNet weights for $NET in data/imagenet_models/: run data/scripts/fetch_imagenet_models.sh" \
       "or set WEIGHTS=/path/to/file (training from random init would not reach the paper's mAP)" >&2
  exit 2
fi
