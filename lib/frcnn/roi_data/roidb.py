"""Training roidb: derived fields, horizontal flips, proposal merging, filtering, bbox stats.

Entry keys: 'image' (path), 'index' (image id), 'width', 'height', 'flipped',
'boxes' [G, 4] float32 (x1, y1, x2, y2), 0-based original-image pixels, gt rows first,
'gt_classes' [G] int32 (0 for proposals), 'gt_overlaps' [G, K] float32 (-1 rows: crowd),
'max_overlaps' [G] float32, 'max_classes' [G] int64.
"""
import os

import numpy as np

from frcnn.datasets.imdb import DatasetError, image_size


def _bbox_overlaps(a, b):
    from frcnn.utils.cython_bbox import bbox_overlaps

    return bbox_overlaps(np.ascontiguousarray(a, dtype=np.float64),
                         np.ascontiguousarray(b, dtype=np.float64))


def _bbox_transform(ex, gt):
    """[N, 4] numpy -> [N, 4] (dx, dy, dw, dh) float64, +1 pixel convention."""
    import torch

    from frcnn.utils.bbox_transform import bbox_transform

    return bbox_transform(torch.from_numpy(np.asarray(ex, np.float64)),
                          torch.from_numpy(np.asarray(gt, np.float64))).numpy()


def _set_max(entry):
    go = entry["gt_overlaps"]
    if go.shape[0] == 0:
        entry["max_overlaps"] = np.zeros(0, np.float32)
        entry["max_classes"] = np.zeros(0, np.int64)
        return
    entry["max_overlaps"] = go.max(axis=1).astype(np.float32)
    entry["max_classes"] = go.argmax(axis=1)
    # sanity, as the reference: bg rows have class 0, fg rows a real class
    assert np.all(entry["max_classes"][entry["max_overlaps"] == 0] == 0)
    assert np.all(entry["max_classes"][entry["max_overlaps"] > 0] != 0)


def prepare_roidb(imdb_or_roidb):
    """Add 'image', 'width', 'height', 'max_overlaps', 'max_classes' in place; returns the roidb.

    Takes an imdb (its .roidb) or a list of entries."""
    roidb = imdb_or_roidb.roidb if hasattr(imdb_or_roidb, "roidb") else imdb_or_roidb
    for e in roidb:
        if "image" not in e:
            e["image"] = imdb_or_roidb.image_path_from_index(e["index"])
        if "width" not in e or "height" not in e:
            e["width"], e["height"] = image_size(e["image"])
        _set_max(e)
    return roidb


def flipped_entry(entry):
    """A mirrored copy: x1' = W - x2 - 1, x2' = W - x1 - 1."""
    e = dict(entry)
    b = entry["boxes"].copy()
    w = entry["width"]
    b[:, 0] = w - entry["boxes"][:, 2] - 1
    b[:, 2] = w - entry["boxes"][:, 0] - 1
    if not np.all(b[:, 2] >= b[:, 0]):
        raise DatasetError(f"{entry.get('image')}: a box is wider than the image {w} px after "
                           "flipping; check its annotation")
    e["boxes"] = b
    e["flipped"] = not entry.get("flipped", False)
    return e


def append_flipped(roidb):
    """roidb + mirrored copies of every entry (same order)."""
    return list(roidb) + [flipped_entry(e) for e in roidb]


def keep_empty_images(imdb, cfg):
    """TRAIN.KEEP_EMPTY_IMAGES, 'auto' resolved by the data set (imdb.keep_empty_images)."""
    keep = cfg.TRAIN.KEEP_EMPTY_IMAGES
    return bool(getattr(imdb, "keep_empty_images", False)) if keep == "auto" else bool(keep)


