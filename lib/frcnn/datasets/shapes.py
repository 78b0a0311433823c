"""shapes_<split>: a synthetic VOC-format set (circles, squares, triangles) generated from a seed.

Each image is a function of (SHAPES.SEED, split, image number) only, so train images do not change
when NUM_TEST changes. Generated once into DATA_DIR/shapes/<tag>/ (tag from all parameters); a
process builds in a private temp dir and renames it into place, so concurrent first uses are safe.
"""
import copy
import hashlib
import json
import os
import shutil
import tempfile

import cv2
import numpy as np

from .pascal_voc import VOCStyle

SHAPE_CLASSES = ("__background__", "circle", "square", "triangle")
GEN_VERSION = 1
SPLITS = {"train": 0, "test": 1}


def _params(cfg):
    s = cfg.SHAPES
    return {"version": GEN_VERSION, "seed": int(s.SEED), "num_train": int(s.NUM_TRAIN),
            "num_test": int(s.NUM_TEST), "image_min": int(s.IMAGE_MIN), "image_max": int(s.IMAGE_MAX),
            "shape_min": int(s.SHAPE_MIN), "shape_max": int(s.SHAPE_MAX),
            "max_objects": int(s.MAX_OBJECTS), "min_visible": float(s.MIN_VISIBLE),
            "min_contrast": float(s.MIN_CONTRAST),
            # only when not 1, so the folders (and images) of the earlier sets keep their tags
            **({"min_objects": int(s.MIN_OBJECTS)} if int(s.MIN_OBJECTS) != 1 else {})}


def shapes_dir(cfg):
    p = _params(cfg)
    h = hashlib.sha1(json.dumps(p, sort_keys=True).encode()).hexdigest()[:8]
    return os.path.join(cfg.DATA_DIR, "shapes", f"VOCshapes_seed{p['seed']}_{h}")


def _background(rng, w, h):
    base = rng.uniform(30, 225, size=3)
    g = int(rng.integers(3, 9))
    low = base + rng.uniform(-50, 50, size=(g, g, 3))
    im = cv2.resize(low.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    # fine texture: random stripes + pixel noise
    for _ in range(int(rng.integers(0, 4))):
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        col = tuple(float(c) for c in base + rng.uniform(-40, 40, size=3))
        cv2.line(im, p1, p2, col, int(rng.integers(1, 4)))
    return im


def _shape_mask(rng, cls, w, h, cx, cy, shape_hw):
    """Filled mask of class `cls` with extent ~w x h centred at (cx, cy)."""
    mask = np.zeros(shape_hw, np.uint8)
    if cls == 1:
        cv2.ellipse(mask, (int(round(cx)), int(round(cy))), (int(w / 2), int(h / 2)), 0, 0, 360,
                    255, -1)
        return mask
    if cls == 2:
        pts = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    else:
        apex = -1 if rng.random() < 0.5 else 1
        pts = np.array([[0, apex * h / 2], [-w / 2, -apex * h / 2], [w / 2, -apex * h / 2]])
    t = np.deg2rad(rng.uniform(-20, 20))
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    pts = pts @ rot.T + [cx, cy]
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255)
    return mask


def generate_image(seed, split_id, i, p):
    """(BGR uint8 image, [(cls, x1, y1, x2, y2) 0-based inclusive]) for image i of a split."""
    rng = np.random.default_rng([seed, split_id, i])
    w, h = (int(v) for v in rng.integers(p["image_min"], p["image_max"] + 1, size=2))
    im = _background(rng, w, h)
    n = int(rng.integers(p.get("min_objects", 1), p["max_objects"] + 1))
    # small shapes (the crowded variant) may be smaller than 100 px of area
    min_area = min(100, 0.4 * p["shape_min"] ** 2)
    objs = []  # (cls, full mask, full area, colour)
    visible, n_visible = [], []  # per object: visible-pixel mask and its count
    for _ in range(n):
        for _try in range(30):
            cls = int(rng.integers(1, len(SHAPE_CLASSES)))
            s = rng.uniform(p["shape_min"], min(p["shape_max"], 0.8 * min(w, h)))
            a = np.exp(rng.uniform(np.log(0.7), np.log(1.0 / 0.7)))
            sw, sh = s * np.sqrt(a), s / np.sqrt(a)
            r = 0.5 * np.hypot(sw, sh) + 2  # fits inside at any rotation
            if 2 * r >= min(w, h):
                continue
            cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
            mask = _shape_mask(rng, cls, sw, sh, cx, cy, (h, w)) > 0
            area = int(mask.sum())
            if area < min_area:
                continue
            ys, xs = np.nonzero(mask)
            win = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
            hidden = [int((v[win] & mask[win]).sum()) for v in visible]  # only inside the box
            if any(c - d < p["min_visible"] * o[2] for c, d, o in zip(n_visible, hidden, objs)):
                continue
            region = im[mask].mean(axis=0)
            for _c in range(20):
                colour = rng.uniform(0, 255, size=3)
                if np.linalg.norm(colour - region) > p["min_contrast"]:
                    break
            objs.append((cls, mask, area, colour))
            for v in visible:
                v[win] &= ~mask[win]
            n_visible = [c - d for c, d in zip(n_visible, hidden)] + [area]
            visible.append(mask.copy())
            k = rng.uniform(-0.15, 0.15)  # mild left-right shading
            im[ys, xs] = colour[None, :] * (1.0 + k * (2.0 * xs / w - 1.0))[:, None]
            break
    im += rng.normal(0, 6, size=im.shape).astype(np.float32)
    im = np.clip(im, 0, 255).astype(np.uint8)
    boxes = []
    for (cls, _, _, _), v in zip(objs, visible):
        ys, xs = np.nonzero(v)
        boxes.append((cls, int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())))
    return im, boxes


