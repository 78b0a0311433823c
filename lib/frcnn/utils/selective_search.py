"""Selective Search proposals (Uijlings et al.) with OpenCV's implementation, for the paper's
SS + Fast R-CNN baseline: cv2.ximgproc.segmentation, 'fast' or 'quality' mode, top K boxes.

cv2.ximgproc ships only in the contrib OpenCV wheel (opencv-contrib-python-headless, the one
OpenCV wheel of requirements.txt; it holds the whole base cv2 API too).
"""
import os

import numpy as np

MISSING = ("Selective Search needs OpenCV's contrib modules (cv2.ximgproc), which this cv2 lacks. "
           "Install the contrib wheel instead of the base one (same version, same `import cv2`):\n"
           "  pip uninstall -y opencv-python-headless opencv-python\n"
           "  pip install opencv-contrib-python-headless")


def require_ximgproc():
    import cv2

    if not hasattr(cv2, "ximgproc"):
        raise ImportError(MISSING)
    return cv2


def selective_search(im, mode="fast", top_k=2000, max_side=None):
    """Proposals for one BGR uint8 image [H, W, 3].

    mode: 'fast' (the paper's setting, one colour space set) or 'quality'. max_side: run on a copy
    whose long side is at most this (faster; boxes mapped back), None = full size.
    -> [K, 4] float32 (x1, y1, x2, y2), 0-based inclusive original-image pixels, K <= top_k, in
    OpenCV's output order (the first K as OpenCV's own sample does).
    """
    cv2 = require_ximgproc()
    h, w = im.shape[:2]
    scale = 1.0
    if max_side and max(h, w) > max_side:
        scale = max_side / float(max(h, w))
        im = cv2.resize(im, (max(1, round(w * scale)), max(1, round(h * scale))),
                        interpolation=cv2.INTER_AREA)
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(im)
    if mode == "fast":
        ss.switchToSelectiveSearchFast()
    elif mode == "quality":
        ss.switchToSelectiveSearchQuality()
    else:
        raise ValueError(f"selective search mode {mode!r}: use 'fast' or 'quality'")
    rects = np.asarray(ss.process(), dtype=np.float64).reshape(-1, 4)[:top_k]  # x, y, w, h
    boxes = np.empty_like(rects)
    boxes[:, 0] = rects[:, 0] / scale
    boxes[:, 1] = rects[:, 1] / scale
    boxes[:, 2] = (rects[:, 0] + rects[:, 2]) / scale - 1
    boxes[:, 3] = (rects[:, 1] + rects[:, 3]) / scale - 1
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, w - 1)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, h - 1)
    return boxes.astype(np.float32)


def _one(job):
    path, mode, top_k, max_side = job
    import cv2

    cv2.setNumThreads(1)  # one image per process
    im = cv2.imread(path)
    if im is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return selective_search(im, mode, top_k, max_side)


def _worker_init():
    """Pool workers die with their parent (Linux): a killed run (e.g. a test timeout) must not
    leave workers blocked on the task queue."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def image_set_proposals(paths, mode="fast", top_k=2000, max_side=None, workers=None,
                        log_every=50):
    """selective_search over image files, in parallel processes -> list of [K, 4] float32."""
    require_ximgproc()
    jobs = [(p, mode, top_k, max_side) for p in paths]
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(jobs) <= 1:
        out = []
        for k, j in enumerate(jobs, 1):
            out.append(_one(j))
            if k % log_every == 0 or k == len(jobs):
                print(f"selective search: {k}/{len(jobs)}", flush=True)
        return out
    import multiprocessing as mp

    # spawn, not fork: a forked child that resizes cv2's thread pool (setNumThreads) after the
    # parent used it deadlocks (seen: the SS test hung for 10 minutes)
    ctx = mp.get_context("spawn")
    out = []
    with ctx.Pool(workers, initializer=_worker_init) as pool:
        for k, b in enumerate(pool.imap(_one, jobs, chunksize=1), 1):
            out.append(b)
            if k % log_every == 0 or k == len(jobs):
                print(f"selective search: {k}/{len(jobs)} ({workers} processes)", flush=True)
    return out


def imdb_selective_search(imdb, mode="fast", top_k=2000, max_side=None, workers=None,
                          cache_dir=None):
    """Selective Search boxes for every image of `imdb` (imdb order), cached in cache_dir
    (default <DATA_DIR>/cache) by image files (path, mtime, size) and settings."""
    from frcnn.datasets.imdb import cache_key, cached, file_signature

    paths = [imdb.image_path_at(i) for i in range(imdb.num_images)]
    key = cache_key("selective_search", mode, top_k, max_side, file_signature(paths))
    cache_dir = cache_dir or imdb.cache_path
    prefix = f"{imdb.name.replace(':', '_').replace('/', '_')}_ss_{mode}"
    return cached(cache_dir, prefix, key,
                  lambda: image_set_proposals(paths, mode, top_k, max_side, workers))
