#!/usr/bin/env python
"""py-faster-rcnn's demo: PNGs with labelled boxes. An alias of tools/detect.py with --vis:

  python tools/demo.py --model output/.../tiny_faster_rcnn_final.pth data/demo/ a.jpg --out demo_out/

is `tools/detect.py ... --vis demo_out/ --out demo_out/detections.json` (see detect.py for the
other options: --thresh, --net, --imdb, --cfg, --set).
"""
import os
import subprocess
import sys

import _init_paths  # noqa: F401
from frcnn.cli import run_main

DETECT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "detect.py")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    out = "demo_out"
    for i, a in enumerate(argv):
        if a == "--out" and i + 1 < len(argv):
            out = argv[i + 1]
            del argv[i:i + 2]
            break
        if a.startswith("--out="):
            out = a[len("--out="):]
            del argv[i]
            break
    # run as its own command (tools import no other tool): its exit status is ours
    return subprocess.call([sys.executable, DETECT] + argv
                           + ["--vis", out, "--out", os.path.join(out, "detections.json")])


if __name__ == "__main__":
    sys.exit(run_main(main))
