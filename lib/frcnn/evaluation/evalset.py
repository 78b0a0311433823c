"""Ground truth and detections of one test run in the layout the VOC evaluation reads.

Boxes are 1-based (x1, y1, x2, y2) with the +1 pixel rule (w = x2 - x1 + 1), exactly as the
results files and voc_eval have them; detections are rounded as the results files round them
(scores to 3 decimals, boxes to 0.1 px), so every number of the report agrees with the
strict-IoU table of metrics.json. Matching is voc_eval's: a detection takes the gt of highest
IoU in its image when IoU > 0.5, a difficult gt makes it neither TP nor FP, a second detection
of a taken gt is a FP.
"""
import numpy as np

from frcnn.datasets.voc_eval import _class_gts, _results_lines, match_detections, voc_ap

FG_IOU = 0.5  # a match needs IoU > FG_IOU (VOC, strict)


class ClassDets:
    """One class's detections sorted by descending score (voc_eval's sort)."""

    def __init__(self, image_ids, conf, boxes):
        conf = np.asarray(conf, np.float64).reshape(-1)
        order = np.argsort(-conf)
        self.image_ids = [image_ids[i] for i in order]
        self.conf = conf[order]
        self.boxes = np.asarray(boxes, np.float64).reshape(-1, 4)[order]

    def __len__(self):
        return len(self.conf)


class EvalSet:
    """classes: names without the background; image_ids: the imdb's image_index;
    gts: {class: {image: {'bbox' [G, 4], 'difficult' [G] bool}}} (every image present);
    dets: {class: ClassDets}; image_paths: {image: file} (for figures), optional."""

    def __init__(self, classes, image_ids, gts, dets, image_paths=None):
        self.classes, self.image_ids = list(classes), list(image_ids)
        self.gts, self.dets = gts, dets
        self.image_paths = image_paths or {}

    @classmethod
    def from_imdb(cls, imdb, all_boxes):
        """all_boxes: [K+1][N] of [D, 5] 0-based (x1, y1, x2, y2, score), test_net's layout."""
        classes = [c for c in imdb.classes if c != "__background__"]
        dets = {}
        for c, name in enumerate(imdb.classes):
            if name != "__background__":
                dets[name] = ClassDets(*_results_lines(imdb.image_index, all_boxes[c]))
        paths = {index: imdb.image_path_at(i) for i, index in enumerate(imdb.image_index)}
        return cls(classes, imdb.image_index, _class_gts(imdb), dets, paths)

    @classmethod
    def from_lists(cls, classes, gt_list, det_list):
        """Hand-made sets (tests): gt_list [(image, class, box, difficult)], det_list
        [(image, class, box, score)], boxes 1-based."""
        images = list(dict.fromkeys([g[0] for g in gt_list] + [d[0] for d in det_list]))
        gts = {c: {im: {"bbox": np.zeros((0, 4)), "difficult": np.zeros(0, bool)}
                   for im in images} for c in classes}
        for im, c, box, diff in gt_list:
            r = gts[c][im]
            r["bbox"] = np.vstack([r["bbox"], np.asarray(box, np.float64)[None]])
            r["difficult"] = np.append(r["difficult"], bool(diff))
        dets = {}
        for c in classes:
            mine = [d for d in det_list if d[1] == c]
            dets[c] = ClassDets([d[0] for d in mine], [d[3] for d in mine],
                                [d[2] for d in mine])
        return cls(classes, images, gts, dets)

    def npos(self, cls):
        return sum(int(np.sum(~r["difficult"])) for r in self.gts[cls].values())

    def match(self, cls, dets=None, thresh=FG_IOU):
        """voc_eval's matching of `dets` (default: the class's own) -> (tp [D], fp [D],
        gt_index [D]: the gt of highest IoU in the image of the same class, -1 if none)."""
        dets = self.dets[cls] if dets is None else dets
        gt_index = np.full(len(dets), -1, np.int64)
        tp, fp = match_detections(dets.image_ids, dets.boxes, self.gts[cls], thresh,
                                  gt_index=gt_index)
        return tp, fp, gt_index

    def image_gts(self, image):
        """Every gt of one image: boxes [G, 4], class indices [G], difficult [G]."""
        boxes, labels, diff = [np.zeros((0, 4))], [], []
        for k, c in enumerate(self.classes):
            r = self.gts[c].get(image)
            if r is None or len(r["bbox"]) == 0:
                continue
            boxes.append(r["bbox"])
            labels += [k] * len(r["bbox"])
            diff.append(r["difficult"])
        return (np.vstack(boxes), np.asarray(labels, np.int64),
                np.concatenate(diff) if diff else np.zeros(0, bool))


def area_ap(tp, fp, npos):
    """AP as the area under the precision envelope (voc_ap, not 11-point) of detections
    already sorted by score; nan without positives."""
    if npos == 0:
        return float("nan")
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return float(voc_ap(tp / float(npos), prec, use_07_metric=False))


def nanmean(values):
    vals = [v for v in values if not np.isnan(v)]
    return float(np.mean(vals)) if vals else 0.0
