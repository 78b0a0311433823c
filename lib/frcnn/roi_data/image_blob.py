"""Images of roidb entries and their blobs: read (mirrored when flipped), scaled, padded; the gt
boxes an entry trains on. (RoI sampling runs on-device: roi_data/proposal_target.py.)"""
import numpy as np

from frcnn.datasets.imdb import read_image
from frcnn.utils.blob import im_list_to_blob, prep_im_for_blob

__all__ = ["get_image_blob", "load_roidb_image", "gt_mask"]


def load_roidb_image(entry):
    """BGR uint8 [H, W, 3] of a roidb entry, mirrored when entry['flipped']."""
    im = read_image(entry["image"])
    if entry.get("flipped", False):
        im = im[:, ::-1, :]
    return im


def get_image_blob(ims, scales, cfg, max_size=None):
    """ims: list of BGR uint8 [H, W, 3]; scales: short-side target per image (same length), or
    several targets for a single image (a pyramid). max_size: default TRAIN.MAX_SIZE.

    -> (blob [B, H, W, 3] float32, im_scales list of float).
    """
    max_size = cfg.TRAIN.MAX_SIZE if max_size is None else max_size
    if len(ims) == 1 and len(scales) > 1:
        ims = list(ims) * len(scales)
    if len(ims) != len(scales):
        raise ValueError(f"get_image_blob: {len(ims)} images but {len(scales)} scales")
    processed, im_scales = [], []
    for im, target in zip(ims, scales):
        im, s = prep_im_for_blob(im, cfg.PIXEL_MEANS, target, max_size)
        processed.append(im)
        im_scales.append(s)
    return im_list_to_blob(processed), im_scales


def gt_mask(entry):
    """Rows of entry['boxes'] that are training gt: a class, and not crowd (overlap -1)."""
    gc = entry["gt_classes"]
    ov = entry.get("max_overlaps")
    if ov is None:
        go = entry["gt_overlaps"]
        ov = go.max(axis=1) if go.size else np.zeros(len(gc), np.float32)
    return (gc > 0) & (ov > 0)
