#!/usr/bin/env python
"""Check a data set before training: every annotation and image is read once and every problem is
listed (file, object, what is wrong, how to fix), then a summary. Exit status 1 on any error.

  python tools/check_dataset.py /path/to/labelled/folder             # any format: VOC, labelImg,
                                                                     # YOLO, LabelMe, CVAT, COCO
  python tools/check_dataset.py voc_folder:/path/to/VOCfolder        # every split of the folder
  python tools/check_dataset.py voc_folder:/path/to/VOCfolder:trainval
  python tools/check_dataset.py coco_json:annotations.json:images/
  python tools/check_dataset.py cards shapes_train voc_2007_test [--cfg yml] [--set K V ...]

A plain path (or yolo:, labelme:, cvat:, labelimg:, coco_json:<folder or json>) is checked whole
(split all), after a line naming the format found and the splits; a VOC devkit split by split.
Errors: unreadable or truncated XML, non-numeric or non-finite coordinates, xmax < xmin, boxes
outside the image, missing, empty, undecodable or truncated images, unknown classes, empty sets,
duplicate ids. Warnings: tiny and duplicate boxes, classes with few objects, images without
objects, classes whose boxes fit no anchor at the training scale (cfg TRAIN.SCALES, ANCHOR_*).
Training runs the same checks (cached in DATA_DIR/cache) and stops before its first iteration.
"""
import argparse
import os
import sys

import _init_paths  # noqa: F401
from _init_paths import ROOT
from frcnn.cli import add_common_args, run_main, setup_cfg


def cards_dir():
    """CARDS_DIR, else shared/data/cards_voc/VOCcards beside the repository (or one level up)."""
    if os.environ.get("CARDS_DIR"):
        return os.environ["CARDS_DIR"]
    cands = [os.path.join(ROOT, *up, "shared", "data", "cards_voc", "VOCcards")
             for up in (("..",), ("..", ".."))]
    return next((c for c in cands if os.path.isdir(c)), cands[0])


def voc_splits(path):
    """The splits of a VOC folder worth checking: trainval + test when present (train and val are
    inside trainval), else every ImageSets/Main/*.txt."""
    main = os.path.join(path, "ImageSets", "Main")
    have = sorted(f[:-4] for f in os.listdir(main) if f.endswith(".txt")) if os.path.isdir(main) else []
    if "trainval" in have:
        have = [s for s in have if s not in ("train", "val")]
    return have or ["trainval"]


def expand(spec):
    """A spec -> list of imdb names (voc_folder without split: one per split)."""
    from frcnn.datasets.factory import _split_folder_spec

    if spec == "cards":
        spec = "voc_folder:" + os.path.normpath(cards_dir())
    from frcnn.datasets.factory import folder_spec

    plain = folder_spec(spec) if not spec.startswith("voc_folder:") else None
    if plain is not None:
        path, split, fmt = plain
        if spec.rstrip("/").endswith(path.rstrip("/")):  # no split given: the whole folder
            if (fmt or _format_or_none(path)) == "voc":
                return [f"voc_folder:{path}:{s}" for s in voc_splits(path)]
            return [f"{spec}:all"]
        return [spec]
    if spec.startswith("voc_folder:"):
        rest = spec[len("voc_folder:"):]
        if os.path.isdir(rest):
            return [f"voc_folder:{rest}:{s}" for s in voc_splits(rest)]
        path, split = _split_folder_spec(rest)
        return [f"voc_folder:{path}:{split}"]
    return [spec]


def _format_or_none(path):
    """The detected format, or None when there is none (get_imdb then reports why)."""
    from frcnn.datasets import DatasetError
    from frcnn.datasets.formats import detect_format

    try:
        return detect_format(path)
    except DatasetError:
        return None


def check_one(name, cfg, decode):
    """-> (Report, image ids or None). Uses the training's cached check when the set loads."""
    from frcnn.datasets import DatasetError, get_imdb
    from frcnn.datasets.factory import _split_folder_spec
    from frcnn.datasets.validate import Report, cached_report, check_voc

    try:
        imdb = get_imdb(name, cfg)
    except DatasetError as e:
        if name.startswith("voc_folder:"):  # list everything, not just what stopped the loader
            path, split = _split_folder_spec(name[len("voc_folder:"):])
            classes = None
            cfile = os.path.join(path, "classes.txt")
            if os.path.isfile(cfile):
                from frcnn.datasets.voc_folder import read_classes_file

                classes = read_classes_file(cfile)
            r = check_voc([path], split, classes, cfg, name=name, decode=decode)
            if not r.errors:
                r.error(path, str(e).split(": ", 1)[-1], kind="loader")
            return r, None
        r = Report(name)
        msg = str(e)
        file, _, rest = msg.partition(": ")
        r.error(file, rest or msg, kind="loader")
        return r, None
    report = cached_report(imdb) if decode else imdb.validate(decode=False)
    return report, list(imdb.image_index)


def main(argv=None):
    p = argparse.ArgumentParser(description="List every problem of a data set (exit 1 on errors)")
    p.add_argument("specs", nargs="+", help="<folder>[:<split>] (any labelled folder), "
                   "voc_folder:<path>[:<split>], coco_json:<json>:<images>, cards, shapes_train, "
                   "voc_2007_trainval, ...")
    p.add_argument("--errors-only", action="store_true", help="do not list warnings")
    p.add_argument("--limit", type=int, default=None, help="list at most N problems per set")
    p.add_argument("--no-decode", action="store_true",
                   help="read image headers only (faster; misses truncated images)")
    add_common_args(p)
    args = p.parse_args(argv)
    cfg = setup_cfg(args)
    n_err = n_warn = 0
    ids_of = {}
    for spec in args.specs:
        for name in expand(spec):
            report, ids = check_one(name, cfg, not args.no_decode)
            if ids is not None:
                ids_of[name] = set(ids)
            print(report.format(warnings=not args.errors_only, limit=args.limit))
            n_err += len(report.errors)
            n_warn += len(report.warnings)
    # a test image that is also a training image makes the test mAP optimistic
    names = list(ids_of)
    for a in names:
        for b in names:
            if a < b and a.rsplit(":", 1)[0] == b.rsplit(":", 1)[0]:
                both = ids_of[a] & ids_of[b]
                if both and ("test" in (a.rsplit(":", 1)[-1], b.rsplit(":", 1)[-1])):
                    n_warn += 1
                    if not args.errors_only:
                        print(f"warning: {len(both)} image id(s) in both {a} and {b} (e.g. "
                              f"{sorted(both)[0]}); keep test images out of training")
    print(f"total: {n_err} error(s), {n_warn} warning(s)")
    return 1 if n_err else 0


if __name__ == "__main__":
    sys.exit(run_main(main))
