"""Put lib/ on sys.path so tools run from a fresh clone after `make` (no install needed),
and build a cfg the same way in every tool: defaults, then --cfg yml, then --set pairs."""
import os
import sys

# OpenMP threads that spin while waiting make torch 5-10x slower as soon as another process
# shares the cores (measured: 2.2 s vs 0.24 s per TINY step on 2 busy cores); sleeping costs
# little when the cores are free. Set before torch is imported; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
LIB = os.path.join(ROOT, "lib")
if LIB not in sys.path:
    sys.path.insert(0, LIB)


def add_common_args(parser, cfg_required=False):
    parser.add_argument("--cfg", dest="cfg_file", default=None, required=cfg_required,
                        help="yml config merged over the defaults")
    parser.add_argument("--set", dest="set_cfgs", nargs=argparse_remainder(), default=None,
                        help="KEY VALUE pairs, e.g. --set EXP_DIR foo TRAIN.SCALES '(400,)'")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cfg.DEVICE)")
    return parser


def argparse_remainder():
    import argparse

    return argparse.REMAINDER


def run_main(main):
    """`sys.exit(_init_paths.run_main(main))` in every tool: a data or configuration error
    (frcnn.errors.UserError) prints one `error: <file>: <problem>; <fix>` block and exits 2, no
    traceback unless --debug; other exceptions keep theirs (frcnn.cli.run_main)."""
    from frcnn.cli import run_main as run

    return run(main)


def setup_cfg(args):
    """cfg from defaults + args.cfg_file + args.set_cfgs (+ args.device); prints nothing.
    A bad yml, key or value raises frcnn.errors.ConfigError naming the file or the --set pair."""
    from frcnn.config import cfg_from_file, cfg_from_list, get_default_cfg
    from frcnn.errors import ConfigError

    cfg = get_default_cfg()
    if getattr(args, "cfg_file", None):
        try:
            cfg_from_file(args.cfg_file, cfg)
        except (KeyError, ValueError, TypeError, OSError) as e:
            msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
            if args.cfg_file not in msg:
                msg = f"{args.cfg_file}: {msg}"
            raise ConfigError(f"{msg}; fix the yml (keys and types as in frcnn/config.py)") from e
    if getattr(args, "set_cfgs", None):
        try:
            cfg_from_list(list(args.set_cfgs), cfg)
        except (KeyError, ValueError, TypeError) as e:
            msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
            raise ConfigError(f"--set {' '.join(args.set_cfgs)}: {msg}; give KEY VALUE pairs with "
                              "keys and types as in frcnn/config.py") from e
    if getattr(args, "device", None):
        cfg.DEVICE = args.device
    if str(cfg.DEVICE).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"DEVICE {cfg.DEVICE}: requested but torch has no CUDA here "
                              f"(torch {torch.__version__}); use --device cpu")
    return cfg


def threads_note():
    import torch

    return f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
