"""The test images with the most errors at the drawing threshold, drawn in a grid.

Errors are the TIDE types (tide.py) of the detections with score >= the threshold, plus the
objects those detections miss. Ground truth is drawn dashed (green; a missed object in the
'missed' colour), predictions solid: blue when right, else in the colour of their error type.
"""
import os

import numpy as np

from frcnn.evaluation.evalset import ClassDets, EvalSet
from frcnn.evaluation.figures import TIDE_COLOURS
from frcnn.evaluation.tide import classify_errors

GT_COLOUR, TP_COLOUR = "#2ca02c", "#1f5fff"


def above(evalset, score_thresh):
    """The same set with only the detections of score >= score_thresh."""
    dets = {}
    for c, d in evalset.dets.items():
        keep = d.conf >= score_thresh
        dets[c] = ClassDets([i for i, k in zip(d.image_ids, keep) if k], d.conf[keep],
                            d.boxes[keep])
    return EvalSet(evalset.classes, evalset.image_ids, evalset.gts, dets, evalset.image_paths)


def image_errors(evalset, score_thresh):
    """{image: {'dets': [(class, score, box, type or 'tp')], 'missed': [gt index]}} for the
    detections with score >= score_thresh (difficult matches are left out)."""
    es = above(evalset, score_thresh)
    errors = classify_errors(es)
    kinds = {(c, d): k for c, d, k, _ in errors["fp"]}
    out = {im: {"dets": [], "missed": []} for im in es.image_ids}
    for c in es.classes:
        tp, fp, _ = es.match(c)
        d = es.dets[c]
        for i in range(len(d)):
            if tp[i] or fp[i]:
                out[d.image_ids[i]]["dets"].append(
                    (c, d.conf[i], d.boxes[i], "tp" if tp[i] else kinds[(c, i)]))
    for im, j in errors["missed"]:
        out[im]["missed"].append(j)
    return out


def worst_images(per_image, n=8):
    """-> [(image, number of errors)] of the n images with the most errors (ties: name)."""
    counts = [(im, sum(k != "tp" for *_, k in v["dets"]) + len(v["missed"]))
              for im, v in per_image.items()]
    counts = [c for c in counts if c[1] > 0]
    counts.sort(key=lambda c: (-c[1], str(c[0])))
    return counts[:n]


TILE_AREA, TITLE_H, LEGEND_H = 480 * 400, 26, 34
FONT = 0.45


def _bgr(hex_colour):
    h = hex_colour.lstrip("#")
    return tuple(int(h[i:i + 2], 16) for i in (4, 2, 0))


def _label(canvas, text, x, y, colour, below=False):
    """White text on a filled box of `colour`, its corner at (x, y), kept inside the canvas."""
    import cv2

    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, FONT, 1)
    x = int(min(max(x, 0), canvas.shape[1] - tw - 2))
    y = int(y + th + base + 2 if below else y)
    y = int(min(max(y, th + base + 2), canvas.shape[0]))
    cv2.rectangle(canvas, (x, y - th - base - 2), (x + tw + 2, y), colour, -1)
    cv2.putText(canvas, text, (x + 1, y - base - 1), cv2.FONT_HERSHEY_SIMPLEX, FONT,
                (255, 255, 255), 1, cv2.LINE_AA)


