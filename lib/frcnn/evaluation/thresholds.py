"""Precision, recall and F1 against the score threshold, and the F1-best threshold.

A threshold t keeps the detections with score >= t; TP/FP come from voc_eval's matching at
IoU > 0.5 over all detections (so a detection's status does not depend on t), recall is over
the non-difficult objects. The F1-best threshold is the highest t reaching the best F1.
"""
import os

import numpy as np

from frcnn.errors import UserError


def pr_vs_threshold(conf, tp, fp, npos):
    """conf [D] sorted descending, tp / fp [D] flags -> (thresholds, precision, recall, f1),
    one entry per distinct score (ties are kept or dropped together)."""
    conf = np.asarray(conf, np.float64)
    if len(conf) == 0:
        return (np.zeros(0),) * 4
    tpc, fpc = np.cumsum(tp), np.cumsum(fp)
    last = np.r_[np.nonzero(np.diff(conf))[0], len(conf) - 1]  # last detection of each score
    prec = tpc[last] / np.maximum(tpc[last] + fpc[last], np.finfo(np.float64).eps)
    rec = tpc[last] / max(npos, 1)
    f1 = 2 * prec * rec / np.maximum(prec + rec, np.finfo(np.float64).eps)
    return conf[last], prec, rec, f1


def best_f1(thresholds, prec, rec, f1):
    """{'threshold', 'f1', 'precision', 'recall'} at the first (highest-threshold) best F1;
    threshold None without detections."""
    if len(f1) == 0:
        return {"threshold": None, "f1": 0.0, "precision": 0.0, "recall": 0.0}
    i = int(np.argmax(f1))
    return {"threshold": float(thresholds[i]), "f1": float(f1[i]), "precision": float(prec[i]),
            "recall": float(rec[i])}


def f1_thresholds(evalset):
    """-> {'per_class': {cls: best_f1}, 'overall': best_f1 (all classes' detections pooled),
    'curves': {cls or 'all': (thresholds, precision, recall, f1)}}."""
    curves, per_class, pooled = {}, {}, []
    for cls in evalset.classes:
        dets = evalset.dets[cls]
        tp, fp, _ = evalset.match(cls)
        curves[cls] = pr_vs_threshold(dets.conf, tp, fp, evalset.npos(cls))
        per_class[cls] = best_f1(*curves[cls])
        pooled.append(np.stack([dets.conf, tp, fp], 1) if len(dets) else np.zeros((0, 3)))
    pooled = np.concatenate(pooled)
    pooled = pooled[np.argsort(-pooled[:, 0], kind="stable")]
    npos = sum(evalset.npos(c) for c in evalset.classes)
    curves["all"] = pr_vs_threshold(pooled[:, 0], pooled[:, 1], pooled[:, 2], npos)
    return {"per_class": per_class, "overall": best_f1(*curves["all"]), "curves": curves}


def store_draw_thresh(model_path, metrics):
    """Writes the F1-best score thresholds into a model file written by the training tools
    ('draw_thresh': overall, 'draw_thresh_per_class'), atomically; the weights are untouched.
    -> True when written (files without the tools' metadata dict are left alone)."""
    from frcnn.model_file import ModelFile

    best = metrics["f1_best"]
    if best["overall"]["threshold"] is None or not model_path or not os.path.isfile(model_path):
        return False
    mf = ModelFile.load(model_path)
    if not mf.net:  # a bare state dict: no metadata to add to
        return False
    mf.meta["draw_thresh"] = best["overall"]["threshold"]
    mf.meta["draw_thresh_per_class"] = {c: v["threshold"] for c, v in best["per_class"].items()}
    try:
        mf.save(model_path)
    except (OSError, RuntimeError, UserError) as e:  # not writable; metrics.json has it
        print(f"warning: {model_path}: F1-best threshold not stored ({e}); pass --thresh "
              f"{mf.meta['draw_thresh']:.3f} to tools/detect.py")
        return False
    return True
