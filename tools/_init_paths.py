"""Put lib/ on sys.path so tools run from a fresh clone after `make` (no install needed), and set
the OpenMP wait policy before torch loads. Everything else tools share lives in the library:
frcnn.cli (arguments, cfg, run_main) and frcnn.precision (the AMP policy)."""
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
