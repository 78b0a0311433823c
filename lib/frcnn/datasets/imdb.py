"""Image database base class (py-faster-rcnn's `imdb`), annotation cache and image helpers."""
import hashlib
import os
import pickle
import struct
import tempfile

import cv2
import numpy as np


from frcnn.errors import DataError

# A data set problem the user has to fix; the message names the file, the object and the fix.
DatasetError = DataError


class imdb:
    """An image set with ground truth.

    Subclasses set `_classes` (with '__background__' at 0), `_image_index` and implement
    `image_path_from_index(index)`, `gt_roidb()` and `evaluate_detections(all_boxes, output_dir)`.
    """

    def __init__(self, name, cfg, classes=None):
        self._name = name
        self.cfg = cfg
        self._classes = tuple(classes) if classes is not None else ()
        self._image_index = []
        self._roidb = None
        self.use_07_metric = True
        self.aps = {}  # per-class AP of the last evaluate_detections

    # images without objects train as negatives under TRAIN.KEEP_EMPTY_IMAGES 'auto': the
    # labelled folders say yes; the paper's sets no (the reference dropped them)
    keep_empty_images = False

    # -- names py-faster-rcnn users know ------------------------------------------------------
    @property
    def name(self):
        return self._name

    @property
    def classes(self):
        return self._classes

    @property
    def num_classes(self):
        return len(self._classes)

    @property
    def image_index(self):
        return self._image_index

    @property
    def num_images(self):
        return len(self._image_index)

    @property
    def class_to_ind(self):
        return {c: i for i, c in enumerate(self._classes)}

    @property
    def cache_path(self):
        path = os.path.join(self.cfg.DATA_DIR, "cache")
        os.makedirs(path, exist_ok=True)
        return path

    def image_path_at(self, i):
        return self.image_path_from_index(self._image_index[i])

    def image_path_from_index(self, index):
        raise NotImplementedError

    def gt_roidb(self):
        """list of dicts, one per image in `image_index` order (see roi_data.roidb for keys)."""
        raise NotImplementedError

    @property
    def roidb(self):
        """The gt roidb, loaded once; roi_data.roidb adds flips, proposals and derived fields."""
        if self._roidb is None:
            self._roidb = self.gt_roidb()
        return self._roidb

    @roidb.setter
    def roidb(self, value):
        self._roidb = value

    def evaluate_detections(self, all_boxes, output_dir):
        """all_boxes[cls][img]: [D, 5] (x1, y1, x2, y2, score), 0-based; prints APs, returns mAP."""
        raise NotImplementedError

    def evaluate_recall(self, candidate_boxes=None, thresholds=None, area="all", limit=None):
        """Proposal recall against the gt of this imdb (py-faster-rcnn's imdb.evaluate_recall).

        candidate_boxes: list (imdb order) of [P, 4] original-image boxes, best first; None uses
        the non-gt rows of self.roidb. limit: keep the first `limit` boxes per image. area: a key
        of RECALL_AREAS (gt box area range, area = (w+1)(h+1) or 'seg_areas').
        -> dict 'ar' (mean recall over the thresholds), 'recalls' [T], 'thresholds' [T]
           (default 0.5:0.05:0.95), 'gt_overlaps' [G] sorted, 'num_pos' G.
        """
        roidb = self.roidb
        if candidate_boxes is not None and len(candidate_boxes) < len(roidb):
            raise ValueError(f"{len(candidate_boxes)} proposal arrays for {len(roidb)} images of "
                             f"{self.name}; generate proposals for this image set")
        return evaluate_recall(roidb, candidate_boxes, thresholds, area, limit)

    def competition_mode(self, on):
        """py-faster-rcnn API; results files here are never salted or removed, so a no-op."""

    def __repr__(self):
        return f"<imdb {self.name}: {self.num_images} images, {self.num_classes - 1} classes>"


def gt_entry(objects, class_to_ind, width, height):
    """The gt roidb entry of one image from its checked objects [(name, (x1, y1, x2, y2) 0-based
    inclusive, difficult)]; difficult objects are left out (counted in 'num_difficult').

    -> {'boxes' [G,4] f32, 'gt_classes' [G] i32, 'gt_overlaps' [G,K] f32, 'seg_areas' [G] f32,
    'flipped' False, 'width', 'height', 'num_difficult'}
    """
    kept = [(n, b) for n, b, d in objects if not d]
    g = len(kept)
    boxes = np.array([b for _, b in kept], dtype=np.float32).reshape(g, 4)
    gt_classes = np.array([class_to_ind[n] for n, _ in kept], dtype=np.int32)
    overlaps = np.zeros((g, len(class_to_ind)), dtype=np.float32)
    overlaps[np.arange(g), gt_classes] = 1.0
    seg_areas = ((boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)).astype(np.float32)
    return {"boxes": boxes, "gt_classes": gt_classes, "gt_overlaps": overlaps,
            "seg_areas": seg_areas, "flipped": False, "width": int(width), "height": int(height),
            "num_difficult": len(objects) - g}