def _rect(canvas, p1, p2, colour, dashed):
    import cv2

    if not dashed:
        cv2.rectangle(canvas, p1, p2, colour, 2)
        return
    (x1, y1), (x2, y2) = p1, p2
    for a, b in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)),
                 ((x1, y2), (x1, y1))):
        n = max(1, int(np.hypot(b[0] - a[0], b[1] - a[1]) // 6))
        for k in range(0, n, 2):  # 6 px on, 6 px off
            s, e = k / n, min(k + 1, n) / n
            cv2.line(canvas, (int(a[0] + (b[0] - a[0]) * s), int(a[1] + (b[1] - a[1]) * s)),
                     (int(a[0] + (b[0] - a[0]) * e), int(a[1] + (b[1] - a[1]) * e)), colour, 2)


def _tile_size(images):
    """(width, height) of the tiles: TILE_AREA pixels at the images' median aspect ratio."""
    aspects = [im.shape[1] / im.shape[0] for im in images if im is not None] or [4 / 3]
    a = float(np.clip(np.median(aspects), 0.5, 2.0))
    return int(round((TILE_AREA * a) ** 0.5)), int(round((TILE_AREA / a) ** 0.5))


# above this many gt boxes only the errors and missed objects are labelled: in a crowded image
# the labels of the right predictions and found objects would cover the errors
CROWDED = 12


def _tile(evalset, per_image, im, count, img, size):
    """One image scaled into `size` (w, h) with its gt (dashed) and predictions (solid):
    right predictions labelled above their box, wrong ones inside it (an error on a found
    object does not hide the right label), gt below; crowded images: errors labelled only."""
    import cv2

    tile_w, tile_h = size
    tile = np.full((tile_h + TITLE_H, tile_w, 3), 255, np.uint8)
    scale = 1.0
    if img is not None:
        scale = min(tile_w / img.shape[1], tile_h / img.shape[0], 3.0)
        img = cv2.resize(img, (int(img.shape[1] * scale), int(img.shape[0] * scale)))
        tile[TITLE_H:TITLE_H + img.shape[0], :img.shape[1]] = img
    gb, gl, gd = evalset.image_gts(im)
    crowded = len(gb) > CROWDED
    title = (f"{im}: {count} error" + ("s" if count != 1 else "")
             + (f" of {len(gb)} objects (errors labelled)" if crowded else ""))
    cv2.putText(tile, title, (4, TITLE_H - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1,
                cv2.LINE_AA)
    xy = lambda b: ((int((b[0] - 1) * scale), int((b[1] - 1) * scale) + TITLE_H),  # noqa: E731
                    (int(b[2] * scale), int(b[3] * scale) + TITLE_H))
    missed = set(per_image[im]["missed"])
    for j in range(len(gb)):
        colour = _bgr(TIDE_COLOURS["missed"] if j in missed else GT_COLOUR)
        p1, p2 = xy(gb[j])
        _rect(tile, p1, p2, colour, True)
        name = evalset.classes[gl[j]] + (" (difficult)" if gd[j] else "")
        if j in missed or not crowded:
            _label(tile, ("missed " if j in missed else "gt ") + name, p1[0], p2[1], colour, True)
    for c, s, b, kind in sorted(per_image[im]["dets"], key=lambda d: d[3] != "tp"):  # errors on top
        colour = _bgr(TP_COLOUR if kind == "tp" else TIDE_COLOURS[kind])
        p1, p2 = xy(b)
        _rect(tile, p1, p2, colour, False)
        if kind != "tp" or not crowded:
            _label(tile, f"{c} {s:.2f}" + ("" if kind == "tp" else f" {kind.upper()}"), p1[0],
                   p1[1], colour, below=kind != "tp")
    return tile


def _legend(width):
    import cv2

    bar = np.full((LEGEND_H, width, 3), 255, np.uint8)
    items = [("ground truth (dashed)", GT_COLOUR), ("missed object (dashed)",
                                                     TIDE_COLOURS["missed"]),
             ("right prediction (solid)", TP_COLOUR)]
    items += [(f"{k.upper()} error", TIDE_COLOURS[k]) for k in ("cls", "loc", "both", "dupe",
                                                                 "bkg")]
    x = 6
    for text, colour in items:
        _label(bar, text, x, 8, _bgr(colour), below=True)
        x += cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, FONT, 1)[0][0] + 14
    return bar


def plot_worst_images(evalset, per_image, worst, path, cols=4):
    """Grid of the `worst` images (worst_images()) with gt and predictions drawn (cv2: a few
    ms, where matplotlib took seconds)."""
    import cv2

    images = [cv2.imread(evalset.image_paths.get(im, "")) for im, _ in worst]
    size = _tile_size(images)
    tiles = [_tile(evalset, per_image, im, n, img, size) for (im, n), img in zip(worst, images)]
    cols = min(cols, len(tiles))
    blank = np.full_like(tiles[0], 255)
    tiles += [blank] * (-len(tiles) % cols)
    rows = [np.hstack(tiles[i:i + cols]) for i in range(0, len(tiles), cols)]
    grid = np.vstack([_legend(rows[0].shape[1])] + rows)
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    cv2.imwrite(path, grid)
    return path
