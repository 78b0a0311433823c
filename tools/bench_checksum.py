#!/usr/bin/env python
"""What a snapshot's content checksum costs, as a ratio to serialising the same snapshot.

  python tools/bench_checksum.py output/<EXP_DIR>/<imdb>/<prefix>_iter_<N>.pth

Prints the median of 7 interleaved runs of engine.checkpoint.content_checksum and of torch.save
into memory (the part of a snapshot write that is not the disk), and their ratio.
"""
import argparse
import io
import sys
import time

import _init_paths  # noqa: F401
from frcnn.cli import run_main


def main(argv=None):
    import torch

    from frcnn.engine.checkpoint import content_checksum
    from frcnn.safe_io import load_torch

    p = argparse.ArgumentParser(description="snapshot checksum cost")
    p.add_argument("snapshot")
    args = p.parse_args(argv)
    state = load_torch(args.snapshot, "snapshot")
    mb = sum(t.numel() * t.element_size() for t in state["model"].values()) / 1e6
    ck, sv = [], []
    for _ in range(7):  # interleaved, so load changes on a shared machine hit both alike
        t = time.perf_counter()
        content_checksum(state)
        ck.append(time.perf_counter() - t)
        t = time.perf_counter()
        torch.save(state, io.BytesIO())
        sv.append(time.perf_counter() - t)
    a, b = sorted(ck)[3], sorted(sv)[3]
    print(f"{args.snapshot} (model {mb:.1f} MB + optimizer): checksum {a * 1000:.0f} ms, "
          f"torch.save to memory {b * 1000:.0f} ms (medians of 7, {torch.get_num_threads()} "
          f"threads): checksum / save x{a / b:.2f}")


if __name__ == "__main__":
    sys.exit(run_main(main))
