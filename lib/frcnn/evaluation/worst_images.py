"""The test images with the most errors at the drawing threshold, drawn in a grid.

Errors are the TIDE types (tide.py) of the detections with score >= the threshold, plus the
objects those detections miss. Ground truth is drawn dashed (green; a missed object in the
'missed' colour), predictions solid: blue when right, else in the colour of their error type.
"""
import numpy as np

from frcnn.evaluation.evalset import ClassDets, EvalSet
from frcnn.evaluation.figures import TIDE_COLOURS
from frcnn.evaluation.tide import classify_errors
from frcnn.utils.plots import _plt, _save

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


def _box(ax, box, colour, dashed, label):
    x1, y1, x2, y2 = (float(v) - 1 for v in box)  # 1-based -> pixel centres
    ax.add_patch(_plt().Rectangle((x1 - .5, y1 - .5), x2 - x1 + 1, y2 - y1 + 1, fill=False,
                                  ec=colour, lw=2, ls=(0, (4, 2)) if dashed else "-"))
    ax.text(x1, y2 + 1 if dashed else y1 - 1, label, fontsize=7, color="white",
            va="top" if dashed else "bottom", clip_on=True,
            bbox=dict(facecolor=colour, edgecolor="none", alpha=0.85, pad=1))


def plot_worst_images(evalset, per_image, worst, path, cols=4):
    """Grid of the `worst` images (worst_images()) with gt and predictions drawn."""
    import cv2

    plt = _plt()
    rows = max(1, -(-len(worst) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.9 * rows + 0.5), dpi=100,
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (im, count) in zip(axes.flat, worst):
        img = cv2.imread(evalset.image_paths.get(im, ""))
        if img is not None:
            ax.imshow(img[:, :, ::-1])
        gb, gl, gd = evalset.image_gts(im)
        missed = set(per_image[im]["missed"])
        for j in range(len(gb)):
            name = evalset.classes[gl[j]] + (" (difficult)" if gd[j] else "")
            if j in missed:
                _box(ax, gb[j], TIDE_COLOURS["missed"], True, f"missed {name}")
            else:
                _box(ax, gb[j], GT_COLOUR, True, f"gt {name}")
        for c, s, b, kind in per_image[im]["dets"]:
            colour = TP_COLOUR if kind == "tp" else TIDE_COLOURS[kind]
            _box(ax, b, colour, False, f"{c} {s:.2f}" + ("" if kind == "tp" else f" {kind.upper()}"))
        ax.set_title(f"{im}: {count} errors", fontsize=9)
    fig.suptitle("ground truth dashed (green; magenta if missed); predictions solid "
                 "(blue right, else coloured and labelled with the error type)", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path
