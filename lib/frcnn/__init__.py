"""Faster R-CNN (Ren et al. 2015) in PyTorch, faithful to py-faster-rcnn."""

__version__ = "0.1.0"
