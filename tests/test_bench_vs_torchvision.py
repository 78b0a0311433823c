"""tools/bench_vs_torchvision.py: what it reads from our run and the schedule it gives
torchvision's model (its training itself needs a torchvision venv: a benchmark, not a test)."""
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location(
    "bench_vs_torchvision", os.path.join(ROOT, "tools", "bench_vs_torchvision.py"))
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

# the lines of a real alt_opt.sh stdout that the benchmark reads (set -x traces, test_net, the
# summary), with a path holding a space
OURS = """\
+ python tools/train_faster_rcnn_alt_opt.py --net ELITE0 --imdb 'voc_folder:/data/my cards:trainval' --cfg /w/output/auto/cfg.yml --seed 0 --device cpu --final-file /tmp/x/final
[elite0_stage1_rpn] iter 20/540 loss 0.05
+ python tools/test_net.py --net ELITE0 --model /w/m.pth --imdb 'voc_folder:/data/my cards:test' --cfg /w/output/auto/cfg.yml --device cpu --map-file /tmp/x/map
metrics written to /w/output/test/metrics.json
alt-opt ELITE0 voc_folder:/data/my cards: mAP 0.9206, AP@0.5 area under the curve 0.9324, on voc_folder:/data/my cards:test (train 687s, total 702s)
"""


def test_reads_the_run():
    r = bench.read_ours(OURS)
    assert r == {"train_imdb": "voc_folder:/data/my cards:trainval", "cfg": "/w/output/auto/cfg.yml",
                 "test_imdb": "voc_folder:/data/my cards:test", "map": 0.9206, "train_s": 687.0,
                 "metrics": "/w/output/test/metrics.json"}


def test_an_unfinished_run_is_refused():
    with pytest.raises(SystemExit, match="train_s"):
        bench.read_ours(OURS.rsplit("metrics", 1)[0])


def test_lr_schedule_warmup_and_steps_at_16_and_22_of_26():
    iters, warm = 2600, 100
    f = [bench._lr_factor(i, iters, warm) for i in range(iters)]
    assert f[0] == pytest.approx(0.001) and f[50] == pytest.approx(0.001 * 0.5 + 0.5)
    assert f[100] == 1.0 and f[1599] == 1.0
    assert f[1600] == pytest.approx(0.1) and f[2199] == pytest.approx(0.1)
    assert f[2200] == pytest.approx(0.01) and f[-1] == pytest.approx(0.01)


def test_iterations_are_refitted_to_the_budget():
    # 100 s budget: 20 iterations in 10 s at 0.5 s each -> 20 + 180; later at 0.25 s/iter
    assert bench.refit_iterations(20, 10.0, 0.5, 100.0) == 200
    assert bench.refit_iterations(100, 40.0, 0.25, 100.0) == 340
    # over budget: never so short that the run is past half of it (no lr step skipped)
    assert bench.refit_iterations(100, 120.0, 0.5, 100.0) == 200
    assert bench.refit_iterations(5, 0.1, 1.0, 0.0) == 21
