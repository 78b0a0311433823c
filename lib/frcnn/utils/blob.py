"""Image blobs as py-faster-rcnn builds them (cv2 BGR, minus PIXEL_MEANS, resized, zero-padded)."""
import cv2
import numpy as np


def prep_im_for_blob(im, pixel_means, target_size, max_size):
    """Mean-subtract and resize so the short side is target_size and the long side <= max_size.

    im: [H, W, 3] uint8 BGR -> ([h, w, 3] float32, scale float).
    """
    im = im.astype(np.float32, copy=True)
    im -= np.asarray(pixel_means, dtype=np.float32).reshape(1, 1, 3)
    size_min = min(im.shape[0:2])
    size_max = max(im.shape[0:2])
    im_scale = float(target_size) / float(size_min)
    # Prevent the biggest axis from being more than max_size
    if np.round(im_scale * size_max) > max_size:
        im_scale = float(max_size) / float(size_max)
    im = cv2.resize(im, None, None, fx=im_scale, fy=im_scale, interpolation=cv2.INTER_LINEAR)
    return im, im_scale


def im_list_to_blob(ims):
    """list of [h_i, w_i, 3] float32 -> [B, max h, max w, 3] float32, zero-padded bottom/right."""
    max_shape = np.array([im.shape for im in ims]).max(axis=0)
    blob = np.zeros((len(ims), max_shape[0], max_shape[1], 3), dtype=np.float32)
    for i, im in enumerate(ims):
        blob[i, 0:im.shape[0], 0:im.shape[1], :] = im
    return blob
