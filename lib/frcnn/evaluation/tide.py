"""Where the AP was lost: the error breakdown of Bolya et al., "TIDE: A General Toolbox for
Identifying Object Detection Errors" (ECCV 2020), at IoU 0.5.

Every false positive of voc_eval's matching gets one type, tested in TIDE's order, with
IoU_same its highest IoU with an object of its class and IoU_other with an object of another
class (t_f = 0.5, t_b = 0.1):
  loc    t_b <= IoU_same <= t_f                 right class, box too far off
  cls    IoU_other > t_f                        right place, wrong class
  dupe   IoU_same > t_f                         the object was already detected
  bkg    IoU with every object <= t_b           a detection of nothing
  both   anything else (t_b < IoU_other <= t_f, wrong class and box)
  missed an object no TP found and no cls / loc error points at
Each type's cost is dAP = AP with only that type fixed by an oracle minus the AP as it is:
a cls / loc error takes its object's class and box (it becomes the TP of an object nobody
detected; when the object was detected, it is removed instead), dupe / bkg / both errors are
removed, missed objects leave the count of objects. AP is the mean over classes of the area
under the precision envelope at IoU > 0.5 (metrics.json's AP50), so dAP is in those points.
"""
import numpy as np

from frcnn.evaluation.evalset import FG_IOU, ClassDets, area_ap, nanmean
from frcnn.utils.cython_bbox import bbox_overlaps

BG_IOU = 0.1
ERROR_TYPES = ("cls", "loc", "both", "dupe", "bkg", "missed")
ERROR_NAMES = {"cls": "classification", "loc": "localisation", "both": "cls + loc",
               "dupe": "duplicate", "bkg": "background", "missed": "missed"}


def _error_type(cls_k, box, gb, gl):
    """Type of one false positive and the object it points at (index into the image's gts)."""
    iou = bbox_overlaps(box[None], gb)[0] if len(gb) else np.zeros(0)
    same = np.where(gl == cls_k, iou, -1.0)
    other = np.where(gl != cls_k, iou, -1.0)
    js = int(np.argmax(same)) if len(iou) else -1
    jo = int(np.argmax(other)) if len(iou) else -1
    if js >= 0 and BG_IOU <= same[js] <= FG_IOU:
        return "loc", js
    if jo >= 0 and other[jo] > FG_IOU:
        return "cls", jo
    if js >= 0 and same[js] > FG_IOU:
        return "dupe", js
    if len(iou) == 0 or iou.max() <= BG_IOU:
        return "bkg", -1
    return "both", -1


def classify_errors(evalset):
    """-> {'fp': [(cls, position in the class's sorted dets, type, (image, gt index in
    image_gts) or None)], 'missed': [(image, gt index)], 'detected': {(image, gt index)}}."""
    gts = {im: evalset.image_gts(im) for im in evalset.image_ids}
    fps, detected = [], set()
    for k, cls in enumerate(evalset.classes):
        dets = evalset.dets[cls]
        tp, fp, gt_index = evalset.match(cls)
        for d in range(len(dets)):
            im = dets.image_ids[d]
            gb, gl, _ = gts[im]
            if tp[d]:  # gt_index is within the class: back to the image's numbering
                detected.add((im, int(np.nonzero(gl == k)[0][gt_index[d]])))
            elif fp[d]:
                kind, j = _error_type(k, dets.boxes[d], gb, gl)
                fps.append((cls, d, kind, None if j < 0 else (im, j)))
    pointed = {t for _, _, kind, t in fps if kind in ("cls", "loc")}
    missed = [(im, j) for im in evalset.image_ids
              for j in np.nonzero(~gts[im][2])[0].tolist()
              if (im, j) not in detected and (im, j) not in pointed]
    return {"fp": fps, "missed": missed, "detected": detected}


def _fixed_dets(evalset, errors, kind):
    """Each class's detections after the oracle fixed every error of `kind`."""
    rows = {c: list(zip(evalset.dets[c].image_ids, evalset.dets[c].conf, evalset.dets[c].boxes))
            for c in evalset.classes}
    drop, moved, claimed = set(), [], set(errors["detected"])
    ordered = sorted(errors["fp"], key=lambda e: -evalset.dets[e[0]].conf[e[1]])
    for cls, d, k, target in ordered:
        if k != kind or kind == "missed":
            continue
        drop.add((cls, d))
        if kind in ("cls", "loc") and target not in claimed:
            claimed.add(target)
            im, j = target
            gb, gl, _ = evalset.image_gts(im)
            moved.append((evalset.classes[gl[j]], (im, evalset.dets[cls].conf[d], gb[j])))
    out = {c: [r for d, r in enumerate(rows[c]) if (c, d) not in drop] for c in rows}
    for c, r in moved:
        out[c].append(r)
    return {c: ClassDets([r[0] for r in v], [r[1] for r in v], [r[2] for r in v])
            for c, v in out.items()}


def _mean_ap(evalset, dets=None, npos_less=None):
    aps = []
    for c in evalset.classes:
        npos = evalset.npos(c)
        if npos == 0:
            continue
        tp, fp, _ = evalset.match(c, None if dets is None else dets[c])
        left = npos - (npos_less or {}).get(c, 0)
        aps.append(area_ap(tp, fp, left) if left > 0 else 1.0)  # nothing left to find
    return nanmean(aps)


def error_breakdown(evalset, errors=None):
    """-> {'ap': mean AP50 as it is, 'dAP': {type: AP points gained by fixing it (x100)},
    'count': {type: number of errors}}."""
    errors = errors or classify_errors(evalset)
    base = _mean_ap(evalset)
    dap, count = {}, {}
    for kind in ERROR_TYPES:
        if kind == "missed":
            less = {}
            for im, j in errors["missed"]:
                c = evalset.classes[evalset.image_gts(im)[1][j]]
                less[c] = less.get(c, 0) + 1
            fixed = _mean_ap(evalset, npos_less=less)
            count[kind] = len(errors["missed"])
        else:
            fixed = _mean_ap(evalset, _fixed_dets(evalset, errors, kind))
            count[kind] = sum(1 for e in errors["fp"] if e[2] == kind)
        dap[kind] = 100.0 * (fixed - base)
    return {"ap": base, "dAP": dap, "count": count}
