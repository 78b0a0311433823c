"""report.html: one self-contained page (PNGs inlined as data: URIs, no script, no link out)
with the run's settings, the data, timings, the metric tables and every figure, each with one
sentence on how to read it."""
import base64
import html
import json
import os

from frcnn.evaluation.tide import ERROR_NAMES

# the page's figures, in its order (training.png sits beside the model, the rest in the folder)
FIGURES = ("training.png", "pr_curves.png", "score_curves.png", "confusion_matrix.png",
           "tide.png", "worst_images.png")

READ = {
    "training.png": "Training losses (window means) of each stage against the iteration; they "
                    "should fall and flatten; red dots are validation numbers when --eval-every "
                    "was on.",
    "pr_curves.png": "Precision against recall for each class at IoU > 0.5; a curve that stays "
                     "high further right is a better class; the legend gives its area AP.",
    "score_curves.png": "Precision, recall and F1 when only detections scoring at least the "
                        "threshold are kept; the dashed line is the F1-best threshold, used as "
                        "the default drawing threshold.",
    "confusion_matrix.png": "Rows are the true class, columns the prediction, at IoU > 0.5 and "
                            "the F1-best threshold; the last row counts detections of nothing, "
                            "the last column objects nobody found.",
    "tide.png": "How many AP50 points each error type costs (TIDE, Bolya et al. 2020): fix that "
                "type alone with an oracle and see how much the AP rises.",
    "worst_images.png": "The test images with the most errors at the F1-best threshold: ground "
                        "truth dashed, predictions solid, each wrong prediction labelled with "
                        "its error type.",
}
CSS = ("body{font-family:sans-serif;max-width:1300px;margin:1em auto;padding:0 1em;color:#222}"
       "table{border-collapse:collapse;margin:.5em 0;font-size:13px}"
       "td,th{border:1px solid #ccc;padding:2px 7px;text-align:right}"
       "th:first-child,td:first-child,table.kv td{text-align:left}tr.mean{font-weight:bold}"
       "img{max-width:100%;border:1px solid #ddd}p.read{color:#555;margin:.2em 0 1.2em}"
       "pre{background:#f6f6f6;padding:.5em;font-size:12px;overflow:auto}"
       ".big{font-size:20px}")


def _img(path):
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    name = html.escape(os.path.basename(path))
    return (f'<h3>{name}</h3><img alt="{name}" src="data:image/png;base64,{data}">'
            f'<p class="read">{html.escape(READ.get(os.path.basename(path), ""))}</p>')


def _num(v, fmt="{:.4f}"):
    return "-" if v is None or v != v else fmt.format(v)


def _table(head, rows, mean_last=True, css=None):
    out = [(f'<table class="{css}">' if css else "<table>") + "<tr>"
           + "".join(f"<th>{html.escape(str(h))}</th>" for h in head) + "</tr>"]
    for i, r in enumerate(rows):
        cls = ' class="mean"' if mean_last and i == len(rows) - 1 else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>")
    return "".join(out) + "</table>"


def _metric_rows(m):
    coco_keys = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")
    head = (["class", "VOC07 AP", "AP50 area", "AP75 area", "objects"]
            + [f"COCO {k}" for k in coco_keys] + ["best F1", "at score"])
    rows = []
    for c in list(m["coco"]["per_class"]) + ["mean"]:
        is_mean = c == "mean"
        strict = m["mean"] if is_mean else m["per_class"][c]
        coco = m["coco"]["mean"] if is_mean else m["coco"]["per_class"][c]
        f1 = m["f1_best"]["overall"] if is_mean else m["f1_best"]["per_class"][c]
        objects = sum(m["data"]["objects"].values()) if is_mean else m["data"]["objects"][c]
        rows.append([c, _num(m["voc07"]["mean"] if is_mean else m["voc07"]["per_class"][c]),
                     _num(strict["AP50"]), _num(strict["AP75"]), objects]
                    + [_num(coco[k]) for k in coco_keys]
                    + [_num(f1["f1"]), _num(f1["threshold"], "{:.3f}")])
    return head, rows


