"""PASCAL VOC detection AP with the semantics of py-faster-rcnn's voc_eval.py.

Results files: one line per detection, `<image_id> <score %.3f> <x1> <y1> <x2> <y2>` in 1-based
pixel coordinates (0-based boxes + 1). Annotation XMLs are 1-based and used as they are. A detection
matches a gt when IoU > ovthresh (strict, +1 pixel convention); matching a difficult gt makes it
neither TP nor FP; a second detection of an already matched gt is a FP.

Strict IoU (strict_iou_table / strict_iou_report): AP at IoU 0.5, 0.75 and the COCO-style mean
over IoU 0.5:0.05:0.95, each the area under the precision envelope (voc_ap, not the 11-point
metric), with the VOC matching rules above, per class and mean, for any imdb.
"""
import hashlib
import json
import os
import pickle
import tempfile
import xml.etree.ElementTree as ET

import numpy as np

from .imdb import DatasetError


def parse_rec(filename):
    """Objects of one VOC XML: list of {'name', 'pose', 'truncated', 'difficult', 'bbox' (1-based)}."""
    try:
        tree = ET.parse(filename)
    except (ET.ParseError, OSError) as e:
        raise DatasetError(f"{filename}: cannot read annotation XML ({e}); fix or regenerate it") from None
    objects = []
    for obj in tree.findall("object"):
        bbox = obj.find("bndbox")
        diff = obj.find("difficult")
        trunc = obj.find("truncated")
        objects.append({
            "name": (obj.findtext("name") or "").lower().strip(),
            "pose": obj.findtext("pose"),
            "truncated": int(trunc.text) if trunc is not None and trunc.text else 0,
            "difficult": int(diff.text) if diff is not None and diff.text else 0,
            "bbox": [int(float(bbox.find(k).text)) for k in ("xmin", "ymin", "xmax", "ymax")],
        })
    return objects


