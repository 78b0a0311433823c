"""Compiled detection ops (torch.ops.frcnn.*) and their Python API.

nms, roi_pool / RoIPool, roi_align / RoIAlign need `make` (frcnn._C); calling them without it
raises RuntimeError("frcnn ops are not built: run make"). box_iou is plain torch.
Oracles for tests live in frcnn.ops.reference.
"""
from ._ext import LOADED as _LOADED  # noqa: F401
from .boxes import box_iou
from .nms import nms
from .roi_align import RoIAlign, roi_align
from .roi_pool import RoIPool, roi_pool

__all__ = ["nms", "roi_pool", "RoIPool", "roi_align", "RoIAlign", "box_iou"]
