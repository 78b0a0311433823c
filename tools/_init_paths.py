"""Put lib/ on sys.path so tools run from a fresh clone after `make` (no install needed),
and build a cfg the same way in every tool: defaults, then --cfg yml, then --set pairs."""
import argparse
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


def cpu_has_bf16_matmul():
    """True when the CPU has bf16 matrix units (AMX-BF16 or AVX512-BF16): there bf16 autocast
    makes convolutions ~3x faster; without them (e.g. AVX2-only CPUs) it is 7-35x slower."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def amp_dtype(cfg, device, net=None):
    """None (float32) or the autocast dtype: float16 on CUDA, bfloat16 on the CPU.

    From cfg SOLVER.AMP (--amp / --no-amp fold into it, apply_runtime_args): True, False or
    'auto' = bf16 on a CPU with bf16 matrix units for the nets it speeds up
    (frcnn.models.BF16_PAYS_ON_CPU), float32 elsewhere. Says in one line what it chose and why.
    """
    import torch

    from frcnn.models import BF16_PAYS_ON_CPU

    cpu = torch.device(device).type != "cuda"
    fast_bf16 = cpu and cpu_has_bf16_matmul()
    setting = cfg.SOLVER.AMP
    source = f"SOLVER.AMP {setting}"
    why = "this CPU has bf16 matrix units"
    if setting == "auto":
        setting = fast_bf16 and (net is None or net.upper() in BF16_PAYS_ON_CPU)
        if fast_bf16 and not setting:
            why = f"bf16 does not speed up {net.upper()}'s training"
    if not setting:
        print(f"precision: float32 ({source}" + (f"; {why}: --amp runs bf16 autocast)"
                                                  if fast_bf16 else ")"))
        return None
    if cpu:
        print(f"precision: bf16 autocast on the CPU ({source}" + (
            f"; {why}; --no-amp for float32)" if fast_bf16 else
            "; warning: this CPU has no AMX/AVX512-BF16 units, bf16 is slower than float32 here)"))
        return torch.bfloat16
    print(f"precision: float16 autocast on CUDA ({source})")
    return torch.float16


def autocast_context(device, dtype):
    import contextlib

    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def threads_note():
    import torch

    return f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
