"""Files are data, never code: crafted model files, proposal / detection pickles and caches are
refused (or rebuilt) without running anything; old model files and snapshots still load;
py-faster-rcnn-style proposal pickles still read; snapshots carry a checksum, a damaged newest
snapshot costs one interval, and a full disk loses nothing."""
import errno
import gzip
import io
import os
import pickle
import re
import struct
import subprocess
import sys
import types

import cv2
import numpy as np
import pytest
import torch

from frcnn import safe_io
from frcnn.config import get_default_cfg
from frcnn.engine.checkpoint import Checkpointer, DiskFull, content_checksum, run_signature
from frcnn.fast_rcnn.train import CaffeSGD
from frcnn.model_file import ModelFile
from frcnn.safe_io import UnsafeFileError, load_pickle, load_torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


class CreatesFile:
    """Unpickling this calls open(marker, 'w'): the file appears if the loader runs code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def crafted(tmp_path, kind):
    """A crafted file of `kind` (pth, proposals, detections, cache) -> (path, marker)."""
    marker = tmp_path / f"ran_{kind}"
    path = tmp_path / f"crafted_{kind}.{'pth' if kind == 'pth' else 'pkl'}"
    if kind == "pth":
        torch.save({"model": {"w": torch.zeros(1)}, "net": "TINY", "x": CreatesFile(marker)}, path)
    else:
        with open(path, "wb") as f:
            pickle.dump([np.zeros((1, 4), np.float32), CreatesFile(marker)], f, protocol=2)
    return str(path), marker


def gunzip_fixture(name, dest):
    out = os.path.join(str(dest), name)
    with gzip.open(os.path.join(FIXTURES, name + ".gz")) as g, open(out, "wb") as f:
        f.write(g.read())
    return out


def run_tool(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable] + list(args), cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=600)
    return p.returncode, p.stdout + p.stderr


def assert_refused(rc, log, path, marker):
    assert rc == 2, log[-3000:]
    assert f"error: {path}: refused to load this" in log and "io.open" in log, log[-3000:]
    assert f"--trust-file {path}" in log and "Traceback" not in log, log[-3000:]
    assert not marker.exists()


# -- the loaders ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["pth", "proposals"])
def test_crafted_files_are_refused_and_run_nothing(tmp_path, kind):
    path, marker = crafted(tmp_path, kind)
    load = load_torch if kind == "pth" else load_pickle
    with pytest.raises(UnsafeFileError, match=r"asks to run io\.open.*--trust-file"):
        load(path)
    assert not marker.exists()
    safe_io.trust(path)  # the control: the file does run code, and --trust-file lets it load
    try:
        load(path)
    finally:
        safe_io._TRUSTED.discard(os.path.realpath(path))
    assert marker.exists()


def test_detector_from_file_refuses_a_crafted_model(tmp_path):
    from frcnn import Detector

    path, marker = crafted(tmp_path, "pth")
    with pytest.raises(UnsafeFileError, match="refused to load this model file"):
        Detector.from_file(path)
    assert not marker.exists()


def test_crafted_weights_file_is_refused(tmp_path):
    """--weights (ImageNet initialisation) goes through the same loader."""
    from frcnn.models.weights import convert_to_state_dict

    path, marker = crafted(tmp_path, "pth")
    with pytest.raises(UnsafeFileError, match="refused to load this weights file"):
        convert_to_state_dict(path)
    assert not marker.exists()


def test_truncated_files_are_clear_errors(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"model": {"w": torch.arange(1000.0)}}, good)
    (tmp_path / "cut.pth").write_bytes(good.read_bytes()[:-200])
    with pytest.raises(UnsafeFileError, match=r"cut\.pth: not a readable model file \(truncated"):
        load_torch(tmp_path / "cut.pth")
    with open(tmp_path / "p.pkl", "wb") as f:
        pickle.dump([np.ones((3, 4))], f)
    (tmp_path / "cut.pkl").write_bytes((tmp_path / "p.pkl").read_bytes()[:40])
    with pytest.raises(UnsafeFileError, match=r"cut\.pkl: not a readable proposals file"):
        load_pickle(tmp_path / "cut.pkl", "proposals file")


class Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 str (BINSTRING), as py-faster-rcnn's cPickle did."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj):
    """`obj` pickled as Python 2 cPickle with numpy 1.x wrote it (protocol 2, numpy.core)."""
    f = io.BytesIO()
    Py2Pickler(f, protocol=2).dump(obj)
    data = f.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in data and pickle.BINSTRING in data
    with pytest.raises(UnicodeDecodeError):  # what a plain pickle.load makes of it
        pickle.loads(data)
    return data


def test_reference_style_proposal_pickles_still_read(tmp_path):
    """py-faster-rcnn's proposal pickles: a list of [P, 4] float arrays (Python 2 cPickle,
    protocol 2, numpy 1.x names), arrays with scores [P, 5], or a dict with 'boxes' / 'scores'."""
    from frcnn.roi_data.roidb import load_proposals

    rng = np.random.default_rng(0)
    boxes = [np.sort(rng.uniform(0, 90, (5, 4)), axis=1).astype(np.float32)[:, [0, 1, 2, 3]]
             for _ in range(3)]
    for b in boxes:
        b[:, 2:] = b[:, :2] + 8
    (tmp_path / "legacy.pkl").write_bytes(py2_pickle(boxes))
    with open(tmp_path / "scored.pkl", "wb") as f:
        pickle.dump([np.hstack([b, np.ones((5, 1), np.float32)]) for b in boxes], f)
    with open(tmp_path / "dict.pkl", "wb") as f:
        pickle.dump({"boxes": boxes, "scores": [np.ones(5) for _ in boxes]}, f, protocol=5)
    for name in ("legacy.pkl", "scored.pkl", "dict.pkl"):
        got = load_proposals(str(tmp_path / name), 3, min_size=0, clean=False)
        for g, b in zip(got, boxes):
            np.testing.assert_array_equal(g, b)


def test_restricted_unpickler_allows_only_named_classes(tmp_path):
    from collections import Counter

    with open(tmp_path / "c.pkl", "wb") as f:
        pickle.dump({"n": Counter("aab"), "t": (1, 2.5, "x", b"y", None, {3})}, f)
    with pytest.raises(UnsafeFileError, match=r"asks to run collections\.Counter"):
        load_pickle(tmp_path / "c.pkl", "cache")
    assert load_pickle(tmp_path / "c.pkl", "cache", allowed=(Counter,))["n"] == Counter("aab")


# -- model files ----------------------------------------------------------------------------
def test_model_file_written_by_the_old_writer_loads(tmp_path):
    """tests/fixtures/tiny_old_final.pth: written by Checkpointer.save_final before ModelFile
    (numpy bbox stats inside); every tensor holds one constant (make_old_files.py)."""
    from frcnn import Detector

    path = gunzip_fixture("tiny_old_final.pth", tmp_path)
    mf = ModelFile.load(path)
    assert (mf.net, mf.classes, mf.seed) == ("TINY", ["__background__", "circle", "square"], 3)
    assert mf.pooling["mode"] == "pool"
    assert mf.meta["iteration"] == 4 and isinstance(mf.meta["bbox_stds"], np.ndarray)
    assert torch.equal(mf.weights["backbone.conv1.weight"],
                       torch.full((16, 3, 3, 3), np.float32(0.003)))
    det = Detector.from_file(path, cfg=get_default_cfg())
    assert det.net == "TINY" and det.classes == mf.classes
    assert torch.equal(det.model.state_dict()["head.fc7.weight"], mf.weights["head.fc7.weight"])
    d = det(np.full((120, 160, 3), 128, np.uint8))
    assert d.boxes.shape[1] == 4 and len(d.scores) == len(d.labels)


def test_model_file_round_trip_needs_nothing_beyond_torch(tmp_path):
    """What ModelFile writes loads with torch's plain weights-only load (numpy -> tensors)."""
    mf = ModelFile.load(gunzip_fixture("tiny_old_final.pth", tmp_path))
    mf.save(str(tmp_path / "new.pth"))
    raw = torch.load(tmp_path / "new.pth", weights_only=True)  # no extra safe globals
    assert raw["net"] == "TINY" and raw["seed"] == 3 and isinstance(raw["bbox_stds"], torch.Tensor)
    again = ModelFile.load(str(tmp_path / "new.pth"))
    assert again.classes == mf.classes and again.meta["iteration"] == 4
    for k, v in mf.weights.items():
        assert torch.equal(v, again.weights[k]), k


