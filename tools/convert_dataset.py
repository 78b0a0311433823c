#!/usr/bin/env python
"""Convert a labelled folder into another format (lossless: the boxes read back the same).

  python tools/convert_dataset.py SRC DST --to voc|labelimg|yolo|labelme|cvat|coco

SRC: any data set path the tools take (a VOC devkit, labelImg, YOLO, LabelMe, CVAT or COCO folder,
or a COCO json; a prefix yolo:, labelme:, cvat:, labelimg:, coco_json:, voc_folder: forces the
format). Every split is written (as the target stores splits). Problems of SRC are listed (as
tools/check_dataset.py does) and nothing is written until they are fixed.
"""
import argparse
import sys

import _init_paths  # noqa: F401
from frcnn.cli import run_main


def main(argv=None):
    from frcnn.datasets.convert import TARGETS, convert
    from frcnn.datasets.factory import FOLDER_PREFIXES
    from frcnn.datasets.formats import detect_format, read_folder

    p = argparse.ArgumentParser(description="Convert a labelled folder into another format")
    p.add_argument("src", help="the data set folder (or COCO json)")
    p.add_argument("dst", help="the folder to write (created)")
    p.add_argument("--to", required=True, choices=TARGETS)
    args = p.parse_args(argv)
    src, fmt = args.src, None
    for prefix, f in {**FOLDER_PREFIXES, "voc_folder:": "voc"}.items():
        if src.startswith(prefix):
            src, fmt = src[len(prefix):], f
    listing = read_folder(src, fmt or detect_format(src))
    print(listing.summary())
    print(convert(listing, args.dst, args.to))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
