"""Settings derived from a data set and the net, for folders without a hand-written cfg.

    keys, notes = derive(roidb, "ELITE0", cfg)      # {'TRAIN.SCALES': (320,), ...}, [str]
    text = to_yaml(keys, notes)                      # the cfg written next to the results

Rules (each printed with the figures it came from):
- scale: the median short image side, capped at 600 (the paper's), lowered (not below 320) while
  the 5th-percentile object stays >= 64 px, since CPU time grows with the pixels; a multiple of 32
  unless that would exceed the images. MAX_SIZE: the scale times the 95th-percentile aspect
  ratio of the images. A user TRAIN.SCALES / MAX_SIZE is used for TEST too and for the anchors.
- ANCHOR_SCALES: powers of two whose anchors (16 * scale px) span the 5th-95th percentile object
  side at the training scale (k-means scales of the box sides instead where the powers give
  fewer than half the gt boxes an anchor at IoU >= 0.7); ANCHOR_RATIOS widened only when
  objects are clearly more elongated than 1:2.
- iterations: proportional to the number of training images (epochs of the flipped set), per net
  (a pretrained ELITE0 needs few; TINY trains from scratch), as for 300 images when there are
  fewer (a head from scratch needs that many steps), capped by the reference schedule; lr steps
  at 75 %; SNAPSHOT_ITERS half of the longest stage (an interrupted run resumes).
- POOLING_MODE align (RoIAlign 7x7, 2 samples per bin): tighter boxes than RoI pooling; the
  head's smooth L1 sigma 3 (torchvision's beta 1/9, the reference's 1): tighter still.
- proposals: 300 per image (2000 in the reference) when images hold <= 20 objects; RoIs sampled
  per image 16 x the objects (95th pct), the reference's (64 alt-opt, 128 end2end) to 512; RPN_MIN_SIZE
  half the smallest objects' shorter side (1st pct), at most the reference's 16 px.
- TEST.NMS: the reference's 0.3 unless more than 1 % of the gt boxes overlap a box of their own
  class above it (touching cells, stacked boxes): then the lowest of 0.4-0.7 that keeps them.
Keys the user set (cfg yml or --set) are never changed.
"""
import math

import numpy as np

# per net: (alt-opt iterations per training image for RPN1, FRCN1, RPN2, FRCN2; end2end; lr)
NET_SCHEDULES = {
    # alt-opt 1.2x of 1.5/3/1/2: +0.02 mAP on cards; end2end 7.2 (alt-opt's time): +0.022 over 4.0
    "ELITE0": ((1.8, 3.6, 1.2, 2.4), 7.2, 0.005),
    "TINY": ((6.0, 8.0, 3.0, 4.0), 12.0, 0.01),
    "ZF": ((4.0, 4.0, 2.0, 2.0), 6.0, 0.001),
    "VGG16": ((4.0, 4.0, 2.0, 2.0), 6.0, 0.001),
}
REF_ALT_OPT = (80000, 40000, 80000, 40000)
REF_END2END = 70000
# schedules are never shorter than those of this many training images: the head (and TINY's
# trunk) start from random weights and need a number of SGD steps whatever the set's size
MIN_IMAGES = 300


def _round_to(x, m):
    return int(m * round(float(x) / m))


def data_stats(roidb):
    """Image and box figures of a gt roidb (unflipped entries)."""
    ents = [e for e in roidb if not e.get("flipped")]
    w = np.array([e["width"] for e in ents], np.float64)
    h = np.array([e["height"] for e in ents], np.float64)
    short, long_ = np.minimum(w, h), np.maximum(w, h)
    boxes, per_img, img_short, img_long = [], [], [], []
    for e, s, lg in zip(ents, short, long_):
        b = np.asarray(e["boxes"], np.float64).reshape(-1, 4)
        boxes.append(b)
        per_img.append(len(b))
        img_short += [s] * len(b)
        img_long += [lg] * len(b)
    b = np.concatenate(boxes) if boxes else np.zeros((0, 4))
    bw, bh = b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1
    return {"num_images": len(ents), "short": short, "long": long_, "box_w": bw, "box_h": bh,
            "box_img_short": np.array(img_short), "box_img_long": np.array(img_long),
            "objects_per_image": np.array(per_img)}