def voc_ap(rec, prec, use_07_metric=False):
    """AP from recall/precision arrays: VOC07 11-point (max precision at recall >= t,
    t = 0, 0.1, ..., 1) or the area under the monotone precision envelope."""
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = 0.0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
            ap = ap + p / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def _load_recs(annopath, imagenames, cachedir, imagesetfile):
    if not cachedir:
        return {n: parse_rec(annopath.format(n)) for n in imagenames}
    # Keyed by the image set, the annotation paths and their mtimes: never stale.
    h = hashlib.sha1(os.path.abspath(imagesetfile).encode())
    for n in imagenames:
        p = annopath.format(n)
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_mtime_ns}\0{st.st_size}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    os.makedirs(cachedir, exist_ok=True)
    cachefile = os.path.join(cachedir, f"annots_{h.hexdigest()[:16]}.pkl")
    if os.path.isfile(cachefile):
        from frcnn.safe_io import load_cache

        recs = load_cache(cachefile, "annotation cache")
        if recs is not None:
            return recs
    recs = {n: parse_rec(annopath.format(n)) for n in imagenames}
    fd, tmp = tempfile.mkstemp(dir=cachedir, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        pickle.dump(recs, f, pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, cachefile)
    return recs


def voc_eval(detpath, annopath, imagesetfile, classname, cachedir, ovthresh=0.5,
             use_07_metric=True, recs=None):
    """rec, prec, ap = voc_eval(...).

    detpath: format string, detpath.format(classname) is the results file.
    annopath: format string, annopath.format(imagename) is the XML.
    imagesetfile: text file with one image name per line.
    cachedir: where parsed annotations are cached (None: no cache).
    recs: {image name: parse_rec-style object list} to use instead of reading annopath (the
    data sets that are not VOC XML give theirs).
    Returns recall [D], precision [D] (over detections sorted by score) and the AP; when the class
    has no non-difficult gt, AP is nan (callers leave it out of the mean).
    """
    with open(imagesetfile) as f:
        imagenames = [x.split()[0] for x in f.read().splitlines() if x.strip()]
    if recs is None:
        recs = _load_recs(annopath, imagenames, cachedir, imagesetfile)
    classname = classname.lower().strip()

    class_recs = {}
    npos = 0
    for name in imagenames:
        R = [obj for obj in recs[name] if obj["name"] == classname]
        bbox = np.array([x["bbox"] for x in R], dtype=np.float64).reshape(-1, 4)
        difficult = np.array([x["difficult"] for x in R]).astype(bool)
        npos += int(np.sum(~difficult))
        class_recs[name] = {"bbox": bbox, "difficult": difficult, "det": [False] * len(R)}

    detfile = detpath.format(classname)
    with open(detfile) as f:
        splitlines = [x.strip().split(" ") for x in f.readlines() if x.strip()]
    image_ids = [x[0] for x in splitlines]
    confidence = np.array([float(x[1]) for x in splitlines])
    BB = np.array([[float(z) for z in x[2:]] for x in splitlines]).reshape(-1, 4)

    # Same sort as the reference (numpy's default argsort on -score).
    sorted_ind = np.argsort(-confidence)
    BB = BB[sorted_ind, :]
    image_ids = [image_ids[x] for x in sorted_ind]

    tp, fp = match_detections(image_ids, BB, class_recs, ovthresh, detfile, imagesetfile)
    fp = np.cumsum(fp)
    tp = np.cumsum(tp)
    if npos == 0:
        return np.zeros(len(tp)), np.zeros(len(tp)), float("nan")
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    ap = voc_ap(rec, prec, use_07_metric)
    return rec, prec, float(ap)


def match_detections(image_ids, BB, class_recs, ovthresh, detfile="detections",
                     imagesetfile="the image set", gt_index=None):
    """VOC matching of detections already sorted by descending score: -> (tp [D], fp [D]).

    A detection matches the gt of highest IoU in its image when that IoU > ovthresh (+1 pixel
    convention); a difficult gt makes it neither TP nor FP; a second detection of a matched gt
    is a FP. class_recs[image] = {'bbox' [G, 4], 'difficult' [G] bool}; its 'det' flags are not
    touched (each call starts with no gt matched). gt_index: optional int array [D] that
    receives each detection's gt of highest IoU in its image (-1 when there is none).
    """
    taken = {k: [False] * len(v["bbox"]) for k, v in class_recs.items()}
    nd = len(image_ids)
    tp = np.zeros(nd)
    fp = np.zeros(nd)
    for d in range(nd):
        if image_ids[d] not in class_recs:
            raise DatasetError(f"{detfile}: detection for image '{image_ids[d]}' which is not in "
                               f"the image set {imagesetfile}")
        R = class_recs[image_ids[d]]
        bb = BB[d, :].astype(float)
        ovmax = -np.inf
        BBGT = R["bbox"]
        if BBGT.size > 0:
            ixmin = np.maximum(BBGT[:, 0], bb[0])
            iymin = np.maximum(BBGT[:, 1], bb[1])
            ixmax = np.minimum(BBGT[:, 2], bb[2])
            iymax = np.minimum(BBGT[:, 3], bb[3])
            iw = np.maximum(ixmax - ixmin + 1.0, 0.0)
            ih = np.maximum(iymax - iymin + 1.0, 0.0)
            inters = iw * ih
            uni = ((bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0)
                   + (BBGT[:, 2] - BBGT[:, 0] + 1.0) * (BBGT[:, 3] - BBGT[:, 1] + 1.0) - inters)
            overlaps = inters / uni
            ovmax = np.max(overlaps)
            jmax = np.argmax(overlaps)
            if gt_index is not None:
                gt_index[d] = jmax
        elif gt_index is not None:
            gt_index[d] = -1
        if ovmax > ovthresh:
            if not R["difficult"][jmax]:
                if not taken[image_ids[d]][jmax]:
                    tp[d] = 1.0
                    taken[image_ids[d]][jmax] = True
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0

    return tp, fp


def write_voc_results_file(filename, image_index, dets_per_image):
    """One class's detections: dets_per_image[i] [D, 5] (x1, y1, x2, y2, score), 0-based."""
    with open(filename, "wt") as f:
        for im_ind, index in enumerate(image_index):
            dets = dets_per_image[im_ind]
            if dets is None or len(dets) == 0:
                continue
            dets = np.asarray(dets)
            for k in range(dets.shape[0]):
                f.write("{:s} {:.3f} {:.1f} {:.1f} {:.1f} {:.1f}\n".format(
                    index, dets[k, -1], dets[k, 0] + 1, dets[k, 1] + 1,
                    dets[k, 2] + 1, dets[k, 3] + 1))


IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.5:0.05:0.95


def ap_at_ious(image_ids, confidence, BB, class_recs, thresholds=IOU_THRESHOLDS):
    """AP (area under the precision envelope) of one class at each IoU threshold.

    image_ids [D], confidence [D], BB [D, 4] (1-based boxes, the results-file convention);
    class_recs[image] = {'bbox' [G, 4], 'difficult' [G] bool} for every image of the set.
    -> [len(thresholds)] float64; nan when the class has no non-difficult gt.
    """
    npos = sum(int(np.sum(~np.asarray(r["difficult"], bool))) for r in class_recs.values())
    if npos == 0:
        return np.full(len(thresholds), np.nan)
    order = np.argsort(-np.asarray(confidence, np.float64))  # as voc_eval
    BB = np.asarray(BB, np.float64).reshape(-1, 4)[order]
    ids = [image_ids[i] for i in order]
    aps = []
    for t in thresholds:
        tp, fp = match_detections(ids, BB, class_recs, t)
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        aps.append(voc_ap(tp / float(npos), prec, use_07_metric=False))
    return np.array(aps, np.float64)


def strict_iou_table(per_class, thresholds=IOU_THRESHOLDS):
    """{cls: (image_ids, confidence, BB, class_recs)} -> {'per_class': {cls: {'AP50', 'AP75',
    'AP50:95'}}, 'mean': {...}} (means over the classes with gt; 0.5 and 0.75 must be among
    the thresholds, AP50:95 averages all of them)."""
    thresholds = tuple(thresholds)
    i50, i75 = thresholds.index(0.5), thresholds.index(0.75)
    table = {}
    for cls, (ids, conf, BB, recs) in per_class.items():
        aps = ap_at_ious(ids, conf, BB, recs, thresholds)
        table[cls] = {"AP50": float(aps[i50]), "AP75": float(aps[i75]),
                      "AP50:95": float(np.mean(aps))}
    mean = {}
    for k in ("AP50", "AP75", "AP50:95"):
        vals = [v[k] for v in table.values() if not np.isnan(v[k])]
        mean[k] = float(np.mean(vals)) if vals else 0.0
    return {"per_class": table, "mean": mean}


def _results_lines(image_index, dets_per_image):
    """Detections of one class as voc_eval reads them back from a results file (same rounding:
    scores to 3 decimals, 1-based boxes to 0.1 px): (image_ids, confidence, BB)."""
    ids, conf, boxes = [], [], []
    for im_ind, index in enumerate(image_index):
        dets = dets_per_image[im_ind]
        if dets is None or len(dets) == 0:
            continue
        for d in np.asarray(dets, np.float64).reshape(-1, 5):
            ids.append(index)
            conf.append(float(f"{d[4]:.3f}"))
            boxes.append([float(f"{v + 1:.1f}") for v in d[:4]])
    return ids, np.array(conf), np.array(boxes, np.float64).reshape(-1, 4)


def _class_gts(imdb):
    """{cls: {image: {'bbox', 'difficult'}}} with 1-based boxes: the VOC XMLs (difficult flags
    included) for VOC-style sets, else the gt roidb (COCO crowd boxes count as difficult)."""
    classes = [c for c in imdb.classes if c != "__background__"]
    gts = {c: {} for c in classes}
    if hasattr(imdb, "annotation_path"):
        for index in imdb.image_index:
            objs = parse_rec(imdb.annotation_path(index))
            for c in classes:
                R = [o for o in objs if o["name"] == c.lower().strip()]
                gts[c][index] = {"bbox": np.array([o["bbox"] for o in R], np.float64).reshape(-1, 4),
                                 "difficult": np.array([o["difficult"] for o in R], bool)}
        return gts
    for index, e in zip(imdb.image_index, imdb.gt_roidb()):
        boxes = np.asarray(e["boxes"], np.float64).reshape(-1, 4) + 1.0
        crowd = np.asarray(e["gt_overlaps"]).reshape(len(boxes), -1).min(axis=1) < 0
        for k, c in enumerate(imdb.classes):
            if c == "__background__":
                continue
            sel = np.asarray(e["gt_classes"]) == k
            gts[c][index] = {"bbox": boxes[sel], "difficult": crowd[sel]}
    return gts


def strict_iou_report(imdb, output_dir, all_boxes=None, voc_map=None, extra=None):
    """Strict-IoU APs of test_net's detections: prints the table and writes
    <output_dir>/metrics.json; -> the table (strict_iou_table, plus 'voc_mAP' and `extra`).

    all_boxes: [K+1][N] of [D, 5] 0-based (x1, y1, x2, y2, score); default: output_dir's
    detections.pkl (written by test_net). voc_map: the data set's own metric, recorded as is.
    """
    if all_boxes is None:
        from frcnn.safe_io import load_pickle

        all_boxes = load_pickle(os.path.join(output_dir, "detections.pkl"), "detections file")
    gts = _class_gts(imdb)
    per_class = {}
    for c, cls in enumerate(imdb.classes):
        if cls == "__background__":
            continue
        ids, conf, BB = _results_lines(imdb.image_index, all_boxes[c])
        per_class[cls] = (ids, conf, BB, gts[cls])
    table = strict_iou_table(per_class)
    table["voc_mAP"] = None if voc_map is None else float(voc_map)
    table["iou_thresholds"] = list(IOU_THRESHOLDS)
    table["imdb"] = imdb.name
    table.update(extra or {})
    print("Strict IoU (area under the precision envelope, VOC matching):")
    print(f"  {'class':<16} {'AP50':>7} {'AP75':>7} {'AP50:95':>8}")
    for cls, v in list(table["per_class"].items()) + [("mean", table["mean"])]:
        print(f"  {cls:<16} {v['AP50']:7.4f} {v['AP75']:7.4f} {v['AP50:95']:8.4f}")
    m = table["mean"]
    print(f"Mean AP@0.75 = {m['AP75']:.4f}, AP@[.5:.95] = {m['AP50:95']:.4f}")
    path = os.path.join(output_dir, "metrics.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(table, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
    print(f"metrics written to {path}")
    return table
