"""Settings derived from a data set and the net, for folders without a hand-written cfg.

    keys, notes = derive(roidb, "ELITE0", cfg)      # {'TRAIN.SCALES': (320,), ...}, [str]
    text = to_yaml(keys, notes)                      # the cfg written next to the results

Rules (each printed with the figures it came from):
- scale: the median short image side, capped at 600 (the paper's), lowered (not below 320) while
  the 5th-percentile object stays >= 64 px, since CPU time grows with the pixels; a multiple of 32
  unless that would exceed the images. MAX_SIZE: the scale times the 95th-percentile aspect
  ratio of the images. A user TRAIN.SCALES / MAX_SIZE is used for TEST too and for the anchors.
- ANCHOR_SCALES: powers of two whose anchors (16 * scale px) span the 5th-95th percentile object
  side at the training scale; ANCHOR_RATIOS widened only when objects are clearly more elongated
  than 1:2.
- iterations: proportional to the number of training images (epochs of the flipped set), per net
  (a pretrained ELITE0 needs few; TINY trains from scratch), as for 300 images when there are
  fewer (a head from scratch needs that many steps), capped by the reference schedule; lr steps
  at 75 %; SNAPSHOT_ITERS half of the longest stage (an interrupted run resumes).
- proposals: 300 per image (2000 in the reference) when images hold <= 20 objects.
Keys the user set (cfg yml or --set) are never changed.
"""
import math

import numpy as np

