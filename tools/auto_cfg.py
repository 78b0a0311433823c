#!/usr/bin/env python
"""Derive the training settings from a data set and the net (frcnn.autocfg), print them and write
them as a cfg yml next to the results (output/<EXP_DIR>/<imdb>/cfg.yml), so the run can be
repeated with --cfg. experiments/alt_opt.sh uses it for voc_folder: and coco_json: sets when no
CFG is given.

  python tools/auto_cfg.py --net ELITE0 --imdb voc_folder:/data/VOCmine:trainval \
      [--test-imdb voc_folder:/data/VOCmine:test] [--flavour alt_opt|end2end] [--cfg yml] [--set K V ...]

Keys given in --cfg or --set are kept as given (the others are derived around them). Both image
sets are checked first (the checks of tools/check_dataset.py): any error stops here.
"""
import argparse
import os
import sys

import _init_paths  # noqa: F401
from frcnn.cli import add_common_args, run_main, setup_cfg


def flat_keys(d, prefix=""):
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += flat_keys(v, prefix + k + ".")
        else:
            out.append(prefix + k)
    return out


def user_keys(args):
    keys = []
    if args.cfg_file:
        import yaml

        with open(args.cfg_file) as f:
            keys += flat_keys(yaml.safe_load(f) or {})
    if args.set_cfgs:
        keys += list(args.set_cfgs[0::2])
    return keys


def parse_args(argv=None):
    """The command line; main reads nothing else from argv."""
    p = argparse.ArgumentParser(description="Faster R-CNN settings sized from the data")
    p.add_argument("--net", required=True)
    p.add_argument("--imdb", required=True, help="training image set")
    p.add_argument("--test-imdb", default=None, help="test image set (checked too)")
    p.add_argument("--flavour", default="alt_opt", choices=("alt_opt", "end2end"))
    p.add_argument("--path-file", default=None, help="write the cfg path into this file")
    add_common_args(p)
    return p.parse_args(argv)


def cfg_values(cfg, keys):
    """{dotted key: its value in cfg}, to write the keys not derived next to the derived ones."""
    given = {}
    for k in keys:
        node = cfg
        for part in k.split("."):
            node = node[part]
        given[k] = node
    return given


def main(argv=None):
    args = parse_args(argv)
    # the flavour's reference keys first (TEST.HAS_RPN, ...), as the hand-written cfgs have them
    import yaml

    from frcnn.config import merge_into

    base_file = os.path.join(_init_paths.ROOT, "experiments", "cfgs", f"faster_rcnn_{args.flavour}.yml")
    with open(base_file) as f:
        base = yaml.safe_load(f) or {}
    base.pop("EXP_DIR", None)
    setup_cfg(args)  # checks the user's yml and --set pairs (ConfigError naming them)
    fixed = user_keys(args)
    from frcnn.config import cfg_from_file, cfg_from_list, get_default_cfg

    cfg = merge_into(base, get_default_cfg())
    if args.cfg_file:  # the user's keys over the base
        cfg_from_file(args.cfg_file, cfg)
    if args.set_cfgs:
        cfg_from_list(list(args.set_cfgs), cfg)
    if args.device:
        cfg.DEVICE = args.device

    from frcnn import autocfg
    from frcnn.config import get_output_dir
    from frcnn.datasets import get_imdb
    from frcnn.datasets.validate import ensure_valid

    imdb = get_imdb(args.imdb, cfg)
    if args.test_imdb:
        ensure_valid(get_imdb(args.test_imdb, cfg))
    keys, notes = autocfg.derive(imdb.roidb, args.net, cfg, fixed, args.flavour)
    if "EXP_DIR" not in fixed:
        keys["EXP_DIR"] = f"auto_{args.flavour}"
    autocfg.apply(keys, cfg)
    given = cfg_values(cfg, [k for k in flat_keys(base) if k not in keys] + fixed)
    out_dir = get_output_dir(imdb.name.replace(":", "_").replace("/", "_"), cfg)
    path = os.path.join(out_dir, "cfg.yml")
    notes = [f"{args.net} {args.flavour} on {imdb.name}"] + notes
    if fixed:
        notes.append("kept as given: " + ", ".join(sorted(fixed)))
    with open(path + ".tmp", "w") as f:
        f.write(autocfg.to_yaml(keys, notes, extra=given))
    os.replace(path + ".tmp", path)
    for n in notes:
        print("auto cfg: " + n)
    print(f"auto cfg: written to {path} (a --cfg or --set overrides any of it)")
    if args.path_file:
        with open(args.path_file, "w") as f:
            f.write(path)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