def _xml(filename, w, h, boxes):
    objs = "".join(
        f"  <object>\n    <name>{SHAPE_CLASSES[c]}</name>\n    <pose>Unspecified</pose>\n"
        f"    <truncated>0</truncated>\n    <difficult>0</difficult>\n    <bndbox>\n"
        f"      <xmin>{x1 + 1}</xmin>\n      <ymin>{y1 + 1}</ymin>\n      <xmax>{x2 + 1}</xmax>\n"
        f"      <ymax>{y2 + 1}</ymax>\n    </bndbox>\n  </object>\n"
        for c, x1, y1, x2, y2 in boxes)
    return (f"<annotation>\n  <folder>VOCshapes</folder>\n  <filename>{filename}</filename>\n"
            f"  <size>\n    <width>{w}</width>\n    <height>{h}</height>\n    <depth>3</depth>\n"
            f"  </size>\n  <segmented>0</segmented>\n{objs}</annotation>\n")


def _write(root, p):
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for split, sid in SPLITS.items():
        ids = []
        for i in range(p[f"num_{split}"]):
            index = f"{split}_{i:06d}"
            im, boxes = generate_image(p["seed"], sid, i, p)
            ok, buf = cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, 92])
            assert ok
            with open(os.path.join(root, "JPEGImages", index + ".jpg"), "wb") as f:
                f.write(buf.tobytes())
            with open(os.path.join(root, "Annotations", index + ".xml"), "w") as f:
                f.write(_xml(index + ".jpg", im.shape[1], im.shape[0], boxes))
            ids.append(index)
        with open(os.path.join(root, "ImageSets", "Main", split + ".txt"), "w") as f:
            f.write("\n".join(ids) + "\n")
    with open(os.path.join(root, "params.json"), "w") as f:
        json.dump(p, f, indent=1, sort_keys=True)


def ensure_shapes(cfg):
    """Generate the set for cfg.SHAPES if missing; returns its folder."""
    final = shapes_dir(cfg)
    if os.path.isdir(final):
        return final
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp_")
    try:
        _write(tmp, _params(cfg))
        try:
            os.rename(tmp, final)
        except OSError:
            if not os.path.isdir(final):  # not a lost race: a real error
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return final


# shapes_crowded_<split>: crowded scenes of small objects (30-60 shapes of 12-40 px per image),
# the cfg's other SHAPES keys (image sizes, counts, seed) as given
VARIANTS = {"": {}, "crowded": {"MIN_OBJECTS": 30, "MAX_OBJECTS": 60, "SHAPE_MIN": 12,
                                "SHAPE_MAX": 40}}


class shapes(VOCStyle):
    """shapes_train / shapes_test, shapes_crowded_train / shapes_crowded_test."""

    def __init__(self, image_set, cfg, variant=""):
        if image_set not in SPLITS:
            raise ValueError(f"shapes split must be one of {sorted(SPLITS)}, got {image_set!r}")
        if variant not in VARIANTS:
            raise ValueError(f"shapes variant must be one of {sorted(VARIANTS)}, got {variant!r}")
        gen_cfg = copy.deepcopy(cfg)
        gen_cfg.SHAPES.update(VARIANTS[variant])
        path = ensure_shapes(gen_cfg)
        name = "_".join(["shapes"] + ([variant] if variant else []) + [image_set])
        super().__init__(name, cfg, [path], image_set, SHAPE_CLASSES, use_07_metric=True)
        self.path = path
