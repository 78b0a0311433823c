#!/bin/bash
# Download PASCAL VOC 2007 (trainval + test + devkit) and link it as data/VOCdevkit2007.
# Needs internet; not run by the tests.  Usage: ./data/scripts/fetch_voc.sh [DEST]
# DEST (default data/downloads) receives the tars and the extracted VOCdevkit/.
# VOC 2012 for pascal_voc_0712: set WITH_2012=1.
set -e
cd "$(dirname "$0")/../.."
DEST=${1:-data/downloads}
mkdir -p "$DEST"
BASE=${VOC_MIRROR:-http://host.robots.ox.ac.uk/pascal/VOC}
fetch() {  # url
  local f="$DEST/$(basename "$1")"
  if [ -f "$f" ]; then echo "have $f"; else
    echo "downloading $1"; curl -fL --retry 3 -o "$f.part" "$1" && mv "$f.part" "$f"; fi
  tar -xf "$f" -C "$DEST"
}
fetch "$BASE/voc2007/VOCtrainval_06-Nov-2007.tar"
fetch "$BASE/voc2007/VOCtest_06-Nov-2007.tar"
fetch "$BASE/voc2007/VOCdevkit_08-Jun-2007.tar"
if [ "${WITH_2012:-0}" = 1 ]; then
  fetch "$BASE/voc2012/VOCtrainval_11-May-2012.tar"
fi
ln -sfn "$(cd "$DEST/VOCdevkit" && pwd)" data/VOCdevkit2007
if [ "${WITH_2012:-0}" = 1 ]; then ln -sfn "$(cd "$DEST/VOCdevkit" && pwd)" data/VOCdevkit2012; fi
echo "data/VOCdevkit2007 -> $(readlink data/VOCdevkit2007)"
ls data/VOCdevkit2007