def _settings(m):
    run = m.get("run", {})
    rows = [[k, v] for k, v in (("net", run.get("net")), ("model", run.get("model")),
                                ("test set", m.get("imdb")), ("cfg file", run.get("cfg_file")))
            if v]
    rows += [[k, v if isinstance(v, str) else json.dumps(v)]
             for k, v in sorted((run.get("settings") or {}).items())]
    out = _table(["setting", "value"], rows, mean_last=False, css="kv")
    text = run.get("cfg_text") or ""
    notes = [ln[2:] for ln in text.splitlines() if ln.startswith("# ") and "->" in ln]
    if notes:  # tools/auto_cfg.py writes each sized value with the figures it came from
        out += ("<p>Sized from the data (tools/auto_cfg.py):</p><ul>"
                + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    if text:
        out += ("<details><summary>cfg file as used</summary>"
                f"<pre>{html.escape(text)}</pre></details>")
    return out


def _timings(m):
    run = m.get("run", {})
    rows = [[f"training {k}", f"{v:.1f} s"] for k, v in (run.get("training_s") or {}).items()]
    rows += [[k, v] for k, v in (run.get("timings") or {}).items()]
    rows.append(["report (this page and its figures)", f"{run.get('report_s', 0):.1f} s"])
    return _table(["step", "time"], rows, mean_last=False, css="kv")


def _tide_table(t):
    rows = [[ERROR_NAMES[k], _num(v, "{:.2f}"), t["count"][k]] for k, v in t["dAP"].items()]
    return _table(["error type", "dAP50 x 100", "errors"], rows, mean_last=False)


def render(m, figures):
    head, rows = _metric_rows(m)
    d = m["data"]
    data_rows = [[c, n, d["difficult"][c]] for c, n in d["objects"].items()]
    data_rows.append(["all", sum(d["objects"].values()), sum(d["difficult"].values())])
    thr = m["f1_best"]["overall"]
    voc = m.get("voc_mAP")
    parts = [
        f"<h1>Faster R-CNN test report: {html.escape(str(m.get('imdb', '')))}</h1>",
        f'<p class="big">mAP (the data set\'s metric, VOC07 11-point for VOC) <b>{_num(voc)}</b>'
        f" &middot; AP50 area {_num(m['mean']['AP50'])} &middot; COCO AP@[.5:.95] "
        f"{_num(m['coco']['mean']['AP'])} &middot; best F1 {_num(thr['f1'])} at score "
        f"{_num(thr['threshold'], '{:.3f}')}</p>",
        "<h2>Metrics</h2><p class=\"read\">VOC columns match at IoU &gt; 0.5 (+1 pixel rule); "
        "COCO columns are pycocotools' (IoU &ge; t, 101 recall points, boxes with the same +1 "
        "rule); best F1 is at the score threshold shown.</p>", _table(head, rows),
        "<h2>Where the AP was lost</h2>", _tide_table(m["tide"]),
        f"<h2>Data</h2><p>{d['images']} test images.</p>",
        _table(["class", "objects", "difficult (ignored)"], data_rows),
        "<h2>Figures</h2>"] + [_img(p) for p in figures] + [
        "<h2>Settings</h2>", _settings(m), "<h2>Timings</h2>", _timings(m)]
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Faster R-CNN "
            f"report</title><style>{CSS}</style></head><body>" + "\n".join(parts)
            + "</body></html>\n")


def write_html(output_dir, metrics, training_png=None):
    """<output_dir>/report.html from metrics.json's content and the PNGs present; -> path."""
    figures = [training_png] if training_png and os.path.exists(training_png) else []
    figures += [os.path.join(output_dir, n) for n in FIGURES[1:]
                if os.path.exists(os.path.join(output_dir, n))]
    path = os.path.join(output_dir, "report.html")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(render(metrics, figures))
    os.replace(tmp, path)
    return path