def test_model_file_checks_net_classes_and_pooling(tmp_path):
    from frcnn.errors import ConfigError

    mf = ModelFile.load(gunzip_fixture("tiny_old_final.pth", tmp_path))
    cfg = get_default_cfg()
    with pytest.raises(ConfigError, match="holds a TINY model, not VGG16; fix --net"):
        mf.build(cfg, net="VGG16")
    with pytest.raises(ConfigError, match="trained for 3 classes"):
        mf.build(cfg, num_classes=5)
    cfg.POOLING_MODE = "align"
    with pytest.raises(ConfigError, match="trained with POOLING_MODE pool"):
        mf.build(cfg)


# -- snapshots ------------------------------------------------------------------------------
SIG = dict(seed=3, ims_per_batch=1, iter_size=1, world_size=1, max_iters=4, stepsize=2,
           base_lr=0.001, data="fixture")


def test_snapshot_written_by_the_old_writer_resumes(tmp_path):
    """tests/fixtures/lin_old_iter_2.pth (numpy RNG state inside, no checksum) resumes."""
    snap = gunzip_fixture("lin_old_iter_2.pth", tmp_path)
    raw = load_torch(snap, "snapshot")
    lin = torch.nn.Linear(3, 2)
    opt = CaffeSGD(lin.parameters(), lr=0.1)
    ck = Checkpointer(str(tmp_path), "lin_old", lin, opt, run_signature(**SIG))
    np.random.seed(99)
    assert ck.resume() == 2
    assert torch.equal(lin.weight, raw["model"]["weight"])
    np.testing.assert_array_equal(np.random.get_state()[1], raw["rng_per_rank"][0]["numpy"][1])
    assert opt.state_dict()["state"][0]["momentum_buffer"].abs().sum() > 0