# per net: (alt-opt iterations per training image for RPN1, FRCN1, RPN2, FRCN2; end2end; lr)
NET_SCHEDULES = {
    "ELITE0": ((1.8, 3.6, 1.2, 2.4), 4.0, 0.005),   # 1.2x of 1.5/3/1/2: +0.02 mAP on cards
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


def derive(roidb, net, cfg, user_keys=(), flavour="alt_opt"):
    """-> (keys {dotted key: value}, notes [str]) for `roidb`, `net`; keys in user_keys kept."""
    st = data_stats(roidb)
    n = st["num_images"]
    keys, notes = {}, []
    user = set(user_keys)

    def put(k, v):
        if k not in user:
            keys[k] = v

    def get(k):
        if k in keys:
            return keys[k]
        node = cfg
        for p in k.split("."):
            node = node[p]
        return node

    side = np.sqrt(st["box_w"] * st["box_h"])
    if not len(side):
        raise ValueError("no boxes to size the settings from")
    # -- scale
    med_short = float(np.median(st["short"]))
    aspect = float(np.percentile(st["long"] / st["short"], 95))
    scale = min(600.0, med_short)
    p5_at = float(np.percentile(side * scale / st["box_img_short"], 5))
    if p5_at > 64:
        scale = max(min(320.0, med_short), scale * 64.0 / p5_at)
    scale = int(min(600, int(med_short), max(32, _round_to(scale, 32))))
    if "TRAIN.SCALES" in user:  # the user's scale rules, the test scale follows it
        scale = int(cfg.TRAIN.SCALES[0])
    max_size = max(scale, int(32 * math.ceil(scale * min(aspect, 3.0) / 32)))
    if "TRAIN.MAX_SIZE" in user:
        max_size = int(cfg.TRAIN.MAX_SIZE)
    put("TRAIN.SCALES", (scale,))
    put("TEST.SCALES", (scale,))
    put("TRAIN.MAX_SIZE", max_size)
    put("TEST.MAX_SIZE", max_size)
    notes.append(f"images: {n} for training, short side median {med_short:.0f} px, aspect "
                 f"95th pct {aspect:.2f} -> TRAIN/TEST.SCALES ({scale},) MAX_SIZE {max_size}")
    # -- anchors
    s = _scale_of(st["box_img_short"], st["box_img_long"], scale, max_size)
    at = side * s
    p5, p95 = np.percentile(at, [5, 95])
    lo = max(0, int(math.floor(math.log2(max(p5, 8) / 16))))
    hi = max(lo + 2, int(math.ceil(math.log2(max(p95, 16) / 16))))
    put("ANCHOR_SCALES", tuple(float(2 ** k) if k < 0 else int(2 ** k) for k in range(lo, hi + 1)))
    ratio = st["box_h"] / st["box_w"]
    r5, r95 = np.percentile(ratio, [5, 95])
    ratios = (0.5, 1, 2)
    if r95 > 3 or r5 < 1 / 3:
        ratios = tuple(sorted(set([0.5, 1, 2] + ([0.25] if r5 < 1 / 3 else [])
                                  + ([4] if r95 > 3 else []))))
    put("ANCHOR_RATIOS", ratios)
    a = [16 * x for x in get("ANCHOR_SCALES")]
    notes.append(f"objects: {len(side)}, side at the training scale {p5:.0f}-{p95:.0f} px "
                 f"(5th-95th pct), h/w {r5:.2f}-{r95:.2f} -> ANCHOR_SCALES "
                 f"{list(get('ANCHOR_SCALES'))} ({a[0]:g}-{a[-1]:g} px), ANCHOR_RATIOS "
                 f"{list(get('ANCHOR_RATIOS'))}")
    # -- schedule
    per_img, e2e, lr = NET_SCHEDULES.get(net.upper(), NET_SCHEDULES["VGG16"])
    n_sched = max(n, MIN_IMAGES)
    iters = tuple(int(min(ref, _round_to(f * n_sched, 10)))
                  for f, ref in zip(per_img, REF_ALT_OPT))
    put("ALT_OPT.ITERS", iters)
    put("ALT_OPT.STEPSIZES", tuple(_round_to(0.75 * i, 10) for i in get("ALT_OPT.ITERS")))
    e2e_iters = int(min(REF_END2END, _round_to(e2e * n_sched, 10)))
    put("END2END.MAX_ITERS", e2e_iters)
    put("END2END.STEPSIZE", _round_to(0.75 * get("END2END.MAX_ITERS"), 10))
    put("SOLVER.BASE_LR", lr)
    longest = max(get("ALT_OPT.ITERS")) if flavour == "alt_opt" else get("END2END.MAX_ITERS")
    put("TRAIN.SNAPSHOT_ITERS", max(100, _round_to(longest / 2, 100)))
    sized = f"{n} images" + (f" (scheduled as {MIN_IMAGES})" if n < MIN_IMAGES else "")
    if flavour == "alt_opt":
        notes.append(f"{net} on {sized} -> ALT_OPT.ITERS {list(get('ALT_OPT.ITERS'))}, "
                     f"STEPSIZES {list(get('ALT_OPT.STEPSIZES'))}, BASE_LR {get('SOLVER.BASE_LR')}, "
                     f"SNAPSHOT_ITERS {get('TRAIN.SNAPSHOT_ITERS')}")
    else:
        notes.append(f"{net} on {sized} -> END2END.MAX_ITERS {get('END2END.MAX_ITERS')}, "
                     f"STEPSIZE {get('END2END.STEPSIZE')}, BASE_LR {get('SOLVER.BASE_LR')}, "
                     f"SNAPSHOT_ITERS {get('TRAIN.SNAPSHOT_ITERS')}")
    # -- proposals and small-data sampling
    per95 = float(np.percentile(st["objects_per_image"], 95))
    if per95 <= 20:
        for k, v in (("TRAIN.RPN_PRE_NMS_TOP_N", 3000), ("TRAIN.RPN_POST_NMS_TOP_N", 300),
                     ("TEST.RPN_PRE_NMS_TOP_N", 3000), ("TEST.RPN_POST_NMS_TOP_N", 300),
                     ("ALT_OPT.PROPOSAL_PRE_NMS_TOP_N", 3000),
                     ("ALT_OPT.PROPOSAL_POST_NMS_TOP_N", 300)):
            put(k, v)
        put("TRAIN.RPN_BATCHSIZE", 128)
    put("TRAIN.BG_THRESH_LO", 0.0)
    put("TRAIN.NUM_WORKERS", 0)
    notes.append(f"objects per image 95th pct {per95:.0f} -> proposals "
                 f"{get('TRAIN.RPN_POST_NMS_TOP_N')} per image, RPN_BATCHSIZE "
                 f"{get('TRAIN.RPN_BATCHSIZE')}")
    return keys, notes


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
