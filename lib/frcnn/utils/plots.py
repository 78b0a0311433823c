"""Matplotlib figures of the evaluation tools (Agg backend: no display needed).

matplotlib is imported lazily so the library works without it; the error names the fix.
"""
import os


def _plt():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("matplotlib is needed for the PNG plots: pip install matplotlib "
                          "(it is in requirements.txt; `make deps` installs it)") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_recall_curves(curves, path, title="Proposal recall vs IoU"):
    """curves: list of (source label, N, thresholds [T], recalls [T]) -> PNG at `path`.

    One colour per N, one line style per source (the paper's Fig. 4 layout).
    """
    plt = _plt()
    ns = sorted({c[1] for c in curves})
    sources = list(dict.fromkeys(c[0] for c in curves))
    styles = ["-", "--", ":", "-."]
    cmap = plt.get_cmap("viridis")
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    for src, n, th, rec in curves:
        k = ns.index(n)
        ax.plot(th, rec, linestyle=styles[sources.index(src) % len(styles)],
                color=cmap(k / max(1, len(ns) - 1) * 0.85), marker="o", markersize=3,
                label=f"{src}, {n}")
    ax.legend(fontsize=7, loc="lower left", handlelength=3)
    ax.set_xlabel("IoU")
    ax.set_ylabel("recall")
    ax.set_xlim(0.5, 1.0)
    ax.set_ylim(0, 1.0)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    return save_figure(fig, path)


def plot_pr_curve(rec, prec, ap, cls, path):
    """Precision/recall curve of one class (rec, prec from voc_eval) -> PNG at `path`."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4), dpi=100)
    ax.plot(rec, prec, "-", color="C0")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(f"{cls}: AP {ap:.3f}")
    return save_figure(fig, path)


def save_figure(fig, path):
    """Lay out, write (making the folder) and close `fig`; -> path."""
    fig.tight_layout()
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    fig.savefig(path)
    _plt().close(fig)
    return path