def test_snapshot_checksum_catches_changed_content(tmp_path, capsys):
    lin = torch.nn.Linear(3, 2)
    opt = CaffeSGD(lin.parameters(), lr=0.1)
    ck = Checkpointer(str(tmp_path), "lin", lin, opt, run_signature(**SIG))
    for it in (1, 2):
        ck.save(types.SimpleNamespace(iter=it, iter_size=1, state_dict=dict))
    newest = str(tmp_path / "lin_iter_2.pth")
    state = load_torch(newest, "snapshot")
    assert state["checksum"] == content_checksum(state)
    state["model"]["weight"][0, 0] += 1  # a flipped bit in a valid-looking file
    torch.save(state, newest)
    assert ck.resume() == 1
    assert f"warning: {newest}: truncated or corrupt (checksum mismatch)" in capsys.readouterr().out


def _tiny_training(tmp_path):
    """-> run(out, stop_at=None): end2end TINY on 8 shapes images, 6 updates, a snapshot every 2
    (1 thread, in process); returns the final state dict."""
    from frcnn.datasets.factory import get_imdb
    from frcnn.models import build_model
    from frcnn.roi_data.loader import loader_factory
    from frcnn.roi_data.roidb import get_training_roidb
    from train_helpers import train

    cfg = get_default_cfg()
    cfg.DATA_DIR = str(tmp_path / "data")
    cfg.SOLVER.DISPLAY, cfg.TRAIN.SNAPSHOT_ITERS, cfg.TRAIN.NUM_WORKERS = 1000, 2, 0
    cfg.TRAIN.SCALES, cfg.TRAIN.MAX_SIZE, cfg.ANCHOR_SCALES = (160,), 270, (2, 4, 8)
    cfg.TRAIN.RPN_PRE_NMS_TOP_N, cfg.TRAIN.RPN_POST_NMS_TOP_N = 600, 100
    cfg.SHAPES.NUM_TRAIN, cfg.SHAPES.NUM_TEST = 8, 2
    imdb = get_imdb("shapes_train", cfg)
    roidb = get_training_roidb(imdb, cfg)

    def run(out, stop_at=None):
        torch.manual_seed(0)
        model = build_model("TINY", imdb.num_classes, cfg)
        train(model, loader_factory(roidb, cfg, 1, cfg.RNG_SEED), cfg, out, 6, 4, 1, "t",
              roidb=roidb, stop_at=stop_at)
        return None if stop_at else ModelFile.load(os.path.join(out, "t_final.pth")).weights
    return run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiny")
    torch.set_num_threads(1)
    run = _tiny_training(tmp)
    return run, run(str(tmp / "straight"))


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_truncated_newest_snapshot_resumes_from_the_previous(tiny_run, tmp_path, capsys):
    run, straight = tiny_run
    out = str(tmp_path / "cut")
    run(out, stop_at=4)  # snapshots 2 and 4, then "power cut" while 4 was being written
    newest = os.path.join(out, "t_iter_4.pth")
    with open(newest, "r+b") as f:
        f.truncate(os.path.getsize(newest) // 2)
    resumed = run(out)
    log = capsys.readouterr().out
    assert f"warning: {newest}: truncated or corrupt" in log
    assert "resumed from " + os.path.join(out, "t_iter_2.pth") + " at iteration 2" in log
    assert_same_weights(straight, resumed)


def test_disk_full_while_writing_a_snapshot_loses_nothing(tiny_run, tmp_path, monkeypatch):
    import frcnn.engine.checkpoint as C

    run, straight = tiny_run
    out = str(tmp_path / "full")
    real_save = torch.save

    def save_until_full(obj, f, *a, **k):
        if isinstance(obj, dict) and obj.get("iteration") == 4:
            f.write(b"PK\x03\x04 half a snapshot")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(C.torch, "save", save_until_full)
    with pytest.raises(DiskFull, match=r"t_iter_4\.pth: could not be written \(the disk is full\)"
                                       r".*rerun the same command"):
        run(out)
    assert sorted(os.listdir(out)) == ["t_iter_2.pth"]  # no tmp file, snapshot 2 intact
    monkeypatch.setattr(C.torch, "save", real_save)
    assert_same_weights(straight, run(out))


# -- the command-line tools -----------------------------------------------------------------
@pytest.fixture(scope="module")
def voc_toy(tmp_path_factory):
    """A 2-image VOC folder (one class) for the tools."""
    root = tmp_path_factory.mktemp("toyvoc")
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / d).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for im in ("a", "b"):
        (root / "Annotations" / f"{im}.xml").write_text(
            "<annotation><size><width>160</width><height>120</height><depth>3</depth></size>"
            "<object><name>dog</name><difficult>0</difficult><bndbox><xmin>21</xmin><ymin>21"
            "</ymin><xmax>100</xmax><ymax>90</ymax></bndbox></object></annotation>")
        cv2.imwrite(str(root / "JPEGImages" / f"{im}.jpg"),
                    rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    for split in ("trainval", "test"):
        (root / "ImageSets/Main" / f"{split}.txt").write_text("a\nb\n")
    return str(root)


def test_test_net_refuses_a_crafted_model(tmp_path, voc_toy):
    path, marker = crafted(tmp_path, "pth")
    args = ["tools/test_net.py", "--net", "TINY", "--model", path, "--imdb",
            f"voc_folder:{voc_toy}:test", "--set", "DATA_DIR", str(tmp_path / "d")]
    assert_refused(*run_tool(*args), path, marker)
    args[5:5] = ["--trust-file", path]  # the way out the message names: the file's code runs
    rc, log = run_tool(*args)
    assert marker.exists() and rc == 2 and "lacks" in log, log[-3000:]


def test_eval_recall_refuses_crafted_proposals(tmp_path, voc_toy):
    path, marker = crafted(tmp_path, "proposals")
    rc, log = run_tool("tools/eval_recall.py", "--imdb", f"voc_folder:{voc_toy}:test",
                       "--proposals", path, "--out-dir", str(tmp_path / "r"),
                       "--set", "DATA_DIR", str(tmp_path / "d"))
    assert_refused(rc, log, path, marker)


def test_reval_refuses_crafted_detections(tmp_path, voc_toy):
    path, marker = crafted(tmp_path, "detections")
    rc, log = run_tool("tools/reval.py", path, "--imdb", f"voc_folder:{voc_toy}:test",
                       "--set", "DATA_DIR", str(tmp_path / "d"))
    assert_refused(rc, log, path, marker)


def test_training_rebuilds_a_crafted_cache(tmp_path, voc_toy):
    """Every cache under DATA_DIR/cache replaced by a crafted pickle: training warns, rebuilds
    them from the annotations, runs nothing and trains."""
    data, marker = tmp_path / "d", tmp_path / "ran_cache"
    args = ("tools/train_net.py", "--net", "TINY", "--imdb", f"voc_folder:{voc_toy}:trainval",
            "--iters", "1", "--num-threads", "1", "--set", "DATA_DIR", str(data), "OUTPUT_DIR",
            str(tmp_path / "o"), "TRAIN.SCALES", "(120,)", "SOLVER.DISPLAY", "1000")
    rc, log = run_tool(*args)
    assert rc == 0, log[-3000:]
    caches = [os.path.join(d, n) for d, _, ns in os.walk(data / "cache") for n in ns
              if n.endswith(".pkl")]
    assert len(caches) >= 2, caches  # the data check and the gt roidb
    for c in caches:
        with open(c, "wb") as f:
            pickle.dump({"boxes": CreatesFile(marker)}, f)
    rc, log = run_tool(*args, "EXP_DIR", "again")
    assert rc == 0, log[-3000:]
    for c in caches:
        assert f"warning: {c}: cache ignored (it asks to run io.open" in log, log[-3000:]
    assert not marker.exists() and "FINAL_MODEL" in log


def test_reference_style_proposals_pickle_still_trains(tmp_path, voc_toy):
    """A py-faster-rcnn-style proposals pickle (Python 2 cPickle, numpy 1.x names) trains a
    TINY Fast R-CNN through train_net.py (its loss falls), and the model tests on it."""
    rng = np.random.default_rng(0)
    boxes = []
    for _ in range(2):  # jittered copies of the gt box (20, 20, 99, 89) and background boxes
        b = np.float32([20, 20, 99, 89]) + rng.normal(0, 12, (60, 4)).astype(np.float32)
        b[:, 2:] = np.maximum(b[:, 2:], b[:, :2] + 20)
        boxes.append(np.clip(b, 0, [159, 119, 159, 119]).astype(np.float32))
    props = tmp_path / "props.pkl"
    props.write_bytes(py2_pickle(boxes))
    sets = ["DATA_DIR", str(tmp_path / "d"), "OUTPUT_DIR", str(tmp_path / "o"), "TRAIN.SCALES",
            "(120,)", "TEST.SCALES", "(120,)", "SOLVER.DISPLAY", "10", "SOLVER.BASE_LR", "0.01"]
    rc, log = run_tool("tools/train_net.py", "--net", "TINY", "--imdb",
                       f"voc_folder:{voc_toy}:trainval", "--proposals", str(props), "--iters",
                       "30", "--num-threads", "1", "--set", *sets)
    assert rc == 0, log[-3000:]
    losses = [float(x) for x in re.findall(r"iter \d+/30 loss ([0-9.]+)", log)]
    assert len(losses) == 3 and losses[-1] < losses[0], log[-2000:]
    model = re.findall(r"FINAL_MODEL (\S+)", log)[-1]
    assert isinstance(ModelFile.load(model).meta["bbox_means"], torch.Tensor)
    rc, log = run_tool("tools/test_net.py", "--net", "TINY", "--model", model, "--imdb",
                       f"voc_folder:{voc_toy}:test", "--proposals", str(props), "--set", *sets,
                       "TEST.HAS_RPN", "False")
    assert rc == 0 and "Mean AP" in log, log[-3000:]


def test_nothing_unpickles_outside_safe_io():
    """The one safe loader: no torch.load call, pickle.load(s), weights_only=False or
    allow_pickle=True anywhere else in lib/, tools/, experiments/ (docstrings may name
    torch.load(weights_only=True))."""
    pattern = re.compile(r"torch\.load\((?!weights_only=True\))|pickle\.loads?\(|"
                         r"weights_only\s*=\s*False|"
                         r"allow_pickle\s*=\s*True|Unpickler\(")
    found = []
    for top in ("lib", "tools", "experiments"):
        for d, _, names in os.walk(os.path.join(ROOT, top)):
            for n in names:
                p = os.path.join(d, n)
                if n.endswith(".py") and p != os.path.join(ROOT, "lib", "frcnn", "safe_io.py"):
                    with open(p) as f:
                        found += [f"{p}:{i}" for i, line in enumerate(f, 1)
                                  if pattern.search(line)]
    assert not found, found
