"""Faster R-CNN (Ren et al. 2015) in PyTorch, faithful to py-faster-rcnn.

`from frcnn import Detector` (frcnn.api) runs a trained model on images; importing frcnn alone
loads nothing heavy (torch is imported on first use of Detector).
"""

__version__ = "0.1.0"
__all__ = ["Detector", "Detections"]


def __getattr__(name):
    if name == "Detector":
        from frcnn.api import Detector

        return Detector
    if name == "Detections":
        from frcnn.detections import Detections

        return Detections
    raise AttributeError(f"module 'frcnn' has no attribute {name!r}")
