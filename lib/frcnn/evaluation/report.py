"""After test_net: every figure and number a practitioner looks at, in the test output folder.

write_report(imdb, output_dir) reads detections.pkl (or takes all_boxes) and writes
  metrics.json        + COCO metrics, VOC07 AP per class, F1-best thresholds, confusion
                        matrix, TIDE breakdown, worst images (the strict-IoU table stays)
  predictions.json    COCO results format with file and class names (coco_metrics.py)
  pr_curves.png, score_curves.png, confusion_matrix.png, tide.png, worst_images.png
  report.html         one self-contained page (report_html.py)
and prints one aligned table. Nothing here changes the VOC number test_net printed first.
"""
import json
import os
import time

import numpy as np

from frcnn.datasets.voc_eval import voc_ap
from frcnn.evaluation.coco_metrics import coco_metrics
from frcnn.evaluation.confusion import confusion_matrix
from frcnn.evaluation.evalset import EvalSet, area_ap, nanmean
from frcnn.evaluation.thresholds import f1_thresholds
from frcnn.evaluation.tide import classify_errors, error_breakdown

def _voc_aps(evalset):
    """{class: (VOC07 11-point AP, area AP, recall, precision)} at IoU > 0.5."""
    out = {}
    for c in evalset.classes:
        tp, fp, _ = evalset.match(c)
        npos = evalset.npos(c)
        tpc, fpc = np.cumsum(tp), np.cumsum(fp)
        rec = tpc / max(npos, 1)
        prec = tpc / np.maximum(tpc + fpc, np.finfo(np.float64).eps)
        ap07 = float(voc_ap(rec, prec, True)) if npos else float("nan")
        out[c] = (ap07, area_ap(tp, fp, npos), rec, prec)
    return out


def compute(evalset):
    """All numbers of the report (no figures) -> dict ready for metrics.json (+ 'curves')."""
    voc = _voc_aps(evalset)
    f1 = f1_thresholds(evalset)
    thr = f1["overall"]["threshold"]
    thr = 0.5 if thr is None else thr
    errors = classify_errors(evalset)
    return {
        "voc07": {"per_class": {c: v[0] for c, v in voc.items()},
                  "mean": nanmean([v[0] for v in voc.values()])},
        "coco": coco_metrics(evalset),
        "f1_best": {"overall": f1["overall"], "per_class": f1["per_class"]},
        "draw_thresh": thr,
        "confusion": {"score_thresh": thr, "iou": 0.5, "rows": evalset.classes + ["background"],
                      "cols": evalset.classes + ["missed"],
                      "matrix": confusion_matrix(evalset, thr).tolist()},
        "tide": error_breakdown(evalset, errors),
        "data": {"images": len(evalset.image_ids),
                 "objects": {c: evalset.npos(c) for c in evalset.classes},
                 "difficult": {c: sum(int(r["difficult"].sum()) for r in evalset.gts[c].values())
                               for c in evalset.classes}},
        "curves": {"pr": {c: (v[2], v[3], v[1]) for c, v in voc.items()},
                   "score": f1["curves"]},
    }


def print_table(m):
    """One aligned table: VOC first (the paper's metric), then the COCO numbers and F1."""
    coco_keys = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")
    head = f"  {'class':<16} {'VOC07':>6} {'AP50':>6}" + "".join(
        f" {'c' + k:>7}" for k in coco_keys) + f" {'F1':>6} {'thresh':>6}"
    print("VOC (IoU > 0.5: 11-point, area) and COCO (pycocotools, IoU >= t, +1 boxes) metrics:")
    print(head)
    rows = list(m["coco"]["per_class"]) + ["mean"]
    for c in rows:
        voc07 = m["voc07"]["mean"] if c == "mean" else m["voc07"]["per_class"][c]
        area = m["mean"]["AP50"] if c == "mean" else m["per_class"][c]["AP50"]  # strict-IoU
        coco = m["coco"]["mean"] if c == "mean" else m["coco"]["per_class"][c]
        f1 = m["f1_best"]["overall"] if c == "mean" else m["f1_best"]["per_class"][c]
        t = "-" if f1["threshold"] is None else f"{f1['threshold']:.3f}"
        print(f"  {c:<16} {voc07:6.4f} {area:6.4f}" + "".join(f" {coco[k]:7.4f}" for k in coco_keys)
              + f" {f1['f1']:6.4f} {t:>6}")
    t = m["tide"]
    print("where the AP50 was lost (dAP x 100): " + ", ".join(
        f"{k} {v:.2f}" for k, v in t["dAP"].items()))


