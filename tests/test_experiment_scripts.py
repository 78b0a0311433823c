"""Argument errors of experiments/alt_opt.sh and faster_rcnn_end2end.sh: one line, exit 2,
before anything runs."""
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("args, message", [
    (["--cpus", "0"], "--gpus / --cpus take a positive number, got '0'"),
    (["TINY", "shapes", "--gpus", "two"], "--gpus / --cpus take a positive number, got 'two'"),
    (["--cpus"], "--cpus needs a number"),
    (["--seed"], "--seed needs a number"),
])
def test_alt_opt_script_rejects_bad_process_counts(args, message):
    r = subprocess.run(["bash", os.path.join(ROOT, "experiments", "alt_opt.sh"), *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip() == message


def test_end2end_script_takes_a_seed():
    script = os.path.join(ROOT, "experiments", "scripts", "faster_rcnn_end2end.sh")
    r = subprocess.run(["bash", script, "TINY", "shapes", "--seed"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip() == "--seed needs a number"
    # the seed is taken, so the next error is the data set's, not an unknown argument's
    r = subprocess.run(["bash", script, "TINY", "no_such_set", "--seed", "1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown DATASET 'no_such_set'" in r.stderr
    assert "unrecognized arguments" not in r.stderr
