"""results.csv and training.png of every training run.

ResultsCSV writes <output_dir>/<prefix>_results.csv once per window (rank 0): iteration, the
window's mean of each loss (this process's; the printed line averages over processes), lr,
s/iter, and the val_* numbers of any PeriodicEval hook (--eval-every). A resumed run keeps the
rows up to its start. After training it draws <output_dir>/training.png from every
*_results.csv of the folder, one column per run in the order they were written, so the four
alt-opt stages share one figure.
"""
import csv
import glob
import math
import os
import time

from frcnn.engine.trainer import HookBase
from frcnn.utils import distributed as du


def read_csv(path):
    with open(path, newline="") as f:
        return [{k: float(v) if v not in ("", None) else math.nan for k, v in r.items()}
                for r in csv.DictReader(f)]


def write_csv(path, rows):
    names = list(dict.fromkeys(k for r in rows for k in r))
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=names, restval="")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in r.items()})
    os.replace(tmp, path)


class ResultsCSV(HookBase):
    def __init__(self, output_dir, prefix, lr_hook, plot=True):
        self.path = os.path.join(output_dir, f"{prefix}_results.csv")
        self.lr_hook, self.plot = lr_hook, plot
        self.rows = []

    def before_train(self):
        if du.get_rank() != 0:
            return
        start = self.trainer.start_iter
        if start > 0 and os.path.exists(self.path):  # resumed: keep what was before
            self.rows = [r for r in read_csv(self.path) if r["iteration"] <= start]
        self.t_window = time.perf_counter()

    def _evals(self):
        out = {}
        for h in self.trainer.hooks:
            for it, results in getattr(h, "history", ()):
                out.setdefault(it, {}).update({f"val_{k}": float(v) for k, v in results.items()})
        return out

    def after_step(self):
        t = self.trainer
        if du.get_rank() != 0 or not t.window_ends():
            return
        window = [d for _, d in t.window_floats()]
        now = time.perf_counter()
        row = {"iteration": t.iter}
        for k in ["total_loss"] + sorted(k for k in window[-1] if k != "total_loss"):
            row[k] = sum(d.get(k, 0.0) for d in window) / len(window)
        row.update(lr=float(self.lr_hook.lr), s_per_iter=(now - self.t_window) / len(window))
        self.t_window = now
        self.rows.append(row)
        self._write()

    def _write(self):
        evals = self._evals()
        for r in self.rows:
            r.update(evals.get(int(r["iteration"]), {}))
        write_csv(self.path, self.rows)

    def after_train(self):
        if du.get_rank() != 0:
            return
        if self.rows:
            self._write()
        if self.plot:
            try:
                plot_training(os.path.dirname(self.path))
            except ImportError as e:  # matplotlib missing: the csv is there
                print(f"no training.png: {e}")


def _run_name(path):
    return os.path.basename(path)[:-len("_results.csv")]


def plot_training(folder):
    """training.png of a folder from its *_results.csv files; -> path or None."""
    from frcnn.utils.plots import _plt, save_figure

    paths = sorted(glob.glob(os.path.join(folder, "*_results.csv")), key=os.path.getmtime)
    runs = [(p, read_csv(p)) for p in paths]
    runs = [(p, r) for p, r in runs if r]
    if not runs:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs) + 0.6, 3.6), dpi=100,
                             squeeze=False)
    for ax, (p, rows) in zip(axes[0], runs):
        it = [r["iteration"] for r in rows]
        losses = [k for k in rows[0] if k.endswith("loss")]
        for k, name in enumerate(losses):
            ax.plot(it, [r[name] for r in rows], lw=2.2 if name == "total_loss" else 1.2,
                    color="black" if name == "total_loss" else f"C{k}", label=name)
        vals = [k for k in rows[0] if k.startswith("val_")]
        if vals:
            ax2 = ax.twinx()
            for name in vals:
                pts = [(r["iteration"], r[name]) for r in rows if not math.isnan(r[name])]
                ax2.plot(*zip(*pts), "o--", color="C3", label=name) if pts else None
            ax2.set_ylabel("validation", color="C3")
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss (window mean)")
        ax.set_title(_run_name(p), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, os.path.join(folder, "training.png"))


def training_png(model_path):
    """training.png beside a model file (drawn from the csvs when missing); None if none."""
    if not model_path:
        return None
    folder = os.path.dirname(os.path.abspath(model_path))
    png = os.path.join(folder, "training.png")
    if os.path.exists(png):
        return png
    try:
        return plot_training(folder)
    except ImportError:
        return None


def training_times(folder):
    """{run name: seconds} from the s/iter column of each *_results.csv of a folder."""
    out = {}
    for p in sorted(glob.glob(os.path.join(folder, "*_results.csv")), key=os.path.getmtime):
        rows, prev, total = read_csv(p), 0.0, 0.0
        for r in rows:
            total += r["s_per_iter"] * (r["iteration"] - prev)
            prev = r["iteration"]
        out[_run_name(p)] = total
    return out