def write_figures(evalset, m, output_dir):
    """The PNGs of the report (matplotlib); -> the worst images [{'image', 'errors'}]."""
    from frcnn.evaluation import figures
    from frcnn.evaluation.worst_images import image_errors, plot_worst_images, worst_images

    p = lambda name: os.path.join(output_dir, name)  # noqa: E731
    figures.plot_pr_all(m["curves"]["pr"], p("pr_curves.png"))
    figures.plot_score_curves(m["curves"]["score"], m["f1_best"]["overall"], p("score_curves.png"))
    figures.plot_confusion(np.array(m["confusion"]["matrix"]), evalset.classes,
                           m["draw_thresh"], p("confusion_matrix.png"))
    figures.plot_tide(m["tide"], p("tide.png"))
    per_image = image_errors(evalset, m["draw_thresh"])
    worst = worst_images(per_image)
    if worst:
        plot_worst_images(evalset, per_image, worst, p("worst_images.png"))
    return [{"image": str(im), "errors": n} for im, n in worst]


def _save_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True, allow_nan=True)
    os.replace(tmp, path)


def write_report(imdb, output_dir, all_boxes=None, run=None):
    """Everything listed in the module doc into output_dir; -> the merged metrics dict.

    run: what the page shows about the run (net, model, cfg file, settings, timings); kept in
    metrics.json['run'] so tools/report.py can rebuild the page without the model."""
    from frcnn.evaluation.coco_metrics import predictions
    from frcnn.evaluation.report_html import write_html
    from frcnn.fast_rcnn.reval import load_detections
    from frcnn.engine.results_csv import training_png, training_times

    t0 = time.perf_counter()
    all_boxes = load_detections(output_dir) if all_boxes is None else all_boxes
    evalset = EvalSet.from_imdb(imdb, all_boxes)
    path = os.path.join(output_dir, "metrics.json")
    if not os.path.exists(path):  # the strict-IoU table test_net writes first
        from frcnn.datasets.voc_eval import strict_iou_report

        strict_iou_report(imdb, output_dir, all_boxes)
    with open(path) as f:
        metrics = json.load(f)
    m = compute(evalset)
    if metrics.get("data") and metrics["data"] != json.loads(json.dumps(m["data"])):
        from frcnn.errors import ConfigError

        raise ConfigError(f"{path}: the test set now has {m['data']['objects']} objects, test_net "
                          f"evaluated {metrics['data']['objects']}; give the --cfg / --set "
                          "test_net was given, or run test_net again")
    curves = m.pop("curves")
    metrics.update(m)
    metrics["run"] = dict(metrics.get("run") or {}, **(run or {}))
    model = metrics["run"].get("model")
    if model:
        metrics["run"]["training_s"] = training_times(os.path.dirname(os.path.abspath(model)))
    print_table(metrics)
    _save_json(os.path.join(output_dir, "predictions.json"), predictions(evalset))
    try:
        metrics["worst_images"] = write_figures(evalset, dict(metrics, curves=curves), output_dir)
    except ImportError as e:  # matplotlib missing: the numbers are written all the same
        print(f"no figures: {e}")
    metrics["run"]["report_s"] = round(time.perf_counter() - t0, 2)
    _save_json(path, metrics)
    html = write_html(output_dir, metrics, training_png(metrics["run"].get("model")))
    print(f"report: {html}")
    return metrics


SHOWN_SETTINGS = ("TRAIN.SCALES", "TRAIN.MAX_SIZE", "TEST.SCALES", "TEST.MAX_SIZE",
                  "ANCHOR_SCALES", "ANCHOR_RATIOS", "ALT_OPT.ITERS", "TRAIN.RPN_POST_NMS_TOP_N",
                  "TEST.RPN_POST_NMS_TOP_N", "TEST.NMS", "TEST.SCORE_THRESH",
                  "TEST.MAX_PER_IMAGE", "POOLING_MODE", "RNG_SEED", "DEVICE")


def _cfg_value(cfg, key):
    v = cfg
    for part in key.split("."):
        v = v.get(part) if hasattr(v, "get") else None
    return list(v) if isinstance(v, tuple) else v


def after_test_net(imdb, output_dir, net, model_path, cfg, cfg_file=None, timings=None,
                   imdb_spec=None, set_cfgs=None):
    """test_net.py's last step: the report, and the F1-best threshold into the model file.
    imdb_spec, cfg_file, set_cfgs: test_net's --imdb, --cfg and --set, which tools/report.py
    uses to build the same test set again."""
    from frcnn.evaluation.thresholds import store_draw_thresh

    cfg_text = None
    if cfg_file and os.path.isfile(cfg_file):
        with open(cfg_file) as f:
            cfg_text = f.read()
    run = {"net": net, "model": model_path, "imdb_spec": imdb_spec, "cfg_file": cfg_file,
           "set_cfgs": list(set_cfgs or []),
           "cfg_text": cfg_text, "settings": {k: _cfg_value(cfg, k) for k in SHOWN_SETTINGS},
           "timings": timings or {}}
    try:
        metrics = write_report(imdb, output_dir, run=run)
    except ImportError as e:  # pycocotools or matplotlib missing: test_net's results stand
        print(f"no report: {e}")
        return None
    if store_draw_thresh(model_path, metrics):
        print(f"F1-best score {metrics['draw_thresh']:.3f} stored in {model_path} (the default "
              "drawing threshold of tools/detect.py and Detector)")
    return metrics
