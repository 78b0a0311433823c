#!/usr/bin/env python
"""Selective Search proposals for an image set (the paper's SS baseline for Fast R-CNN).

  python tools/selective_search.py --imdb voc_2007_test --out ss_test.pkl [--mode fast]
      [--top-k 2000] [--max-side 500] [--workers N]

Writes a pickle of per-image [K, 4] float32 boxes (x1, y1, x2, y2, 0-based original-image pixels,
imdb order): the input of tools/train_net.py --proposals, tools/test_net.py --proposals and
tools/eval_recall.py --proposals. Runs one process per core; results are cached under
<DATA_DIR>/cache keyed by the image files and settings, so a rerun is instant.
Needs opencv-contrib-python-headless (cv2.ximgproc); the error says how to install it.
"""
import argparse
import os
import pickle
import sys
import time

import _init_paths  # noqa: F401
from frcnn.cli import add_common_args, setup_cfg


def main(argv=None):
    p = argparse.ArgumentParser(description="Selective Search proposals for an image set")
    p.add_argument("--imdb", required=True)
    p.add_argument("--out", required=True, help="output pickle")
    p.add_argument("--mode", choices=("fast", "quality"), default="fast")
    p.add_argument("--top-k", type=int, default=2000)
    p.add_argument("--max-side", type=int, default=None,
                   help="run on images resized so the long side is at most this (faster)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    p.add_argument("--num-images", type=int, default=None, help="only the first N images")
    add_common_args(p)
    args = p.parse_args(argv)
    cfg = setup_cfg(args)

    import numpy as np

    from frcnn.datasets.factory import get_imdb
    from frcnn.utils.selective_search import imdb_selective_search, require_ximgproc

    try:
        require_ximgproc()
    except ImportError as e:
        sys.exit(str(e))
    imdb = get_imdb(args.imdb, cfg)
    if args.num_images:
        imdb._image_index = imdb.image_index[:args.num_images]
    t0 = time.perf_counter()
    boxes = imdb_selective_search(imdb, args.mode, args.top_k, args.max_side, args.workers)
    dt = time.perf_counter() - t0
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".tmp", "wb") as f:
        pickle.dump(boxes, f, pickle.HIGHEST_PROTOCOL)
    os.replace(args.out + ".tmp", args.out)
    print(f"wrote {args.out}: {len(boxes)} images, {np.mean([len(b) for b in boxes]):.0f} "
          f"boxes/image, {dt:.1f}s ({1000 * dt / max(1, len(boxes)):.0f} ms/image wall incl. cache)")
    return args.out


if __name__ == "__main__":
    main()
