"""The measures a stage takes of itself on the held-out images (SOLVER.SCHEDULE plateau):

- RPN stages: average recall of the top TOP_PROPOSALS proposals over IoU 0.5:0.05:0.95;
- Fast R-CNN stages (and end2end): mAP, area under the precision envelope (not the 11-point
  VOC07 one: it is steadier on few images), at IoU 0.5, on that stage's proposals.

Both read the gt of the imdb's roidb (difficult objects are not in it), so the held-out images
need no evaluation files of their own.
"""
import cv2
import numpy as np
import torch

from frcnn.datasets.imdb import evaluate_recall
from frcnn.datasets.voc_eval import ap_at_ious
from frcnn.fast_rcnn.test import detections_for_image, im_detect, im_proposals

TOP_PROPOSALS = 300
RECALL_IOUS = np.arange(0.5, 0.95 + 1e-5, 0.05)


def _read(imdb, i):
    path = imdb.image_path_at(i)
    im = cv2.imread(path)
    if im is None:
        raise FileNotFoundError(f"cannot read image {path} (image {i} of {imdb.name})")
    return im


@torch.no_grad()
def rpn_average_recall(model, imdb, indices, cfg, top_n=TOP_PROPOSALS):
    """AR of the model's top_n proposals on imdb images `indices` (model: with an RPN)."""
    model.eval()
    boxes = [im_proposals(model, _read(imdb, i), cfg)[0][:top_n] for i in indices]
    roidb = [imdb.roidb[i] for i in indices]
    return evaluate_recall(roidb, boxes, RECALL_IOUS)["ar"]


def mean_ap_area(dets_per_image, roidb, num_classes):
    """dets_per_image[i][cls] [D, 5] 0-based boxes + score; roidb: the images' gt entries.
    -> mean over the classes with gt of the AP (area) at IoU 0.5."""
    aps = []
    for c in range(1, num_classes):
        recs = {}
        ids, conf, boxes = [], [], []
        for n, (dets, e) in enumerate(zip(dets_per_image, roidb)):
            sel = np.asarray(e["gt_classes"]) == c
            gt = np.asarray(e["boxes"], np.float64).reshape(-1, 4)[sel]
            recs[n] = {"bbox": gt, "difficult": np.zeros(len(gt), bool)}
            d = np.asarray(dets[c], np.float64).reshape(-1, 5)
            ids += [n] * len(d)
            conf.append(d[:, 4])
            boxes.append(d[:, :4])
        ap = ap_at_ious(ids, np.concatenate(conf), np.concatenate(boxes), recs, (0.5,))[0]
        if not np.isnan(ap):
            aps.append(ap)
    return float(np.mean(aps)) if aps else 0.0


@torch.no_grad()
def detection_map(model, imdb, indices, cfg, proposals=None):
    """mean_ap_area of the model's detections on imdb images `indices` (test_net's threshold,
    NMS and cap). proposals: list in imdb order, for a model without an RPN."""
    model.eval()
    dets = []
    for i in indices:
        scores, boxes = im_detect(model, _read(imdb, i), cfg,
                                  None if proposals is None else proposals[i])
        dets.append(detections_for_image(scores, boxes, imdb.num_classes, cfg.TEST.SCORE_THRESH,
                                         cfg.TEST.NMS, cfg.TEST.MAX_PER_IMAGE))
    return mean_ap_area(dets, [imdb.roidb[i] for i in indices], imdb.num_classes)


def validation_images(imdb, cfg, out_dir):
    """SOLVER.SCHEDULE plateau: the imdb indices held out for decisions (datasets.splits.
    validation_slice of the image names), printed and written to <out_dir>/validation.txt.
    -> [] under the fixed schedule."""
    import os

    from frcnn.datasets.splits import validation_slice
    from frcnn.errors import ConfigError

    if cfg.SOLVER.SCHEDULE not in ("fixed", "plateau"):
        raise ConfigError(f"SOLVER.SCHEDULE {cfg.SOLVER.SCHEDULE!r}: use 'fixed' (the paper's "
                          "ITERS / STEPSIZES) or 'plateau' (stop on held-out images)")
    if cfg.SOLVER.SCHEDULE == "fixed":
        return []
    P = cfg.SOLVER.PLATEAU
    names = validation_slice(imdb.image_index, P.VAL_FRACTION, P.VAL_MIN_IMAGES)
    if not names:
        raise ConfigError(f"{imdb.name}: {imdb.num_images} images, too few to hold any out for "
                          "SOLVER.SCHEDULE plateau; use --set SOLVER.SCHEDULE fixed")
    path = os.path.join(out_dir, "validation.txt")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(names) + "\n")
    os.replace(path + ".tmp", path)
    print(f"validation side: {len(names)} of {imdb.num_images} training images held out for the "
          f"plateau decisions (name hash), listed in {path}")
    pos = {n: i for i, n in enumerate(imdb.image_index)}
    return [pos[n] for n in names]


def plateau_hook_factory(cfg, measure_fn, measure_name, ceiling, output_dir, prefix):
    """-> (lr hook) -> PlateauSchedule, as train_model's `plateau` argument."""
    from frcnn.engine.plateau import PlateauSchedule, PlateauState

    P = cfg.SOLVER.PLATEAU
    period = int(P.EVAL_PERIOD) or max(1, int(ceiling) // 10)

    def make(lr_hook):
        state = PlateauState(P.PATIENCE, P.MAX_PLATEAUS, cfg.SOLVER.GAMMA, P.MIN_DELTA)
        return PlateauSchedule(state, measure_fn, measure_name, period, lr_hook, output_dir,
                               prefix)
    return make
