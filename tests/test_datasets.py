"""Data sets: VOC folders (validation, cache, classes), pascal_voc, shapes, the cards set."""
import os
import struct
import threading

import cv2
import numpy as np
import pytest

from frcnn.config import get_default_cfg
from frcnn.datasets import DatasetError, get_imdb, list_imdbs
from frcnn.datasets.imdb import image_size, read_image

CARDS = "/work/shared/data/cards_voc/VOCcards"
if not os.path.isdir(CARDS):
    CARDS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cards_voc",
                         "VOCcards")


def xml_text(w, h, objects, size=True):
    objs = "".join(
        f"<object><name>{n}</name><difficult>{int(d)}</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d in objects)
    sz = f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>" if size else ""
    return f"<annotation><filename>x.jpg</filename>{sz}{objs}</annotation>"


def make_voc(root, images, splits=None):
    """images: {id: (w, h, [(name, (xmin, ymin, xmax, ymax) 1-based, difficult)])}."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    rng = np.random.default_rng(0)
    for index, (w, h, objs) in images.items():
        cv2.imwrite(os.path.join(root, "JPEGImages", index + ".jpg"),
                    rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        with open(os.path.join(root, "Annotations", index + ".xml"), "w") as f:
            f.write(xml_text(w, h, objs))
    splits = splits or {"trainval": list(images), "test": list(images)[:1]}
    for s, ids in splits.items():
        with open(os.path.join(root, "ImageSets", "Main", s + ".txt"), "w") as f:
            f.write("".join(i + "\n" for i in ids))
    return str(root)


@pytest.fixture
def cfg(tmp_path):
    c = get_default_cfg()
    c.DATA_DIR = str(tmp_path / "data")
    c.SHAPES.NUM_TRAIN, c.SHAPES.NUM_TEST = 6, 3
    return c


@pytest.fixture
def voc(tmp_path):
    return make_voc(tmp_path / "VOCmini", {
        "im1": (64, 48, [("dog", (1, 2, 30, 40), 0), ("Cat ", (10, 10, 64, 48), 0)]),
        "im2": (50, 60, [("dog", (5, 5, 20, 20), 1), ("bird", (3, 4, 5, 6), 0)]),
    })


def test_voc_folder_loads(voc, cfg):
    imdb = get_imdb(f"voc_folder:{voc}", cfg)
    assert imdb.name == "VOCmini_trainval"
    assert imdb.classes == ("__background__", "bird", "cat", "dog")  # sorted, lower-cased
    assert imdb.num_images == 2 and imdb.image_index == ["im1", "im2"]
    r = imdb.roidb
    np.testing.assert_array_equal(r[0]["boxes"], [[0, 1, 29, 39], [9, 9, 63, 47]])  # 1 -> 0-based
    assert r[0]["boxes"].dtype == np.float32 and r[0]["gt_classes"].dtype == np.int32
    np.testing.assert_array_equal(r[0]["gt_classes"], [3, 2])
    assert r[0]["gt_overlaps"].shape == (2, 4) and r[0]["gt_overlaps"][0, 3] == 1
    assert (r[0]["width"], r[0]["height"]) == (64, 48) and r[0]["flipped"] is False
    # difficult dropped for training
    np.testing.assert_array_equal(r[1]["gt_classes"], [1])
    assert r[1]["num_difficult"] == 1
    assert r[1]["image"].endswith(os.path.join("JPEGImages", "im2.jpg"))
    test = get_imdb(f"voc_folder:{voc}:test", cfg)
    assert test.name == "VOCmini_test" and test.num_images == 1 and test.classes == imdb.classes


def test_voc_folder_classes_file(voc, cfg):
    with open(os.path.join(voc, "classes.txt"), "w") as f:
        f.write("dog\ncat\nbird\nfish\n")
    imdb = get_imdb(f"voc_folder:{voc}", cfg)
    assert imdb.classes == ("__background__", "dog", "cat", "bird", "fish")
    np.testing.assert_array_equal(imdb.roidb[0]["gt_classes"], [1, 2])


def test_evaluate_detections_perfect(voc, cfg, tmp_path, capsys):
    imdb = get_imdb(f"voc_folder:{voc}", cfg)
    all_boxes = _gt_as_detections(imdb)
    m = imdb.evaluate_detections(all_boxes, str(tmp_path / "out"))
    assert m == pytest.approx(1.0)
    out = capsys.readouterr().out
    assert "AP for dog = 1.0000" in out and "Mean AP = 1.0000" in out
    lines = open(tmp_path / "out" / "results" / "comp4_det_trainval_dog.txt").read().splitlines()
    assert lines == ["im1 0.900 1.0 2.0 30.0 40.0"]
    # an image cut from the set (tools' --num-images) is not counted as missed
    imdb._image_index = imdb.image_index[:1]
    m = imdb.evaluate_detections([b[:1] for b in all_boxes], str(tmp_path / "out2"))
    assert imdb.aps["dog"] == pytest.approx(1.0) and np.isnan(imdb.aps["bird"])


def _gt_as_detections(imdb):
    return [[np.zeros((0, 5))] * imdb.num_images] + [
        [np.hstack([e["boxes"][e["gt_classes"] == c], np.full(((e["gt_classes"] == c).sum(), 1), 0.9)])
         for e in imdb.roidb] for c in range(1, imdb.num_classes)]


# -- validation: one test per kind of bad input; the message names the file ------------------
def _rewrite(voc, index, text):
    with open(os.path.join(voc, "Annotations", index + ".xml"), "w") as f:
        f.write(text)


def _error(voc, cfg, name=None):
    with pytest.raises(DatasetError) as e:
        get_imdb(name or f"voc_folder:{voc}", cfg).roidb
    return str(e.value)


def test_error_unreadable_xml(voc, cfg):
    _rewrite(voc, "im2", "<annotation><object>")
    msg = _error(voc, cfg)
    assert os.path.join("Annotations", "im2.xml") in msg and "fix" in msg


def test_error_missing_image(voc, cfg):
    os.remove(os.path.join(voc, "JPEGImages", "im2.jpg"))
    msg = _error(voc, cfg, f"voc_folder:{voc}")
    assert os.path.join("JPEGImages", "im2.jpg") in msg and "not found" in msg


def test_error_missing_annotation(voc, cfg):
    with open(os.path.join(voc, "ImageSets", "Main", "trainval.txt"), "a") as f:
        f.write("im3\n")
    msg = _error(voc, cfg)
    assert os.path.join("Annotations", "im3.xml") in msg


def test_error_x2_lt_x1(voc, cfg):
    _rewrite(voc, "im2", xml_text(50, 60, [("dog", (5, 5, 20, 20), 0), ("dog", (30, 5, 20, 20), 0)]))
    msg = _error(voc, cfg)
    assert "im2.xml" in msg and "object 1 ('dog')" in msg and "xmax < xmin" in msg


def test_error_y2_lt_y1(voc, cfg):
    _rewrite(voc, "im2", xml_text(50, 60, [("bird", (5, 30, 20, 20), 0)]))
    msg = _error(voc, cfg)
    assert "im2.xml" in msg and "object 0 ('bird')" in msg and "ymax < ymin" in msg


def test_error_box_outside_image(voc, cfg):
    _rewrite(voc, "im2", xml_text(50, 60, [("bird", (5, 5, 51, 20), 0)]))
    msg = _error(voc, cfg)
    assert "im2.xml" in msg and "object 0 ('bird')" in msg and "outside the 50x60 image" in msg


def test_error_box_zero_coordinate(voc, cfg):
    _rewrite(voc, "im2", xml_text(50, 60, [("bird", (0, 5, 20, 20), 0)]))
    msg = _error(voc, cfg)
    assert "im2.xml" in msg and "1-based" in msg


def test_error_box_outside_real_image(voc, cfg):
    # no <size> in the XML: checked against the image itself (50 x 60)
    _rewrite(voc, "im2", xml_text(50, 60, [("bird", (5, 5, 20, 61), 0)], size=False))
    msg = _error(voc, cfg)
    assert "im2.xml" in msg and "outside" in msg and "im2.jpg" in msg


def test_error_xml_size_differs_from_image(voc, cfg):
    _rewrite(voc, "im2", xml_text(60, 50, [("bird", (5, 5, 20, 20), 0)]))
    msg = _error(voc, cfg)
    assert "im2.xml" in msg and "60x50" in msg and "50x60" in msg


def test_error_unknown_class(voc, cfg):
    with open(os.path.join(voc, "classes.txt"), "w") as f:
        f.write("dog\ncat\n")
    msg = _error(voc, cfg)
    assert "im2.xml" in msg and "unknown class 'bird'" in msg and "class list" in msg


def test_error_empty_image_set(voc, cfg):
    open(os.path.join(voc, "ImageSets", "Main", "trainval.txt"), "w").close()
    msg = _error(voc, cfg)
    assert os.path.join("ImageSets", "Main", "trainval.txt") in msg and "empty" in msg


def test_error_missing_split(voc, cfg):
    msg = _error(voc, cfg, f"voc_folder:{voc}:val")
    assert "val.txt" in msg and "test" in msg


def test_error_not_voc_folder(tmp_path, cfg):
    msg = _error(None, cfg, f"voc_folder:{tmp_path}")
    assert str(tmp_path) in msg and "Annotations" in msg


# -- annotation cache ------------------------------------------------------------------------
def test_cache_follows_image_set_and_files(voc, cfg):
    assert get_imdb(f"voc_folder:{voc}", cfg).roidb[0]["boxes"].shape == (2, 4)
    assert os.listdir(os.path.join(cfg.DATA_DIR, "cache"))
    with open(os.path.join(voc, "ImageSets", "Main", "trainval.txt"), "w") as f:
        f.write("im2\n")
    r = get_imdb(f"voc_folder:{voc}", cfg).roidb
    assert [e["index"] for e in r] == ["im2"]
    _rewrite(voc, "im2", xml_text(50, 60, [("bird", (3, 4, 7, 9), 0)]))
    os.utime(os.path.join(voc, "Annotations", "im2.xml"), ns=(1, 1))
    r = get_imdb(f"voc_folder:{voc}", cfg).roidb
    np.testing.assert_array_equal(r[0]["boxes"], [[2, 3, 6, 8]])
    caches = [f for f in os.listdir(os.path.join(cfg.DATA_DIR, "cache")) if "gt_roidb" in f]
    assert len(caches) == 1  # older caches of this set are removed


# -- images ----------------------------------------------------------------------------------
def _exif_app1(orientation):
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + b"\0\0\0\0"
    tiff = b"II*\0" + struct.pack("<I", 8) + ifd
    data = b"Exif\0\0" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(data) + 2) + data


def test_image_formats(tmp_path):
    gray = (np.arange(30 * 20) % 256).astype(np.uint8).reshape(30, 20)
    p = str(tmp_path / "g.png")
    cv2.imwrite(p, gray)
    im = read_image(p)
    assert im.shape == (30, 20, 3) and im.dtype == np.uint8
    assert np.array_equal(im[..., 0], gray) and np.array_equal(im[..., 2], gray)
    assert image_size(p) == (20, 30)
    rgba = np.zeros((7, 9, 4), np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    assert read_image(str(tmp_path / "a.png")).shape == (7, 9, 3)
    cv2.imwrite(str(tmp_path / "g.jpg"), gray)
    assert read_image(str(tmp_path / "g.jpg")).shape == (30, 20, 3)
    assert image_size(str(tmp_path / "g.jpg")) == (20, 30)
    # EXIF orientation 6 (rotate 90): cv2 turns the image; the header size must follow
    ok, buf = cv2.imencode(".jpg", np.zeros((30, 20, 3), np.uint8))
    b = buf.tobytes()
    q = tmp_path / "rot.jpg"
    q.write_bytes(b[:2] + _exif_app1(6) + b[2:])
    assert read_image(str(q)).shape[:2] == (20, 30)
    assert image_size(str(q)) == (30, 20)
    with pytest.raises(DatasetError, match="nope.jpg"):
        read_image(str(tmp_path / "nope.jpg"))
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="junk.jpg"):
        image_size(str(tmp_path / "junk.jpg"))


def test_png_images_in_folder(tmp_path, cfg):
    root = make_voc(tmp_path / "VOCpng", {"a": (40, 30, [("x", (1, 1, 10, 10), 0)])})
    os.remove(os.path.join(root, "JPEGImages", "a.jpg"))
    cv2.imwrite(os.path.join(root, "JPEGImages", "a.png"), np.zeros((30, 40), np.uint8))
    imdb = get_imdb(f"voc_folder:{root}", cfg)
    assert imdb.image_path_at(0).endswith("a.png") and imdb.roidb[0]["width"] == 40


# -- pascal_voc, factory ---------------------------------------------------------------------
def test_pascal_voc_layout(tmp_path, cfg):
    make_voc(os.path.join(cfg.DATA_DIR, "VOCdevkit2007", "VOC2007"),
             {"000005": (80, 60, [("chair", (1, 1, 20, 20), 0), ("person", (5, 5, 60, 50), 1)])})
    imdb = get_imdb("voc_2007_trainval", cfg)
    assert imdb.name == "voc_2007_trainval" and imdb.num_classes == 21 and imdb.use_07_metric
    np.testing.assert_array_equal(imdb.roidb[0]["gt_classes"], [imdb.class_to_ind["chair"]])
    with pytest.raises(DatasetError, match="VOCdevkit2012"):
        get_imdb("voc_2012_trainval", cfg)
    make_voc(os.path.join(cfg.DATA_DIR, "VOCdevkit2012", "VOC2012"),
             {"2008_000001": (50, 50, [("dog", (1, 1, 20, 20), 0)])})
    assert not get_imdb("voc_2012_trainval", cfg).use_07_metric
    both = get_imdb("voc_0712_trainval", cfg)
    assert both.image_index == ["000005", "2008_000001"]
    assert both.image_path_at(1).endswith(os.path.join("VOC2012", "JPEGImages", "2008_000001.jpg"))
    assert [len(e["boxes"]) for e in both.roidb] == [1, 1]


def test_factory_names(cfg):
    names = list_imdbs()
    for n in ("voc_2007_trainval", "voc_2007_test", "voc_2012_train", "voc_0712_trainval",
              "coco_2014_train", "coco_2017_val", "shapes_train", "shapes_test"):
        assert n in names
    with pytest.raises(KeyError, match="unknown data set"):
        get_imdb("voc_2009_trainval", cfg)
    with pytest.raises(KeyError):
        get_imdb("shapes_val", cfg)


# -- shapes ----------------------------------------------------------------------------------
def test_shapes(cfg, tmp_path):
    tr = get_imdb("shapes_train", cfg)
    te = get_imdb("shapes_test", cfg)
    assert tr.classes == ("__background__", "circle", "square", "triangle")
    assert (tr.num_images, te.num_images) == (6, 3) and tr.path == te.path
    for e in tr.roidb + te.roidb:
        assert 300 <= e["width"] <= 500 and 300 <= e["height"] <= 500
        assert 1 <= len(e["boxes"]) <= 4
        b = e["boxes"]
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= e["width"] - 1).all()
        assert (b[:, 1] >= 0).all() and (b[:, 3] <= e["height"] - 1).all()
        assert ((b[:, 2:] - b[:, :2]) >= 10).all()
    # deterministic: another data dir, same seed -> identical files; train does not depend on
    # NUM_TEST
    c2 = get_default_cfg()
    c2.DATA_DIR = str(tmp_path / "other")
    c2.SHAPES.NUM_TRAIN, c2.SHAPES.NUM_TEST = 6, 1
    tr2 = get_imdb("shapes_train", c2)
    for i in range(6):
        assert open(tr.image_path_at(i), "rb").read() == open(tr2.image_path_at(i), "rb").read()
    np.testing.assert_array_equal(tr.roidb[5]["boxes"], tr2.roidb[5]["boxes"])
    c2.SHAPES.SEED = 1
    assert get_imdb("shapes_train", c2).path != tr2.path
    assert te.evaluate_detections(_gt_as_detections(te), str(tmp_path / "ev")) == pytest.approx(1.0)


def test_shapes_concurrent_first_use(cfg):
    errs, paths = [], []

    def run():
        try:
            paths.append(get_imdb("shapes_test", cfg).path)
        except Exception as e:  # pragma: no cover
            errs.append(e)
    ts = [threading.Thread(target=run) for _ in range(3)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert not errs and len(set(paths)) == 1
    parent = os.path.dirname(paths[0])
    assert os.listdir(parent) == [os.path.basename(paths[0])]  # no temp dirs left


# -- the cards set ---------------------------------------------------------------------------
@pytest.mark.skipif(not os.path.isdir(CARDS), reason="cards data set not present")
def test_cards_folder(cfg):
    tr = get_imdb(f"voc_folder:{CARDS}", cfg)
    te = get_imdb(f"voc_folder:{CARDS}:test", cfg)
    assert tr.classes == ("__background__", "ace", "jack", "king", "nine", "queen", "ten")
    assert (tr.num_images, te.num_images) == (296, 67)
    r = tr.roidb + te.roidb
    assert sum(len(e["boxes"]) for e in r) == 670
    for i in (0, 100):  # header sizes agree with what cv2 loads
        im = read_image(r[i]["image"])
        assert im.shape[:2] == (r[i]["height"], r[i]["width"])
    assert te.evaluate_detections(_gt_as_detections(te), cfg.DATA_DIR) == pytest.approx(1.0)
