"""The mixed-precision policy of every tool and of `Detector`: which autocast dtype a run uses
(cfg SOLVER.AMP True / False / 'auto') and the context that applies it."""


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
