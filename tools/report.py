#!/usr/bin/env python
"""Rebuild the evaluation report of a test_net output folder from its saved detections, without
running the model.

  python tools/report.py output/<EXP_DIR>/<imdb>/<model>/ [--imdb NAME] [--cfg yml] [--set K V ...]

Reads <folder>/detections.pkl and metrics.json (the test set, test_net's --cfg and --set, which
are used unless --cfg / --set are given), rewrites metrics.json, predictions.json, the figures
and report.html, and prints the page's path.
"""
import argparse
import json
import os
import sys

import _init_paths  # noqa: F401
from frcnn.cli import add_common_args, run_main, setup_cfg


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Rebuild report.html from saved detections")
    p.add_argument("folder", help="test_net's output folder (holds detections.pkl)")
    p.add_argument("--imdb", default=None, help="the test set (default: metrics.json's)")
    add_common_args(p)
    return p.parse_args(argv)


def main(argv=None):
    from frcnn.datasets.factory import get_imdb
    from frcnn.errors import ConfigError
    from frcnn.evaluation.report import write_report

    args = parse_args(argv)
    folder = args.folder
    det = os.path.join(folder, "detections.pkl")
    if not os.path.isfile(det):
        raise ConfigError(f"{det}: no detections here; give the folder test_net printed "
                          "('results in ...') or run tools/test_net.py first")
    metrics_path = os.path.join(folder, "metrics.json")
    name = None
    run = {}
    if os.path.isfile(metrics_path):
        with open(metrics_path) as f:
            saved = json.load(f)
        run = saved.get("run") or {}
        name = run.get("imdb_spec") or saved.get("imdb")
    name = args.imdb or name
    if args.cfg_file is None and args.set_cfgs is None:  # test_net's own settings
        args.cfg_file, args.set_cfgs = run.get("cfg_file"), run.get("set_cfgs")
    if not name:
        raise ConfigError(f"{metrics_path}: does not name the test set; pass --imdb NAME")
    cfg = setup_cfg(args)
    try:
        imdb = get_imdb(name, cfg)
    except KeyError as e:
        raise ConfigError(f"{metrics_path}: test set {name!r}: {e.args[0]}; pass --imdb with "
                          "the name test_net was given") from None
    write_report(imdb, folder)
    print(os.path.join(folder, "report.html"))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