def _scale_of(short, long_, scale, max_size):
    s = scale / short
    return np.where(np.round(s * long_) > max_size, max_size / long_, s)


class _Keys:
    """The derived keys, around the ones the user set (never changed), and their values."""

    def __init__(self, cfg, user_keys):
        self.cfg, self.user, self.keys = cfg, set(user_keys), {}

    def put(self, k, v):
        if k not in self.user:
            self.keys[k] = v

    def get(self, k):
        if k in self.keys:
            return self.keys[k]
        node = self.cfg
        for p in k.split("."):
            node = node[p]
        return node


def derive(roidb, net, cfg, user_keys=(), flavour="alt_opt"):
    """-> (keys {dotted key: value}, notes [str]) for `roidb`, `net`; keys in user_keys kept."""
    st = data_stats(roidb)
    if not len(st["box_w"]):
        raise ValueError("no boxes to size the settings from")
    k = _Keys(cfg, user_keys)
    notes = [_derive_scale(st, k), _derive_anchors(st, roidb, k),
             _derive_schedule(st, net, flavour, k), _derive_proposals(st, k),
             _derive_test_nms(roidb, k)]
    return k.keys, notes


def _derive_scale(st, k):
    side = np.sqrt(st["box_w"] * st["box_h"])
    med_short = float(np.median(st["short"]))
    aspect = float(np.percentile(st["long"] / st["short"], 95))
    scale = min(600.0, med_short)
    p5_at = float(np.percentile(side * scale / st["box_img_short"], 5))
    if p5_at > 64:
        scale = max(min(320.0, med_short), scale * 64.0 / p5_at)
    scale = int(min(600, int(med_short), max(32, _round_to(scale, 32))))
    if "TRAIN.SCALES" in k.user:  # the user's scale rules, the test scale follows it
        scale = int(k.cfg.TRAIN.SCALES[0])
    max_size = max(scale, int(32 * math.ceil(scale * min(aspect, 3.0) / 32)))
    if "TRAIN.MAX_SIZE" in k.user:
        max_size = int(k.cfg.TRAIN.MAX_SIZE)
    for key, v in (("TRAIN.SCALES", (scale,)), ("TEST.SCALES", (scale,)),
                   ("TRAIN.MAX_SIZE", max_size), ("TEST.MAX_SIZE", max_size)):
        k.put(key, v)
    st["scale"], st["max_size"] = scale, max_size
    return (f"images: {st['num_images']} for training, short side median {med_short:.0f} px, "
            f"aspect 95th pct {aspect:.2f} -> TRAIN/TEST.SCALES ({scale},) MAX_SIZE {max_size}")


def _derive_anchors(st, roidb, k):
    s = _scale_of(st["box_img_short"], st["box_img_long"], st["scale"], st["max_size"])
    at = np.sqrt(st["box_w"] * st["box_h"]) * s
    p5, p95 = np.percentile(at, [5, 95])
    lo = max(0, int(math.floor(math.log2(max(p5, 8) / 16))))
    hi = max(lo + 2, int(math.ceil(math.log2(max(p95, 16) / 16))))
    k.put("ANCHOR_SCALES", tuple(float(2 ** e) if e < 0 else int(2 ** e)
                                 for e in range(lo, hi + 1)))
    ratio = st["box_h"] / st["box_w"]
    r5, r95 = np.percentile(ratio, [5, 95])
    ratios = (0.5, 1, 2)
    if r95 > 3 or r5 < 1 / 3:
        ratios = tuple(sorted(set([0.5, 1, 2] + ([0.25] if r5 < 1 / 3 else [])
                                  + ([4] if r95 > 3 else []))))
    k.put("ANCHOR_RATIOS", ratios)
    # RoIAlign: on cards +0.022 mAP and +0.125 AP@0.75 over RoI pooling (seed 0, docs/RESULTS.md)
    k.put("POOLING_MODE", "align")
    # the head's smooth L1 with torchvision's beta 1/9: AP@0.75 +0.018 / +0.013 on crowded
    # shapes (seeds 0 / 1), cards +0.010 over three seeds, mAP within the seed spread
    k.put("TRAIN.BBOX_SMOOTH_L1_SIGMA", 3.0)
    fit = _fit_anchor_scales(roidb, at, st, k)
    a = [16 * x for x in k.get("ANCHOR_SCALES")]
    return (f"objects: {len(at)}, side at the training scale {p5:.0f}-{p95:.0f} px "
            f"(5th-95th pct), h/w {r5:.2f}-{r95:.2f} -> ANCHOR_SCALES "
            f"{list(k.get('ANCHOR_SCALES'))} ({a[0]:g}-{a[-1]:g} px), ANCHOR_RATIOS "
            f"{list(k.get('ANCHOR_RATIOS'))}{fit}; POOLING_MODE {k.get('POOLING_MODE')}, the head's "
            f"smooth L1 sigma {k.get('TRAIN.BBOX_SMOOTH_L1_SIGMA'):g} (reference 1)")