def check_all_boxes(all_boxes, num_classes, num_images):
    if len(all_boxes) != num_classes:
        raise ValueError(f"all_boxes has {len(all_boxes)} class lists, expected {num_classes} "
                         "(index 0 = background, unused)")
    for c in range(1, num_classes):
        if len(all_boxes[c]) != num_images:
            raise ValueError(f"all_boxes[{c}] has {len(all_boxes[c])} entries, expected one per "
                             f"image ({num_images})")


# -- proposal recall --------------------------------------------------------------------------
# gt-box area ranges (pixels^2) of the reference's evaluate_recall
RECALL_AREAS = {"all": (0, 1e5 ** 2), "small": (0, 32 ** 2), "medium": (32 ** 2, 96 ** 2),
                "large": (96 ** 2, 1e5 ** 2), "96-128": (96 ** 2, 128 ** 2),
                "128-256": (128 ** 2, 256 ** 2), "256-512": (256 ** 2, 512 ** 2),
                "512-inf": (512 ** 2, 1e5 ** 2)}


def greedy_gt_overlaps(boxes, gt_boxes):
    """IoU with which each gt box is covered under one-to-one greedy matching.

    Repeatedly take the (proposal, gt) pair of highest IoU among unused ones and retire both;
    a proposal covers at most one gt. boxes [P, 4], gt_boxes [G, 4] -> [G] float64, in order of
    matching (best covered first) as the reference; gt left without a proposal (P < G) get 0,
    where the reference stops on an assertion.
    """
    from frcnn.utils.cython_bbox import bbox_overlaps

    g = len(gt_boxes)
    out = np.zeros(g)
    if g == 0 or len(boxes) == 0:
        return out
    ov = bbox_overlaps(np.ascontiguousarray(boxes, dtype=np.float64),
                       np.ascontiguousarray(gt_boxes, dtype=np.float64))
    for j in range(min(g, len(boxes))):
        # as the reference: the gt with the largest best IoU, then its first best proposal
        gi = int(ov.max(axis=0).argmax())
        bi = int(ov[:, gi].argmax())
        out[j] = ov[bi, gi]
        ov[bi, :] = -1
        ov[:, gi] = -1
    return out


def evaluate_recall(roidb, candidate_boxes=None, thresholds=None, area="all", limit=None):
    """Recall of proposals over a roidb; see imdb.evaluate_recall (same return dict).

    Gt rows: gt_classes > 0 and max gt_overlaps == 1 (crowd rows, -1, are not counted). Every
    gt in the area range counts in num_pos, also on images without proposals (a miss there).
    """
    if area not in RECALL_AREAS:
        raise ValueError(f"unknown area {area!r}; use one of {', '.join(RECALL_AREAS)}")
    lo, hi = RECALL_AREAS[area]
    covered = []
    num_pos = 0
    for i, e in enumerate(roidb):
        gt_cls = np.asarray(e["gt_classes"])
        go = np.asarray(e["gt_overlaps"])
        if hasattr(e["gt_overlaps"], "toarray"):
            go = e["gt_overlaps"].toarray()
        max_go = go.max(axis=1) if go.size else np.zeros(len(gt_cls))
        gt_inds = np.where((gt_cls > 0) & (max_go == 1))[0]
        gt_boxes = np.asarray(e["boxes"], dtype=np.float64)[gt_inds]
        if "seg_areas" in e:
            areas = np.asarray(e["seg_areas"], dtype=np.float64)[gt_inds]
        else:
            areas = (gt_boxes[:, 2] - gt_boxes[:, 0] + 1) * (gt_boxes[:, 3] - gt_boxes[:, 1] + 1)
        gt_boxes = gt_boxes[(areas >= lo) & (areas <= hi)]
        num_pos += len(gt_boxes)
        if candidate_boxes is None:
            boxes = np.asarray(e["boxes"])[gt_cls == 0]
        else:
            boxes = np.asarray(candidate_boxes[i], dtype=np.float64)
            boxes = boxes[:, :4] if boxes.size else np.zeros((0, 4))  # [P, 5] with scores too
        if len(boxes) == 0:
            continue
        if limit is not None and len(boxes) > limit:
            boxes = boxes[:limit]
        covered.append(greedy_gt_overlaps(boxes, gt_boxes))
    gt_overlaps = np.sort(np.concatenate(covered)) if covered else np.zeros(0)
    if thresholds is None:
        thresholds = np.arange(0.5, 0.95 + 1e-5, 0.05)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    recalls = np.array([(gt_overlaps >= t).sum() / max(num_pos, 1) for t in thresholds])
    return {"ar": float(recalls.mean()) if len(recalls) else 0.0, "recalls": recalls,
            "thresholds": thresholds, "gt_overlaps": gt_overlaps, "num_pos": num_pos}


