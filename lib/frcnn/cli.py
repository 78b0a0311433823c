"""What every command-line tool shares: the common arguments (`add_common_args`), the cfg built
one way (`setup_cfg`: defaults, --cfg yml, --set pairs, --device; `apply_runtime_args`: --seed,
--workers, --amp into the cfg, --num-threads, --deterministic into torch), and one wrapper for
the tool's `if __name__ == "__main__"`:

    sys.exit(run_main(main))

A frcnn.errors.UserError (bad data or configuration) prints `error: <message>` on stderr and exits
2 without a traceback; `--debug` anywhere on the command line (or FRCNN_DEBUG=1) re-raises it so
the traceback shows. Other exceptions are not touched (their traceback is the bug report).
Exit status from main()'s return value: an int is kept; None, True, a float (an mAP) or a
non-empty str (a model path) -> 0; False or '' -> 1.
"""
import argparse
import os
import sys

from frcnn.errors import UserError


def _exit_status(ret):
    if isinstance(ret, bool):
        return 0 if ret else 1
    if isinstance(ret, int):
        return ret
    if isinstance(ret, str):
        return 0 if ret else 1
    return 0


def format_error(e):
    """'error: <first line>' and the other lines indented under it."""
    lines = str(e).strip().splitlines() or [type(e).__name__]
    return "\n".join(["error: " + lines[0]] + ["  " + ln if ln and not ln.startswith(" ") else ln
                                               for ln in lines[1:]])


def run_main(main, argv=None):
    """Run main() (which parses sys.argv[1:]) and turn a UserError into exit status 2.

    -> the exit status for sys.exit. `--debug` is removed from sys.argv before main() sees it.
    """
    args = sys.argv if argv is None else argv
    debug = os.environ.get("FRCNN_DEBUG", "") not in ("", "0")
    if "--debug" in args[1:]:
        debug = True
        args[:] = [args[0]] + [a for a in args[1:] if a != "--debug"]
    try:
        ret = main()
    except UserError as e:
        if debug:
            raise
        sys.stdout.flush()
        print(format_error(e), file=sys.stderr)
        print("(run with --debug for the traceback)", file=sys.stderr)
        return e.exit_code
    return _exit_status(ret)


def add_common_args(parser, cfg_required=False, training=False):
    """--cfg, --set, --device, --num-threads, --amp/--no-amp, --deterministic (+ --seed and
    --workers for training tools)."""
    parser.add_argument("--cfg", dest="cfg_file", default=None, required=cfg_required,
                        help="yml config merged over the defaults")
    parser.add_argument("--num-threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--amp", dest="amp", action="store_true", default=None,
                        help="mixed precision: float16 on CUDA, bfloat16 on the CPU "
                             "(default SOLVER.AMP: 'auto' = bf16 on CPUs with bf16 matrix units)")
    parser.add_argument("--no-amp", dest="amp", action="store_false", help="full float32")
    parser.add_argument("--deterministic", action="store_true",
                        help="torch.use_deterministic_algorithms(True) and deterministic cuDNN "
                             "(bit-identical CUDA runs, slower; CPU runs with 1 thread are "
                             "bit-identical without it)")
    if training:
        parser.add_argument("--seed", type=int, default=None,
                            help="RNG seed of everything random (default cfg.RNG_SEED)")
        parser.add_argument("--workers", type=int, default=None,
                            help="data loader processes (TRAIN.NUM_WORKERS)")
    parser.add_argument("--trust-file", metavar="PATH", action=TrustFile, default=None,
                        help="load this model/weights/pickle file even if it asks to run code "
                             "(refused by default: files are data); repeatable, only for files "
                             "you trust")
    parser.add_argument("--set", dest="set_cfgs", nargs=argparse_remainder(), default=None,
                        help="KEY VALUE pairs, e.g. --set EXP_DIR foo TRAIN.SCALES '(400,)'")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cfg.DEVICE)")
    return parser


class TrustFile(argparse.Action):
    """--trust-file PATH: frcnn.safe_io.trust(PATH) as it is parsed (PATH may load as code)."""

    def __call__(self, parser, namespace, value, option_string=None):
        from frcnn.safe_io import trust

        trust(value)
        setattr(namespace, self.dest, (getattr(namespace, self.dest) or []) + [value])


def argparse_remainder():
    import argparse

    return argparse.REMAINDER


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


def apply_runtime_args(args, cfg):
    """Fold --seed / --workers / --amp / --no-amp into the cfg (one source for each value) and
    apply --num-threads / --deterministic to torch."""
    import torch

    if getattr(args, "amp", None) is not None:
        cfg.SOLVER.AMP = bool(args.amp)
    if getattr(args, "seed", None) is not None:
        cfg.RNG_SEED = int(args.seed)
    if getattr(args, "workers", None) is not None:
        cfg.TRAIN.NUM_WORKERS = int(args.workers)
    if getattr(args, "num_threads", None):
        torch.set_num_threads(args.num_threads)
    if getattr(args, "deterministic", False):
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return cfg


def threads_note():
    import torch

    return f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