def get_training_roidb(imdb, cfg):
    """The imdb's gt roidb (difficult objects dropped), plus flips when TRAIN.USE_FLIPPED,
    prepared. The imdb's own roidb is not modified. Entries without objects are marked
    'background_image' when they are to be kept (keep_empty_images): filter_roidb keeps them."""
    roidb = [dict(e) for e in imdb.roidb]
    if keep_empty_images(imdb, cfg):
        for e in roidb:
            if not np.any(np.asarray(e["gt_classes"]) > 0):
                e["background_image"] = True
    if cfg.TRAIN.USE_FLIPPED:
        print("Appending horizontally-flipped training examples...")
        roidb = append_flipped(roidb)
    prepare_roidb(roidb)
    print(f"Preparing training data... done ({len(roidb)} entries)")
    return roidb


def filter_roidb(roidb, cfg):
    """Drop entries with no RoI usable as fg (overlap >= FG_THRESH) or bg ([BG_LO, BG_HI)),
    except the background images get_training_roidb marked (negatives only)."""
    def is_valid(e):
        if e.get("background_image"):
            return True
        if "max_overlaps" not in e:
            _set_max(e)
        ov = e["max_overlaps"]
        fg = np.any(ov >= cfg.TRAIN.FG_THRESH)
        bg = np.any((ov < cfg.TRAIN.BG_THRESH_HI) & (ov >= cfg.TRAIN.BG_THRESH_LO))
        return bool(fg or bg)
    out = [e for e in roidb if is_valid(e)]
    print(f"Filtered {len(roidb) - len(out)} roidb entries: {len(roidb)} -> {len(out)}")
    if not out:
        raise DatasetError("no training images left after filtering: every image lacks a usable "
                           "object; check the annotations (all difficult, crowd or empty?)")
    return out


def _as_box_array(b, where):
    b = np.asarray(b, dtype=np.float32)
    if b.size == 0:
        return np.zeros((0, 4), np.float32)
    if b.ndim != 2 or b.shape[1] < 4:
        raise ValueError(f"proposals for {where}: expected [P, 4] (or [P, 5] with scores), got "
                         f"shape {b.shape}")
    return np.ascontiguousarray(b[:, :4])


def merge_proposals(roidb, proposals_per_image):
    """gt + proposals per entry (gt rows first, proposals with class 0 and their best gt IoU).

    proposals_per_image: list of [P, 4] (or [P, 5]) arrays in original-image coordinates, one
    per unflipped entry in roidb order; or a dict {image index: array}; or a pickle path of
    either. Flipped entries get the mirrored proposals of their image. Proposals already merged
    are replaced. Returns a new list.
    """
    if isinstance(proposals_per_image, (str, os.PathLike)):
        from frcnn.safe_io import load_pickle

        proposals_per_image = load_pickle(proposals_per_image, "proposals file")
    if isinstance(proposals_per_image, dict):
        by_index = proposals_per_image
    else:
        unflipped = [e for e in roidb if not e.get("flipped", False)]
        if len(proposals_per_image) != len(unflipped):
            raise ValueError(f"{len(proposals_per_image)} proposal arrays for "
                             f"{len(unflipped)} images; generate proposals for this image set")
        by_index = {e["index"]: p for e, p in zip(unflipped, proposals_per_image)}
    out = []
    for e in roidb:
        if e["index"] not in by_index:
            raise ValueError(f"no proposals for image {e['index']}")
        props = _as_box_array(by_index[e["index"]], e["index"])
        if e.get("flipped", False) and len(props):
            p = props.copy()
            p[:, 0] = e["width"] - props[:, 2] - 1
            p[:, 2] = e["width"] - props[:, 0] - 1
            props = p
        keep = e["gt_classes"] > 0
        gt_boxes = e["boxes"][keep]
        gt_classes = e["gt_classes"][keep]
        gt_ov = e["gt_overlaps"][keep]
        k = gt_ov.shape[1]
        p_ov = np.zeros((len(props), k), np.float32)
        real = gt_ov.max(axis=1) > 0 if len(gt_ov) else np.zeros(0, bool)  # crowd excluded
        if len(props) and real.any():
            ov = _bbox_overlaps(props, gt_boxes[real])
            arg, mx = ov.argmax(axis=1), ov.max(axis=1)
            pos = np.where(mx > 0)[0]
            p_ov[pos, gt_classes[real][arg[pos]]] = mx[pos]
        n = dict(e)
        n["boxes"] = np.vstack((gt_boxes, props)).astype(np.float32)
        n["gt_classes"] = np.hstack((gt_classes, np.zeros(len(props), np.int32))).astype(np.int32)
        n["gt_overlaps"] = np.vstack((gt_ov, p_ov)).astype(np.float32)
        if "seg_areas" in e:
            n["seg_areas"] = np.hstack((e["seg_areas"][keep], np.zeros(len(props), np.float32)))
        _set_max(n)
        out.append(n)
    return out