# -- annotation cache -------------------------------------------------------------------------
CACHE_VERSION = 1


def file_signature(paths):
    """sha1 over (path, mtime_ns, size) of every path; a missing file signs as missing."""
    h = hashlib.sha1()
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_mtime_ns}\0{st.st_size}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()


def cache_key(*parts):
    h = hashlib.sha1(f"v{CACHE_VERSION}".encode())
    for p in parts:
        h.update(repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def cached(cache_dir, prefix, key, build, classes=()):
    """Return build() cached in <cache_dir>/<prefix>_<key>.pkl; older caches of prefix are removed.

    The key must change whenever the inputs change (callers hash file lists and mtimes), so a cache
    is never stale. Writes are atomic (tmp file + rename), so concurrent processes are safe.
    Caches load through safe_io.load_cache (numpy arrays, plain containers and `classes` only);
    a refused, truncated or corrupt one is rebuilt.
    """
    from frcnn.safe_io import load_cache

    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"{prefix}_{key}.pkl")
    if os.path.exists(path):
        value = load_cache(path, "cache", classes)
        if value is not None:
            return value
    value = build()
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{prefix}_", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        pickle.dump(value, f, pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)
    for name in os.listdir(cache_dir):
        if name.startswith(prefix + "_") and name.endswith(".pkl") and name != os.path.basename(path):
            rest = name[len(prefix) + 1:-4]
            if len(rest) == 16 and all(ch in "0123456789abcdef" for ch in rest):
                try:
                    os.remove(os.path.join(cache_dir, name))
                except OSError:
                    pass
    return value


# -- images -----------------------------------------------------------------------------------
def read_image(path):
    """BGR uint8 [H, W, 3] for any image cv2 reads (grayscale, PNG with alpha, 16-bit -> 3-ch BGR)."""
    im = cv2.imread(path, cv2.IMREAD_COLOR)
    if im is None:
        if not os.path.exists(path):
            raise DatasetError(f"{path}: image file not found; add it or remove its id from the "
                               "image set")
        raise DatasetError(f"{path}: cv2 cannot decode this image; re-save it as JPEG or PNG")
    return im


def _jpeg_size(f):
    """(w, h, exif_orientation) from JPEG markers, or None."""
    f.seek(2)
    orientation = 1
    while True:
        b = f.read(1)
        while b and b != b"\xff":
            b = f.read(1)
        while b == b"\xff":
            b = f.read(1)
        if not b:
            return None
        marker = b[0]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            continue
        seg = f.read(2)
        if len(seg) < 2:
            return None
        length = struct.unpack(">H", seg)[0]
        if marker == 0xE1:
            data = f.read(length - 2)
            o = _exif_orientation(data)
            if o:
                orientation = o
            continue
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            data = f.read(5)
            h, w = struct.unpack(">HH", data[1:5])
            return w, h, orientation
        f.seek(length - 2, 1)


def _exif_orientation(data):
    if not data.startswith(b"Exif\0\0"):
        return None
    t = data[6:]
    if len(t) < 8:
        return None
    end = "<" if t[:2] == b"II" else ">"
    try:
        off = struct.unpack(end + "I", t[4:8])[0]
        n = struct.unpack(end + "H", t[off:off + 2])[0]
        for i in range(n):
            e = t[off + 2 + 12 * i: off + 14 + 12 * i]
            tag, typ = struct.unpack(end + "HH", e[:4])
            if tag == 0x0112:
                return struct.unpack(end + "H", e[8:10])[0]
    except (struct.error, IndexError):
        return None
    return None


def image_size(path):
    """(width, height) as cv2.imread will see it (EXIF orientation applied), read from the header
    for JPEG/PNG, else by decoding. Raises DatasetError when missing or unreadable."""
    try:
        with open(path, "rb") as f:
            head = f.read(26)
            if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
                w, h = struct.unpack(">II", head[16:24])
                return int(w), int(h)
            if head[:2] == b"\xff\xd8":
                r = _jpeg_size(f)
                if r is not None:
                    w, h, o = r
                    return (h, w) if o in (5, 6, 7, 8) else (w, h)
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file not found; add it or remove its id from the "
                           "image set") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read image ({e.strerror})") from None
    im = read_image(path)
    return im.shape[1], im.shape[0]

