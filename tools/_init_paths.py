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


def setup_cfg(args):
    """cfg from defaults + args.cfg_file + args.set_cfgs (+ args.device); prints nothing."""
    from frcnn.config import cfg_from_file, cfg_from_list, get_default_cfg

    cfg = get_default_cfg()
    if getattr(args, "cfg_file", None):
        cfg_from_file(args.cfg_file, cfg)
    if getattr(args, "set_cfgs", None):
        cfg_from_list(list(args.set_cfgs), cfg)
    if getattr(args, "device", None):
        cfg.DEVICE = args.device
    if str(cfg.DEVICE).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            sys.exit(f"DEVICE {cfg.DEVICE} requested but torch has no CUDA here "
                     f"(torch {torch.__version__}); use --device cpu")
    return cfg


def threads_note():
    import torch

    return f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
