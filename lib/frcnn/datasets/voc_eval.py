"""PASCAL VOC detection AP with the semantics of py-faster-rcnn's voc_eval.py.

Results files: one line per detection, `<image_id> <score %.3f> <x1> <y1> <x2> <y2>` in 1-based
pixel coordinates (0-based boxes + 1). Annotation XMLs are 1-based and used as they are. A detection
matches a gt when IoU > ovthresh (strict, +1 pixel convention); matching a difficult gt makes it
neither TP nor FP; a second detection of an already matched gt is a FP.
"""
import hashlib
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
        try:
            with open(cachefile, "rb") as f:
                return pickle.load(f)
        except Exception:
            pass
    recs = {n: parse_rec(annopath.format(n)) for n in imagenames}
    fd, tmp = tempfile.mkstemp(dir=cachedir, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        pickle.dump(recs, f, pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, cachefile)
    return recs


def voc_eval(detpath, annopath, imagesetfile, classname, cachedir, ovthresh=0.5,
             use_07_metric=True):
    """rec, prec, ap = voc_eval(...).

    detpath: format string, detpath.format(classname) is the results file.
    annopath: format string, annopath.format(imagename) is the XML.
    imagesetfile: text file with one image name per line.
    cachedir: where parsed annotations are cached (None: no cache).
    Returns recall [D], precision [D] (over detections sorted by score) and the AP; when the class
    has no non-difficult gt, AP is nan (callers leave it out of the mean).
    """
    with open(imagesetfile) as f:
        imagenames = [x.split()[0] for x in f.read().splitlines() if x.strip()]
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
        if ovmax > ovthresh:
            if not R["difficult"][jmax]:
                if not R["det"][jmax]:
                    tp[d] = 1.0
                    R["det"][jmax] = True
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0

    fp = np.cumsum(fp)
    tp = np.cumsum(tp)
    if npos == 0:
        return np.zeros(nd), np.zeros(nd), float("nan")
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    ap = voc_ap(rec, prec, use_07_metric)
    return rec, prec, float(ap)


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