# coverage is measured on at most this many images (evenly spaced); k-means anchors replace the
# powers of two only where those cover less than POOR_COVERAGE of the gt boxes and k-means covers
# MIN_COVERAGE_GAIN more: on cards (powers 56.5 %, k-means 85.8 %) the powers won by 0.025 mAP
# over two seeds, on crowded shapes (7.8 % / 11.9 %) k-means by 0.001 mAP, 0.014 AP@0.75
COVERAGE_IMAGES = 400
POOR_COVERAGE = 0.5
MIN_COVERAGE_GAIN = 0.02


def _fit_anchor_scales(roidb, sides_at_scale, st, k):
    """k-means anchor scales, kept when the powers of two cover less than POOR_COVERAGE of the
    gt boxes at IoU >= 0.7 and k-means MIN_COVERAGE_GAIN more. -> the note's tail (both
    coverages)."""
    if "ANCHOR_SCALES" in k.user:
        return ""
    from frcnn.anchor_fit import anchor_coverage, kmeans_scales

    ents = [e for e in roidb if not e.get("flipped")]
    step = max(1, -(-len(ents) // COVERAGE_IMAGES))
    images = []
    for e in ents[::step]:
        f = float(_scale_of(min(e["width"], e["height"]), max(e["width"], e["height"]),
                            st["scale"], st["max_size"]))
        images.append((round(e["height"] * f), round(e["width"] * f),
                       np.asarray(e["boxes"], np.float64).reshape(-1, 4) * f))
    ratios, powers = k.get("ANCHOR_RATIOS"), k.get("ANCHOR_SCALES")
    fitted = kmeans_scales(sides_at_scale, len(powers))
    before = anchor_coverage(images, ratios, powers)
    after = anchor_coverage(images, ratios, fitted)
    keep = before < POOR_COVERAGE and after >= before + MIN_COVERAGE_GAIN
    if keep:
        k.put("ANCHOR_SCALES", fitted)
    return (f"; gt boxes with an anchor at IoU >= 0.7: {before:.1%} with powers of two "
            f"{list(powers)}, {after:.1%} with k-means scales {list(fitted)} -> "
            + ("k-means kept" if keep else "powers of two kept" + (
                f" (they cover >= {POOR_COVERAGE:.0%})" if before >= POOR_COVERAGE else "")))


def _derive_schedule(st, net, flavour, k):
    n = st["num_images"]
    per_img, e2e, lr = NET_SCHEDULES.get(net.upper(), NET_SCHEDULES["VGG16"])
    n_sched = max(n, MIN_IMAGES)
    iters = tuple(int(min(ref, _round_to(f * n_sched, 10)))
                  for f, ref in zip(per_img, REF_ALT_OPT))
    k.put("ALT_OPT.ITERS", iters)
    k.put("ALT_OPT.STEPSIZES", tuple(_round_to(0.75 * i, 10) for i in k.get("ALT_OPT.ITERS")))
    k.put("END2END.MAX_ITERS", int(min(REF_END2END, _round_to(e2e * n_sched, 10))))
    k.put("END2END.STEPSIZE", _round_to(0.75 * k.get("END2END.MAX_ITERS"), 10))
    k.put("SOLVER.BASE_LR", lr)
    longest = max(k.get("ALT_OPT.ITERS")) if flavour == "alt_opt" else k.get("END2END.MAX_ITERS")
    k.put("TRAIN.SNAPSHOT_ITERS", max(100, _round_to(longest / 2, 100)))
    sized = f"{n} images" + (f" (scheduled as {MIN_IMAGES})" if n < MIN_IMAGES else "")
    if flavour == "alt_opt":
        note = (f"{net} on {sized} -> ALT_OPT.ITERS {list(k.get('ALT_OPT.ITERS'))}, "
                f"STEPSIZES {list(k.get('ALT_OPT.STEPSIZES'))}")
    else:
        note = (f"{net} on {sized} -> END2END.MAX_ITERS {k.get('END2END.MAX_ITERS')}, "
                f"STEPSIZE {k.get('END2END.STEPSIZE')}")
    return note + (f", BASE_LR {k.get('SOLVER.BASE_LR')}, SNAPSHOT_ITERS "
                   f"{k.get('TRAIN.SNAPSHOT_ITERS')}") + _plateau_note(k)


# the schedule of auto-sized folders. 'fixed' since the one measurement of 'plateau' (cards,
# ELITE0, seed 0, same anchors) lost: mAP 0.8903 / AP@0.75 0.49 against 0.9206 / 0.69
# (docs/RESULTS.md)
FOLDER_SCHEDULE = "fixed"


def _plateau_note(k):
    """SOLVER.SCHEDULE for the folder (FOLDER_SCHEDULE unless the user set it), as a note."""
    k.put("SOLVER.SCHEDULE", FOLDER_SCHEDULE)
    if k.get("SOLVER.SCHEDULE") != "plateau":
        return ("; SOLVER.SCHEDULE fixed (plateau, --set SOLVER.SCHEDULE plateau, lost 0.03 "
                "mAP on cards: docs/RESULTS.md)")
    P = k.cfg.SOLVER.PLATEAU
    return (f"; SOLVER.SCHEDULE plateau: those iterations x {P.CEILING:g} at most, a measure on "
            f"{P.VAL_FRACTION:.0%} (>= {P.VAL_MIN_IMAGES}) held-out training images every "
            f"10th of that, lr x0.1 after {P.PATIENCE} without a gain, stop at plateau "
            f"{P.MAX_PLATEAUS}, best weights kept")


def _derive_proposals(st, k):
    """Proposals and detections per image grow with the objects per image (crowded scenes)."""
    per95 = float(np.percentile(st["objects_per_image"], 95))
    most = int(np.max(st["objects_per_image"]))
    post = int(min(2000, max(300, 100 * math.ceil(15 * per95 / 100))))
    pre = int(min(12000, max(3000, 10 * post)))
    for key, v in (("TRAIN.RPN_PRE_NMS_TOP_N", pre), ("TRAIN.RPN_POST_NMS_TOP_N", post),
                   ("TEST.RPN_PRE_NMS_TOP_N", pre), ("TEST.RPN_POST_NMS_TOP_N", post),
                   ("ALT_OPT.PROPOSAL_PRE_NMS_TOP_N", pre),
                   ("ALT_OPT.PROPOSAL_POST_NMS_TOP_N", post)):
        k.put(key, v)
    k.put("TEST.MAX_PER_IMAGE", int(max(100, 10 * math.ceil(3 * most / 10))))
    # a proposal narrower than half the smallest objects (1st pct) matches none of them; the
    # reference's 16 original pixels would drop every proposal of a 12 px object
    p1 = float(np.percentile(np.minimum(st["box_w"], st["box_h"]), 1))
    min_size = int(min(16, max(1, math.floor(p1 / 2))))
    k.put("TRAIN.RPN_MIN_SIZE", min_size)
    k.put("TEST.RPN_MIN_SIZE", min_size)
    if per95 <= 20:
        k.put("TRAIN.RPN_BATCHSIZE", 128)
    # RoIs sampled per image: the flavour's reference value for a few objects (alt-opt 128 over
    # 2 images, end2end 128 over 1; 512 on cards lost 0.015 mAP), 16 per object (95th pct) in
    # crowded images, at most torchvision's 512
    ims = int(k.get("TRAIN.IMS_PER_BATCH"))
    ref = int(k.get("TRAIN.BATCH_SIZE")) // ims
    rois = int(min(max(512, ref), max(ref, 32 * math.ceil(16 * per95 / 32))))
    k.put("TRAIN.BATCH_SIZE", rois * ims)
    k.put("TRAIN.BG_THRESH_LO", 0.0)
    k.put("TRAIN.NUM_WORKERS", 0)
    return (f"objects per image 95th pct {per95:.0f}, most {most} -> proposals "
            f"{k.get('TRAIN.RPN_POST_NMS_TOP_N')} per image (15 x the 95th pct, >= 300), "
            f"TEST.MAX_PER_IMAGE {k.get('TEST.MAX_PER_IMAGE')} (3 x the most, >= 100), "
            f"RPN_BATCHSIZE {k.get('TRAIN.RPN_BATCHSIZE')}, RoIs per image {rois} (16 x the 95th "
            f"pct, {ref}-512: TRAIN.BATCH_SIZE {k.get('TRAIN.BATCH_SIZE')}); objects' shorter side 1st pct "
            f"{p1:.0f} px -> RPN_MIN_SIZE {k.get('TRAIN.RPN_MIN_SIZE')} (16 in the reference)")


# test-time NMS: the reference's 0.3 unless more than this share of the gt boxes overlaps a box
# of its own class above it (NMS would remove one of the two even from perfect detections)
NMS_CHOICES = (0.3, 0.4, 0.5, 0.6, 0.7)
MAX_GT_LOST_TO_NMS = 0.01


def same_class_overlap(roidb):
    """-> [G] the highest IoU of each gt box with another gt box of its class in its image
    (VOC +1 areas), over the unflipped entries."""
    from frcnn.utils.cython_bbox import bbox_overlaps

    best = []
    for e in roidb:
        if e.get("flipped"):
            continue
        b = np.asarray(e["boxes"], np.float64).reshape(-1, 4)
        c = np.asarray(e["gt_classes"]).reshape(-1)[:len(b)]
        b = b[c > 0]
        c = c[c > 0]
        if len(b) < 2:
            best += [0.0] * len(b)
            continue
        iou = bbox_overlaps(np.ascontiguousarray(b), np.ascontiguousarray(b))
        iou[c[:, None] != c[None, :]] = 0
        np.fill_diagonal(iou, 0)
        best += list(iou.max(axis=1))
    return np.asarray(best, np.float64)


def _derive_test_nms(roidb, k):
    best = same_class_overlap(roidb)
    if not len(best):
        return "no gt boxes to size TEST.NMS from"
    shares = [(t, float(np.mean(best > t))) for t in NMS_CHOICES]
    nms = next((t for t, s in shares if s <= MAX_GT_LOST_TO_NMS), NMS_CHOICES[-1])
    k.put("TEST.NMS", nms)
    return (f"gt boxes overlapping one of their class above IoU 0.3 / 0.5: {shares[0][1]:.1%} / "
            f"{shares[2][1]:.1%} -> TEST.NMS {k.get('TEST.NMS')} (the lowest of "
            f"{list(NMS_CHOICES)} that would remove <= {MAX_GT_LOST_TO_NMS:.0%} of them: "
            f"{dict(shares)[nms]:.1%})")


def apply(keys, cfg):
    """Set dotted keys in cfg (in place) -> cfg."""
    for k, v in keys.items():
        node = cfg
        parts = k.split(".")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = v
    return cfg


def _plain(v):
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def to_yaml(keys, notes=(), extra=None):
    """A cfg yml of the dotted `keys` (+ `extra` top-level keys), the notes as comments."""
    import yaml

    tree = {}
    for k, v in sorted({**(extra or {}), **keys}.items()):
        node = tree
        parts = k.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = _plain(v)
    head = "".join(f"# {n}\n" for n in notes)
    return ("# chosen by frcnn.autocfg (tools/auto_cfg.py) from the data; rerun with --cfg this "
            "file\n" + head + yaml.safe_dump(tree, sort_keys=True, default_flow_style=None))
