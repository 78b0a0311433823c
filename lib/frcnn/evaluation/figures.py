"""The report's matplotlib figures (Agg, via utils/plots): confusion matrix, PR curves of all
classes, P/R/F1 against the score threshold, the TIDE breakdown. Each takes plain numbers and
writes one PNG."""
import numpy as np

from frcnn.evaluation.tide import ERROR_NAMES, ERROR_TYPES
from frcnn.utils.plots import _plt, save_figure

TIDE_COLOURS = {"cls": "#d62728", "loc": "#ff7f0e", "both": "#8c564b", "dupe": "#9467bd",
                "bkg": "#7f7f7f", "missed": "#e6007e"}


def _cell_text(ax, values, fmt, vmax):
    for (i, j), v in np.ndenumerate(values):
        if v:
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=8,
                    color="white" if v > 0.55 * vmax else "black")


def plot_confusion(matrix, classes, score_thresh, path):
    """Counts and row-normalised confusion matrix side by side."""
    from frcnn.evaluation.confusion import normalise_rows

    plt = _plt()
    n = len(classes) + 1
    side = max(4.0, 0.55 * n + 2.0)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1, side), dpi=100)
    rows = list(classes) + ["background"]
    cols = list(classes) + ["missed"]
    for ax, values, fmt, title in ((axes[0], matrix, "{:d}", "counts"),
                                   (axes[1], normalise_rows(matrix), "{:.2f}",
                                    "each row / its sum")):
        vmax = max(float(values.max()), 1e-9)
        ax.imshow(values, cmap="Blues", vmin=0, vmax=vmax)
        _cell_text(ax, values, fmt, vmax)
        ax.set_xticks(range(n), cols, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), rows, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{title} (IoU > 0.5, score >= {score_thresh:.2f})", fontsize=9)
    return save_figure(fig, path)


def plot_pr_all(curves, path):
    """curves: {class: (recall [D], precision [D], AP)} -> all classes on one chart."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=100)
    for k, (cls, (rec, prec, ap)) in enumerate(curves.items()):
        if len(rec):
            ax.plot(np.r_[0, rec], np.r_[prec[:1], prec], color=f"C{k % 10}",
                    label=f"{cls} {ap:.3f}", lw=1.5)
    mean = np.nanmean([c[2] for c in curves.values()]) if curves else float("nan")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(f"precision-recall at IoU > 0.5 (area AP, mean {mean:.3f})", fontsize=10)
    if ax.get_legend_handles_labels()[0]:  # nothing drawn when there are no detections
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return save_figure(fig, path)


def plot_score_curves(curves, best, path):
    """curves: {class or 'all': (thresholds, P, R, F1)}; best: f1_thresholds()['overall']."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), dpi=100)
    for ax, i, name in zip(axes, (1, 2, 3), ("precision", "recall", "F1")):
        for k, (cls, c) in enumerate(curves.items()):
            if cls == "all" or not len(c[0]):
                continue
            ax.plot(c[0], c[i], color=f"C{k % 10}", lw=1, alpha=0.8, label=cls)
        t = curves["all"]
        if len(t[0]):
            ax.plot(t[0], t[i], color="black", lw=2.5, label="all classes")
        if best["threshold"] is not None:
            ax.axvline(best["threshold"], color="black", ls="--", lw=1)
        ax.set_xlabel("score threshold (keep score >= t)")
        ax.set_ylabel(name)
        ax.set_xlim(0, 1.0)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title(f"{name} against the score threshold", fontsize=10)
    if best["threshold"] is not None:
        axes[2].set_title(f"F1 against the score threshold (best {best['f1']:.3f} "
                          f"at {best['threshold']:.2f})", fontsize=10)
    if axes[2].get_legend_handles_labels()[0]:
        axes[2].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return save_figure(fig, path)


def plot_tide(breakdown, path):
    """Horizontal bars: AP points each error type costs, with the number of errors."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.4), dpi=100)
    kinds = list(ERROR_TYPES)[::-1]
    values = [breakdown["dAP"][k] for k in kinds]
    ax.barh(range(len(kinds)), values, color=[TIDE_COLOURS[k] for k in kinds])
    ax.set_yticks(range(len(kinds)), [ERROR_NAMES[k] for k in kinds])
    top = max(values + [1.0])
    for y, (k, v) in enumerate(zip(kinds, values)):
        ax.text(v + 0.01 * top, y, f"{v:.2f}  ({breakdown['count'][k]} errors)", va="center",
                fontsize=8)
    ax.set_xlim(0, top * 1.45)
    ax.set_xlabel("AP50 points gained if fixed by an oracle (dAP x 100)")
    ax.set_title(f"where the AP was lost (AP50 {100 * breakdown['ap']:.2f})", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)