# -- external proposals (Selective Search, EdgeBoxes, any pickle) -------------------------------
def unique_boxes(boxes, scale=1.0):
    """Sorted indices of the first occurrence of each distinct box (coordinates rounded after
    x scale), as the reference's ds_utils.unique_boxes. boxes [P, 4] -> [U] int64."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    hashes = np.round(boxes * scale).dot(np.array([1, 1e3, 1e6, 1e9]))
    _, index = np.unique(hashes, return_index=True)
    return np.sort(index)


def filter_small_boxes(boxes, min_size):
    """Indices of boxes with x2 - x1 >= min_size and y2 - y1 > min_size: the reference's
    ds_utils test as it is (asymmetric, no +1). boxes [P, 4] -> [K] int64."""
    boxes = np.asarray(boxes).reshape(-1, 4)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return np.where((w >= min_size) & (h > min_size))[0]


def clean_proposals(boxes, min_size):
    """The reference's handling of loaded external proposals: duplicates dropped, then boxes
    smaller than min_size; order kept. [P, 4 or 5] -> [K, 4] float32."""
    b = _as_box_array(boxes, "an image")
    b = b[unique_boxes(b)]
    return np.ascontiguousarray(b[filter_small_boxes(b, min_size)])


def load_proposals(src, num_images, min_size=2, clean=True, imdb=None):
    """External proposals for an image set: a pickle path (or the loaded list) of per-image
    [P, 4] boxes (optionally [P, 5] with scores), 0-based original-image pixels, imdb order.

    -> list of num_images [K, 4] float32 arrays; with `clean` each is passed through
    clean_proposals (dedup, min size) as the reference does for Selective Search boxes.
    RPN proposals between alt-opt stages are merged without cleaning (as the reference).
    imdb: when given, boxes reaching outside their image are an error (a file made for another
    image set, e.g. other SHAPES settings, would otherwise train or test on wrong boxes).
    """
    where = src if isinstance(src, (str, os.PathLike)) else "the proposal list"
    if isinstance(src, (str, os.PathLike)):
        if not os.path.exists(src):
            raise FileNotFoundError(f"proposal file {src} not found: make it with "
                                    "tools/selective_search.py or tools/rpn_generate.py")
        from frcnn.safe_io import load_pickle

        src = load_pickle(src, "proposals file")
    if isinstance(src, dict) and "boxes" in src:  # {'boxes': [...], 'scores': [...], ...}
        src = src["boxes"]
    if isinstance(src, dict):
        raise ValueError(f"{where}: expected a list of per-image arrays (imdb order) or a dict "
                         f"with 'boxes', got a dict of {sorted(map(str, src))[:4]}")
    if len(src) < num_images:
        raise ValueError(f"{where} has {len(src)} entries for {num_images} images: generate "
                         "proposals for this image set")
    out = []
    for i in range(num_images):
        b = src[i]
        out.append(clean_proposals(b, min_size) if clean else _as_box_array(b, f"image {i}"))
        if imdb is not None and len(out[-1]):
            w, h = image_size(imdb.image_path_at(i))
            x2, y2 = float(out[-1][:, 2].max()), float(out[-1][:, 3].max())
            if x2 > w or y2 > h:  # 1 px of slack over the last pixel (w - 1, h - 1)
                raise DatasetError(
                    f"{where}: image {i} ({imdb.image_index[i]}, {w}x{h} px) has a proposal "
                    f"reaching x {x2:.0f}, y {y2:.0f}: the file was made for another image set; "
                    f"make it again for {imdb.name} with the same --cfg/--set")
    return out


def fast_rcnn_roidb(imdb, cfg, proposals):
    """Training roidb of Fast R-CNN on given proposals (TRAIN.HAS_RPN False; alt-opt stage 1 on
    RPN boxes, or Selective Search boxes): gt rows first, proposals with their best-gt overlap,
    flips with mirrored proposals (TRAIN.USE_FLIPPED), filtered. proposals: list (imdb order)."""
    roidb = merge_proposals(get_training_roidb(imdb, cfg), proposals)
    return filter_roidb(roidb, cfg)


def _compute_targets(rois, overlaps, labels, cfg):
    """[R, 5] (class, dx, dy, dw, dh) for rois with overlap >= BBOX_THRESH, against their best gt."""
    targets = np.zeros((rois.shape[0], 5), dtype=np.float64)
    gt_inds = np.where(overlaps == 1)[0]
    if len(gt_inds) == 0:
        return targets
    ex_inds = np.where(overlaps >= cfg.TRAIN.BBOX_THRESH)[0]
    ex_gt = _bbox_overlaps(rois[ex_inds], rois[gt_inds])
    gt_assignment = ex_gt.argmax(axis=1)
    targets[ex_inds, 0] = labels[ex_inds]
    targets[ex_inds, 1:] = _bbox_transform(rois[ex_inds], rois[gt_inds[gt_assignment]])
    return targets


def add_bbox_regression_stats(roidb, num_classes, cfg):
    """Per-class mean/std of the regression targets -> (means [K, 4], stds [K, 4]) float64,
    K = num_classes including background.

    Empirical over every RoI (gt + proposals) with max overlap >= TRAIN.BBOX_THRESH, as the
    reference. With TRAIN.BBOX_NORMALIZE_TARGETS_PRECOMPUTED: the cfg MEANS/STDS tiled. With
    BBOX_NORMALIZE_TARGETS off: zeros/ones (no normalisation). Classes with no RoI (background
    included) get the cfg MEANS/STDS instead of the reference's 0/0, so nothing divides by 0.
    """
    means_cfg = np.tile(np.asarray(cfg.TRAIN.BBOX_NORMALIZE_MEANS, np.float64), (num_classes, 1))
    stds_cfg = np.tile(np.asarray(cfg.TRAIN.BBOX_NORMALIZE_STDS, np.float64), (num_classes, 1))
    if not cfg.TRAIN.BBOX_NORMALIZE_TARGETS:
        return np.zeros((num_classes, 4)), np.ones((num_classes, 4))
    if cfg.TRAIN.BBOX_NORMALIZE_TARGETS_PRECOMPUTED:
        return means_cfg, stds_cfg
    counts = np.zeros((num_classes, 1)) + cfg.EPS
    sums = np.zeros((num_classes, 4))
    squared = np.zeros((num_classes, 4))
    for e in roidb:
        if "max_overlaps" not in e:
            _set_max(e)
        t = _compute_targets(np.asarray(e["boxes"], np.float64), e["max_overlaps"],
                             e["max_classes"], cfg)
        for c in range(1, num_classes):
            inds = np.where(t[:, 0] == c)[0]
            if inds.size:
                counts[c] += inds.size
                sums[c] += t[inds, 1:].sum(axis=0)
                squared[c] += (t[inds, 1:] ** 2).sum(axis=0)
    means = sums / counts
    stds = np.sqrt(np.maximum(squared / counts - means ** 2, 0.0))
    empty = counts[:, 0] < 1
    means[empty] = means_cfg[empty]
    stds[empty] = stds_cfg[empty]
    # a class whose targets are all identical (e.g. only gt RoIs) has std 0: keep it finite
    zero = stds <= 0
    stds[zero] = stds_cfg[zero]
    return means, stds
