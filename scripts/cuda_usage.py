"""Summarises `nvcc --resource-usage` (ptxas info) from stdin: one row per kernel and GPU
architecture with registers, spills, stack and static shared memory (make cuda-check).

    nvcc --resource-usage ... 2>&1 | python scripts/cuda_usage.py
"""
import re
import shutil
import subprocess
import sys


def demangle(names):
    if not names or shutil.which("c++filt") is None:
        return {n: n for n in names}
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
    return dict(zip(names, out.stdout.splitlines())) if out.returncode == 0 else {n: n for n in names}


def short(name):
    name = re.sub(r"\(anonymous namespace\)::|frcnn::cuda::", "", name)
    return re.sub(r"\(.*\)$", "", name)  # drop the parameter list


def main():
    rows, cur = [], None
    for line in sys.stdin:
        m = re.search(r"Compiling entry function '([^']+)' for '(sm_\d+a?)'", line)
        if m:
            cur = {"fn": m.group(1), "sm": m.group(2), "regs": "?", "spill": 0, "stack": 0,
                   "smem": 0}
            rows.append(cur)
            continue
        if cur is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            cur["stack"], cur["spill"] = int(m.group(1)), int(m.group(2)) + int(m.group(3))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            cur["regs"] = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            cur["smem"] = int(s.group(1)) if s else 0
    names = demangle(sorted({r["fn"] for r in rows}))
    spills = 0
    print(f"  {'kernel':<58} {'arch':<7} {'regs':>4} {'spill B':>7} {'stack B':>7} {'smem B':>6}")
    for r in sorted(rows, key=lambda r: (short(names[r["fn"]]), r["sm"])):
        spills += r["spill"]
        print(f"  {short(names[r['fn']])[:58]:<58} {r['sm']:<7} {r['regs']:>4} {r['spill']:>7} "
              f"{r['stack']:>7} {r['smem']:>6}")
    print(f"  {len(rows)} kernel builds, "
          + ("no register spills" if spills == 0 else f"WARNING: {spills} bytes of spills"))


if __name__ == "__main__":
    main()
