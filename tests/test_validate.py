"""Data set validation (frcnn.datasets.validate, tools/check_dataset.py, the check before training):
one test per kind of bad input, all problems of a folder in one run, the CLI without tracebacks."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from frcnn.config import get_default_cfg
from frcnn.datasets import DatasetError, get_imdb
from frcnn.datasets.validate import best_anchor_iou, check_image, check_voc, Report
from frcnn.errors import DataError, UserError

from test_datasets import make_voc, xml_text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "tools")


@pytest.fixture
def cfg(tmp_path):
    c = get_default_cfg()
    c.DATA_DIR = str(tmp_path / "data")
    return c


def good_images(n=6, w=64, h=48):
    """n images with one dog and one cat each (enough objects: no 'few objects' warning)."""
    return {f"im{i}": (w, h, [("dog", (1, 2, 30, 40), 0), ("cat", (20, 10, 60, 45), 0)])
            for i in range(n)}


@pytest.fixture
def voc(tmp_path):
    return make_voc(tmp_path / "VOCv", good_images(), splits={"trainval": list(good_images())})


def rewrite(voc, index, text):
    with open(os.path.join(voc, "Annotations", index + ".xml"), "w") as f:
        f.write(text)


def check(voc, cfg, classes=None, split="trainval"):
    return check_voc([voc], split, classes, cfg)


def only_error(report, kind):
    """The report has exactly one error, of `kind`; -> its text."""
    assert [e.kind for e in report.errors] == [kind], report.format()
    return str(report.errors[0])


def test_clean_folder_has_no_issues(voc, cfg):
    r = check(voc, cfg)
    assert r.issues == [] and r.num_images == 6 and r.num_objects == 12
    assert r.class_counts == {"dog": 6, "cat": 6}


# -- errors: one test per kind -----------------------------------------------------------------
def test_unreadable_xml(voc, cfg):
    rewrite(voc, "im2", "this is not xml")
    msg = only_error(check(voc, cfg), "unreadable XML")
    assert "im2.xml" in msg and "fix or regenerate" in msg


def test_truncated_xml(voc, cfg):
    text = xml_text(64, 48, [("dog", (1, 2, 30, 40), 0)])
    rewrite(voc, "im3", text[: len(text) // 2])
    msg = only_error(check(voc, cfg), "unreadable XML")
    assert "im3.xml" in msg and "truncated" in msg


@pytest.mark.parametrize("value,what", [("nan", "not a finite number"), ("inf", "not a finite number"),
                                        ("12px", "not a number"), ("", "missing")])
def test_bad_coordinate(voc, cfg, value, what):
    rewrite(voc, "im1", xml_text(64, 48, [("dog", (1, 2, 30, 40), 0), ("cat", (value, 2, 30, 40), 0)]))
    msg = only_error(check(voc, cfg), "bad coordinate")
    assert "im1.xml: object 1 ('cat')" in msg and "<xmin>" in msg and what in msg


def test_inverted_box(voc, cfg):
    rewrite(voc, "im1", xml_text(64, 48, [("dog", (30, 2, 10, 40), 0)]))
    msg = only_error(check(voc, cfg), "inverted box")
    assert "object 0 ('dog')" in msg and "xmax < xmin" in msg and "swap" in msg


def test_box_outside_image(voc, cfg):
    rewrite(voc, "im1", xml_text(64, 48, [("dog", (1, 2, 65, 40), 0)]))
    msg = only_error(check(voc, cfg), "box outside image")
    assert "im1.xml" in msg and "outside the 64x48 image" in msg and "clip" in msg


def test_missing_image(voc, cfg):
    os.remove(os.path.join(voc, "JPEGImages", "im4.jpg"))
    msg = only_error(check(voc, cfg), "missing image")
    assert "im4.jpg" in msg and "not found" in msg


def test_missing_annotation(voc, cfg):
    os.remove(os.path.join(voc, "Annotations", "im4.xml"))
    msg = only_error(check(voc, cfg), "missing annotation")
    assert "im4.xml" in msg


def test_empty_image(voc, cfg):
    open(os.path.join(voc, "JPEGImages", "im0.jpg"), "w").close()
    msg = only_error(check(voc, cfg), "empty image")
    assert "im0.jpg" in msg and "0 bytes" in msg


def test_undecodable_image(voc, cfg):
    with open(os.path.join(voc, "JPEGImages", "im0.jpg"), "wb") as f:
        f.write(b"GIF89a not really an image at all" * 10)
    msg = only_error(check(voc, cfg), "undecodable image")
    assert "im0.jpg" in msg and "decode" in msg


def test_truncated_jpeg_third(voc, cfg):
    # a real photo-like JPEG cut to a third: cv2 still "decodes" it (grey fill)
    p = os.path.join(voc, "JPEGImages", "im5.jpg")
    rng = np.random.default_rng(1)
    cv2.imwrite(p, cv2.GaussianBlur(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), (5, 5), 2))
    data = open(p, "rb").read()
    with open(p, "wb") as f:
        f.write(data[: len(data) // 3])
    assert cv2.imread(p) is not None  # the silent failure this check exists for
    msg = only_error(check(voc, cfg), "truncated image")
    assert "im5.jpg" in msg and "truncated JPEG" in msg


def test_truncated_png(tmp_path, cfg):
    p = str(tmp_path / "a.png")
    cv2.imwrite(p, np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8))
    data = open(p, "rb").read()
    open(p, "wb").write(data[: len(data) // 3])
    r = Report("x")
    check_image(p, r)
    assert [e.kind for e in r.errors] in (["truncated image"], ["undecodable image"])


def test_unknown_class(voc, cfg):
    rewrite(voc, "im1", xml_text(64, 48, [("dog", (1, 2, 30, 40), 0), ("horse", (1, 2, 9, 9), 0)]))
    msg = only_error(check(voc, cfg, classes=["dog", "cat"]), "unknown class")
    assert "object 1 ('horse')" in msg and "classes.txt" in msg


def test_empty_set(voc, cfg):
    open(os.path.join(voc, "ImageSets", "Main", "trainval.txt"), "w").close()
    msg = only_error(check(voc, cfg), "empty set")
    assert "trainval.txt" in msg and "empty" in msg


def test_set_without_objects(tmp_path, cfg):
    root = make_voc(tmp_path / "VOCe", {"a": (40, 30, [])}, splits={"trainval": ["a"]})
    r = check(root, cfg)
    assert "empty set" in [e.kind for e in r.errors]


def test_duplicate_ids(voc, cfg):
    with open(os.path.join(voc, "ImageSets", "Main", "trainval.txt"), "a") as f:
        f.write("im2\n")
    msg = only_error(check(voc, cfg), "duplicate id")
    assert "'im2' is listed twice (lines 3 and 7)" in msg


def test_size_mismatch(voc, cfg):
    rewrite(voc, "im1", xml_text(48, 64, [("dog", (1, 2, 30, 40), 0)]))
    msg = only_error(check(voc, cfg), "size mismatch")
    assert "48x64" in msg and "64x48" in msg


# -- warnings ---------------------------------------------------------------------------------
def kinds(report, level="warning"):
    return sorted(i.kind for i in report.issues if i.level == level)


def test_warnings(voc, cfg):
    rewrite(voc, "im0", xml_text(64, 48, [("dog", (1, 2, 30, 40), 0), ("dog", (1, 2, 30, 41), 0),
                                          ("cat", (20, 10, 60, 45), 0)]))
    rewrite(voc, "im1", xml_text(64, 48, [("dog", (1, 2, 30, 40), 0), ("cat", (5, 5, 6, 20), 0),
                                          ("bird", (3, 3, 40, 40), 0)]))
    rewrite(voc, "im2", xml_text(64, 48, []))
    r = check(voc, cfg)
    assert r.errors == []
    assert kinds(r) == ["duplicate box", "few objects", "no objects", "tiny box"], r.format()
    text = r.format()
    assert "im0.xml: object 1 ('dog'): duplicate of object 0" in text
    assert "im1.xml: object 1 ('cat'): tiny box 2x16 px" in text
    assert "class 'bird' has only 1 object(s)" in text


def test_anchor_fit_warning(tmp_path, cfg):
    # 6-8 px boxes in 600 px images: at the default anchors (128-512 px) nothing fits
    ims = {f"i{k}": (600, 600, [("speck", (100, 100, 106, 108), 0)]) for k in range(6)}
    root = make_voc(tmp_path / "VOCa", ims, splits={"trainval": list(ims)})
    r = check(root, cfg)
    assert kinds(r) == ["anchor fit"] and "ANCHOR_SCALES" in str(r.warnings[0])
    cfg.ANCHOR_SCALES = (0.5,)  # 8 px anchors
    assert kinds(check(root, cfg)) == []


def test_best_anchor_iou_by_hand():
    anchors = np.array([[16.0, 16.0], [32.0, 8.0]])
    # 16x16 box: exact; 8x8: 64/256; 32x16: max(256/512, 256/512)
    np.testing.assert_allclose(best_anchor_iou([[16, 16], [8, 8], [32, 16]], anchors),
                               [1.0, 0.25, 0.5])


# -- every problem of a folder in one run --------------------------------------------------
def broken_folder(root):
    ims = good_images(8)
    root = make_voc(root, ims, splits={"trainval": list(ims)})
    rewrite(root, "im0", "<annotation><object>")
    rewrite(root, "im1", xml_text(64, 48, [("dog", ("nan", 2, 30, 40), 0)]))
    rewrite(root, "im2", xml_text(64, 48, [("dog", (30, 2, 10, 40), 0)]))
    rewrite(root, "im3", xml_text(64, 48, [("cat", (1, 2, 99, 40), 0)]))
    os.remove(os.path.join(root, "JPEGImages", "im4.jpg"))
    p = os.path.join(root, "JPEGImages", "im5.jpg")
    data = open(p, "rb").read()
    open(p, "wb").write(data[: len(data) // 3])
    return root


def test_all_problems_in_one_run(tmp_path, cfg):
    root = broken_folder(tmp_path / "VOCb")
    r = check(root, cfg)
    assert kinds(r, "error") == ["bad coordinate", "box outside image", "inverted box",
                                 "missing image", "truncated image", "unreadable XML"]
    for i in range(6):
        assert f"im{i}." in r.format()


def test_training_stops_listing_every_error(tmp_path, cfg):
    """The loader (gt_roidb, used by every training stage) runs the same check first."""
    root = broken_folder(tmp_path / "VOCb")
    with pytest.raises(DatasetError) as e:
        get_imdb(f"voc_folder:{root}", cfg).roidb
    msg = str(e.value)
    assert isinstance(e.value, UserError) and "6 problem(s)" in msg
    assert all(f"im{i}." in msg for i in range(6))
    assert "<xmin> is 'nan'" in msg and "truncated JPEG" in msg


def test_check_is_cached_by_file_signature(voc, cfg):
    imdb = get_imdb(f"voc_folder:{voc}", cfg)
    assert len(imdb.roidb) == 6
    caches = [f for f in os.listdir(os.path.join(cfg.DATA_DIR, "cache")) if "_check_" in f]
    assert len(caches) == 1
    rewrite(voc, "im1", xml_text(64, 48, [("dog", (1, 2, "nan", 40), 0)]))
    os.utime(os.path.join(voc, "Annotations", "im1.xml"), ns=(1, 1))
    with pytest.raises(DataError, match="im1.xml"):
        get_imdb(f"voc_folder:{voc}", cfg).roidb


# -- the command-line tools ------------------------------------------------------------------
def run_tool(tool, *args, cwd=None):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "lib"), OMP_NUM_THREADS="1")
    env.pop("FRCNN_DEBUG", None)
    return subprocess.run([sys.executable, os.path.join(TOOLS, tool), *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=120)


def test_cli_check_dataset_nan(voc, tmp_path):
    rewrite(voc, "im1", xml_text(64, 48, [("dog", (1, 2, 30, 40), 0), ("cat", ("nan", 2, 30, 40), 0)]))
    p = run_tool("check_dataset.py", f"voc_folder:{voc}", "--set", "DATA_DIR", str(tmp_path / "d"))
    out = p.stdout + p.stderr
    assert p.returncode == 1 and "Traceback" not in out
    errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "im1.xml: object 1 ('cat'): <xmin> is 'nan'" in errors[0]
    assert "total: 1 error(s)" in out


def test_cli_check_dataset_truncated_jpeg_and_clean(voc, tmp_path):
    d = ["--set", "DATA_DIR", str(tmp_path / "d")]
    p = run_tool("check_dataset.py", f"voc_folder:{voc}", *d)
    assert p.returncode == 0 and "total: 0 error(s), 0 warning(s)" in p.stdout, p.stdout + p.stderr
    f = os.path.join(voc, "JPEGImages", "im3.jpg")
    data = open(f, "rb").read()
    open(f, "wb").write(data[: len(data) // 3])
    p = run_tool("check_dataset.py", f"voc_folder:{voc}:trainval", *d)
    errors = [ln for ln in p.stdout.splitlines() if ln.startswith("error:")]
    assert p.returncode == 1 and "Traceback" not in p.stdout + p.stderr
    assert len(errors) == 1 and "im3.jpg: truncated JPEG" in errors[0]


def test_cli_train_stops_before_training_without_traceback(tmp_path):
    root = broken_folder(tmp_path / "VOCb")
    args = ["--net", "TINY", "--imdb", f"voc_folder:{root}", "--iters", "1",
            "--set", "DATA_DIR", str(tmp_path / "d"), "OUTPUT_DIR", str(tmp_path / "o")]
    p = run_tool("train_net.py", *args)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "Traceback" not in p.stderr and p.stderr.startswith("error: ")
    assert all(f"im{i}." in p.stderr for i in range(6)) and "Iter" not in p.stdout
    p = run_tool("train_net.py", *args, "--debug")  # --debug shows where it came from
    assert p.returncode != 2 and "Traceback" in p.stderr and "DataError" in p.stderr


def test_cli_config_error(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("TRAIN:\n  SCALEZ: [1]\n")
    p = run_tool("check_dataset.py", "shapes_train", "--cfg", str(bad))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.startswith(f"error: {bad}: unknown config key: TRAIN.SCALEZ"), p.stderr
