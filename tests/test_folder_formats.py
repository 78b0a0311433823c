"""Labelled folders from a plain path: format detection, the six formats reading into the roidb
of the VOC version of the same boxes (and training to bit-identical weights), the coordinate
mapping of each format at the image border, each format's checks, background images, and
tools/convert_dataset.py's round trip."""
import json
import os

import cv2
import numpy as np
import pytest
import torch

from frcnn.config import get_default_cfg
from frcnn.datasets import DatasetError, get_imdb
from frcnn.datasets.convert import TARGETS, convert
from frcnn.datasets.formats import detect_format, read_folder
from frcnn.datasets.splits import split_by_name_hash
from test_validate import run_tool

ROIDB_KEYS = ("boxes", "gt_classes", "gt_overlaps", "seg_areas")


def _cfg(tmp_path):
    cfg = get_default_cfg()
    cfg.DATA_DIR = str(tmp_path / "data")
    cfg.SHAPES.NUM_TRAIN, cfg.SHAPES.NUM_TEST = 6, 3
    return cfg


def _image(path, w, h, value=128):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im = np.full((h, w, 3), value, np.uint8)
    cv2.rectangle(im, (w // 4, h // 4), (w // 2, h // 2), (20, 200, 40), -1)
    assert cv2.imwrite(str(path), im)


@pytest.fixture
def voc_set(tmp_path):
    """The shapes set as a VOC devkit (train 6 / test 3) plus one background image in train."""
    cfg = _cfg(tmp_path)
    get_imdb("shapes_train", cfg).roidb  # generates the folder
    from frcnn.datasets.shapes import shapes_dir

    voc = tmp_path / "voc"
    convert(read_folder(shapes_dir(cfg), "voc"), str(voc), "voc")
    _image(voc / "JPEGImages" / "zz_background.jpg", 120, 90, 60)
    (voc / "Annotations" / "zz_background.xml").write_text(
        "<annotation><size><width>120</width><height>90</height><depth>3</depth></size>"
        "</annotation>\n")
    for s in ("train", "trainval"):
        with open(voc / "ImageSets" / "Main" / f"{s}.txt", "a") as f:
            f.write("zz_background\n")
    return voc, cfg


def _assert_same_roidb(a, b):
    assert a.classes == b.classes
    assert a.image_index == b.image_index
    for x, y in zip(a.roidb, b.roidb):
        for k in ROIDB_KEYS:
            assert x[k].dtype == y[k].dtype and np.array_equal(x[k], y[k]), (x["index"], k)
        assert (x["width"], x["height"], x["flipped"]) == (y["width"], y["height"], y["flipped"])


@pytest.mark.parametrize("fmt", TARGETS)
def test_each_format_reads_into_the_roidb_of_the_voc_version(voc_set, tmp_path, fmt):
    voc, cfg = voc_set
    out = tmp_path / f"as_{fmt}"
    convert(read_folder(str(voc), "voc"), str(out), fmt)
    assert detect_format(str(out)) == fmt
    for side in ("trainval", "test"):
        ref = get_imdb(f"voc_folder:{voc}:{side}", cfg)
        _assert_same_roidb(get_imdb(f"{out}:{side}", cfg), ref)
    bg = get_imdb(str(out), cfg).roidb[-1]
    assert bg["index"] == "zz_background" and bg["boxes"].shape == (0, 4)


def test_one_seeded_training_gives_the_same_weights_from_every_format(voc_set, tmp_path):
    from frcnn.models import build_model
    from frcnn.roi_data.loader import loader_factory
    from frcnn.roi_data.roidb import filter_roidb, get_training_roidb
    from train_helpers import train

    voc, cfg = voc_set
    cfg.TRAIN.SCALES, cfg.TRAIN.MAX_SIZE, cfg.TRAIN.NUM_WORKERS = (160,), 270, 0
    cfg.TRAIN.RPN_PRE_NMS_TOP_N, cfg.TRAIN.RPN_POST_NMS_TOP_N = 600, 100
    cfg.ANCHOR_SCALES, cfg.SOLVER.DISPLAY = (2, 4, 8), 1000
    cfg.TRAIN.USE_FLIPPED = False
    torch.set_num_threads(1)
    weights = {}
    for fmt in TARGETS:
        path = str(voc) if fmt == "voc" else str(tmp_path / fmt)
        if fmt != "voc":
            convert(read_folder(str(voc), "voc"), path, fmt)
        imdb = get_imdb(path, cfg)
        roidb = filter_roidb(get_training_roidb(imdb, cfg), cfg)
        assert sum(e.get("background_image", False) for e in roidb) == 1
        torch.manual_seed(0)
        m = build_model("TINY", imdb.num_classes, cfg)
        # 7 iterations of 1 image: the 7 entries' first epoch, the background image included
        train(m, loader_factory(roidb, cfg, 1, 3), cfg, str(tmp_path / f"out_{fmt}"), 7, 100, 1,
              "t", roidb=roidb)
        weights[fmt] = m.state_dict()
    for fmt in TARGETS[1:]:
        for k, v in weights["voc"].items():
            assert torch.equal(v, weights[fmt][k]), (fmt, k)


# -- the mapping of each format's coordinates at the image border ------------------------------
W, H = 100, 50
FULL = (0.0, 0.0, 99.0, 49.0)      # a box over the whole 100x50 image, 0-based inclusive
CORNER = (90.0, 40.0, 99.0, 49.0)  # the bottom-right 10x10 pixels


def _write_border_sets(root):
    """The same two boxes, hand-written in each format. -> {format: folder}."""
    sets = {}
    y = root / "yolo"
    _image(y / "images" / "train" / "a.jpg", W, H)
    (y / "labels" / "train").mkdir(parents=True)
    (y / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 1.0 1.0\n1 0.95 0.9 0.1 0.2\n")
    (y / "data.yaml").write_text("path: .\ntrain: images/train\nnames: [full, corner]\n")
    sets["yolo"] = y
    lm = root / "labelme"
    _image(lm / "a.jpg", W, H)
    shapes = [{"label": "full", "points": [[0, 0], [100, 50]], "shape_type": "rectangle"},
              {"label": "corner", "points": [[100, 50], [90, 40]], "shape_type": "rectangle"}]
    (lm / "a.json").write_text(json.dumps({"shapes": shapes, "imagePath": "a.jpg",
                                           "imageWidth": W, "imageHeight": H}))
    (lm / "classes.txt").write_text("full\ncorner\n")
    sets["labelme"] = lm
    cv = root / "cvat"
    _image(cv / "images" / "a.jpg", W, H)
    (cv / "annotations.xml").write_text(
        '<annotations><version>1.1</version><meta><task><labels><label><name>full</name></label>'
        '<label><name>corner</name></label></labels></task></meta>'
        f'<image id="0" name="a.jpg" width="{W}" height="{H}">'
        '<box label="full" occluded="0" xtl="0" ytl="0" xbr="100" ybr="50"/>'
        '<box label="corner" occluded="1" xtl="90.00" ytl="40.00" xbr="100.00" ybr="50.00"/>'
        '<box label="full" outside="1" xtl="1" ytl="1" xbr="5" ybr="5"/></image></annotations>')
    sets["cvat"] = cv
    co = root / "coco"
    _image(co / "images" / "a.jpg", W, H)
    (co / "annotations").mkdir()
    (co / "annotations" / "instances.json").write_text(json.dumps({
        "images": [{"id": 7, "file_name": "a.jpg", "width": W, "height": H}],
        "categories": [{"id": 1, "name": "full"}, {"id": 2, "name": "corner"}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [0, 0, 100, 50]},
                        {"id": 2, "image_id": 7, "category_id": 2, "bbox": [90, 40, 10, 10]}]}))
    sets["coco"] = co
    li = root / "labelimg"
    _image(li / "a.jpg", W, H)
    (li / "a.xml").write_text(
        f"<annotation><size><width>{W}</width><height>{H}</height></size>"
        "<object><name>full</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>100</xmax>"
        "<ymax>50</ymax></bndbox></object><object><name>corner</name><bndbox><xmin>91</xmin>"
        "<ymin>41</ymin><xmax>100</xmax><ymax>50</ymax></bndbox></object></annotation>")
    (li / "classes.txt").write_text("full\ncorner\n")
    sets["labelimg"] = li
    return sets


@pytest.mark.parametrize("fmt", ["yolo", "labelme", "cvat", "coco", "labelimg"])
def test_border_boxes_map_to_the_last_pixel(tmp_path, fmt):
    """YOLO's centre 0.5 / size 1.0, LabelMe's and CVAT's edge 100, COCO's x 0 + w 100 and VOC's
    xmax 100 all end on pixel 99 (0-based) of a 100-pixel-wide image; the corner box likewise."""
    path = _write_border_sets(tmp_path)[fmt]
    imdb = get_imdb(f"{path}:all", _cfg(tmp_path))
    assert imdb.classes == ("__background__", "full", "corner")
    e = imdb.roidb[0]
    assert e["boxes"].tolist() == [list(FULL), list(CORNER)]
    assert e["gt_classes"].tolist() == [1, 2]
    assert e["seg_areas"].tolist() == [W * H, 100.0]


def test_roboflow_and_darknet_layouts(tmp_path):
    """Roboflow's YOLO export (data.yaml with ../train/images paths, valid/ as val) and its COCO
    export (<split>/_annotations.coco.json beside the images); CVAT's darknet export (obj.names,
    train.txt listing data/obj_train_data/<image>); a labelImg VOC folder with classes.txt."""
    cfg = _cfg(tmp_path)
    rf = tmp_path / "roboflow"
    for split, n in (("train", 3), ("valid", 2)):
        for k in range(n):
            _image(rf / split / "images" / f"{split}{k}.jpg", W, H)
            (rf / split / "labels").mkdir(parents=True, exist_ok=True)
            (rf / split / "labels" / f"{split}{k}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (rf / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnc: 1\n"
                                  "names: ['thing']\n")
    assert get_imdb(f"{rf}:test", cfg).image_index == ["valid0", "valid1"]
    assert get_imdb(f"{rf}", cfg).roidb[0]["boxes"].tolist() == [[25.0, 12.5, 74.0, 36.5]]
    rc = tmp_path / "roboflow_coco"
    for split in ("train", "test"):
        _image(rc / split / f"{split}.jpg", W, H)
        (rc / split / "_annotations.coco.json").write_text(json.dumps({
            "images": [{"id": 0, "file_name": f"{split}.jpg", "width": W, "height": H}],
            "categories": [{"id": 0, "name": "things"}, {"id": 1, "name": "thing"}],
            "annotations": [{"id": 0, "image_id": 0, "category_id": 1, "bbox": [1, 2, 3, 4]}]}))
    assert detect_format(str(rc)) == "coco"
    imdb = get_imdb(f"{rc}:test", cfg)
    assert imdb.image_index == ["test"] and imdb.classes == ("__background__", "things", "thing")
    assert imdb.roidb[0]["boxes"].tolist() == [[1.0, 2.0, 3.0, 5.0]]
    dk = tmp_path / "darknet"
    for k in range(2):
        _image(dk / "obj_train_data" / f"f{k}.jpg", W, H)
        (dk / "obj_train_data" / f"f{k}.txt").write_text("" if k else "1 0.5 0.5 1 1\n")
    (dk / "obj.names").write_text("a\nb\n")
    (dk / "train.txt").write_text("data/obj_train_data/f0.jpg\ndata/obj_train_data/f1.jpg\n")
    assert detect_format(str(dk)) == "yolo"
    r = get_imdb(f"{dk}:all", cfg).roidb
    assert [e["gt_classes"].tolist() for e in r] == [[2], []]  # f1: an empty label file
    li = _write_border_sets(tmp_path)["labelimg"]
    (li / "notes.txt").write_text("to do\n")
    assert detect_format(str(li)) == "labelimg"


# -- splits ----------------------------------------------------------------------------------
def test_split_by_name_hash_is_stable_when_photos_are_added():
    names = [f"photo_{i:03d}" for i in range(200)]
    train, test = split_by_name_hash(names, 0.2)
    assert sorted(train + test) == names and 25 <= len(test) <= 55
    train2, test2 = split_by_name_hash(names + [f"new_{i}" for i in range(50)], 0.2)
    assert set(test) <= set(test2) and set(train) <= set(train2)


def test_a_folder_without_splits_is_split_by_name_hash(tmp_path):
    root = tmp_path / "flat"
    names = [f"im{i:02d}" for i in range(20)]
    for n in names:
        _image(root / f"{n}.jpg", 64, 48)
        (root / f"{n}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "classes.txt").write_text("thing\n")
    cfg = _cfg(tmp_path)
    assert detect_format(str(root)) == "yolo"
    _, test = split_by_name_hash(names, 0.2)
    assert get_imdb(f"{root}:test", cfg).image_index == test
    assert set(get_imdb(str(root), cfg).image_index) == set(names) - set(test)


# -- checks: every problem of a folder, in one report ------------------------------------------
def _errors(path, cfg, split="all"):
    with pytest.raises(DatasetError) as e:
        get_imdb(f"{path}:{split}", cfg).roidb
    return str(e.value)


def test_yolo_checks(tmp_path):
    y = _write_border_sets(tmp_path)["yolo"]
    (y / "labels" / "train" / "a.txt").write_text(
        "0 0.5 0.5 1.0\n7 0.5 0.5 0.2 0.2\n0 0.5 0.5 1.2 0.2\n0 a b c d\n1 0.5 0.5 0.2 0.2\n")
    (y / "labels" / "train" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    _image(y / "images" / "train" / "bg.jpg", W, H)  # no label file: a background image
    msg = _errors(y, _cfg(tmp_path))
    lab = str(y / "labels" / "train" / "a.txt")
    assert f"{lab}: line 1: '0 0.5 0.5 1.0' has 4 values, expected 5 (class cx cy w h)" in msg
    assert f"{lab}: line 2: class id 7 is not in names (0-1)" in msg
    assert f"{lab}: line 3: '0 0.5 0.5 1.2 0.2': normalised values must lie in [0, 1]" in msg
    assert f"{lab}: line 4: '0 a b c d' is not 5 numbers" in msg
    assert f"{y / 'labels' / 'train' / 'orphan.txt'}: label file without an image; add the image" in msg
    assert "5 problem(s)" in msg and "bg.jpg" not in msg
    p = run_tool("check_dataset.py", str(y))
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "warning: " + str(y / "images" / "train" / "bg.jpg") + ": no label file" in p.stdout


def test_labelme_checks(tmp_path):
    lm = _write_border_sets(tmp_path)["labelme"]
    doc = json.loads((lm / "a.json").read_text())
    doc["imageWidth"] = 101
    doc["shapes"].append({"label": "full", "points": [[1, 1], [30, 1], [10, 20]],
                          "shape_type": "polygon"})
    (lm / "a.json").write_text(json.dumps(doc))
    (lm / "b.json").write_text(json.dumps({"shapes": [], "imagePath": "gone.jpg"}))
    p = run_tool("check_dataset.py", str(lm))
    out = p.stdout
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert f"error: {lm / 'a.json'}: the annotation says 101x50 but {lm / 'a.jpg'} is 100x50" in out
    assert f"error: {lm / 'b.json'}: imagePath 'gone.jpg' does not exist" in out
    assert f"warning: {lm / 'a.json'}: shape 2 ('full'): a polygon of 3 points: its bounding box" in out


def test_cvat_box_on_a_missing_image(tmp_path):
    cv = _write_border_sets(tmp_path)["cvat"]
    text = (cv / "annotations.xml").read_text().replace(
        "</annotations>", '<image id="1" name="b.jpg" width="10" height="10"><box label="full" '
        'xtl="0" ytl="0" xbr="5" ybr="5"/></image></annotations>')
    (cv / "annotations.xml").write_text(text)
    msg = _errors(cv, _cfg(tmp_path))
    assert (f"{cv / 'annotations.xml'}: image 1 ('b.jpg'): boxes for an image that is not in the "
            f"folder ({cv / 'images' / 'b.jpg'})") in msg


def test_two_images_with_one_name_in_different_folders(tmp_path):
    lm = _write_border_sets(tmp_path)["labelme"]
    (lm / "sub").mkdir()
    _image(lm / "sub" / "a.png", W, H)
    (lm / "sub" / "a.json").write_text(json.dumps({"shapes": [], "imagePath": "a.png"}))
    msg = _errors(lm, _cfg(tmp_path))
    assert "2 images named 'a'" in msg and "rename them" in msg


def test_coco_checks(tmp_path):
    co = _write_border_sets(tmp_path)["coco"]
    d = json.loads((co / "annotations" / "instances.json").read_text())
    d["annotations"] += [{"id": 3, "image_id": 7, "category_id": 9, "bbox": [0, 0, 5, 5]},
                         {"id": 4, "image_id": 8, "category_id": 1, "bbox": [0, 0, 5, 5]},
                         {"id": 5, "image_id": 7, "category_id": 1, "bbox": [0, 0, 0, 5]},
                         {"id": 6, "image_id": 7, "category_id": 1, "bbox": [95, 0, 10, 5]}]
    (co / "annotations" / "instances.json").write_text(json.dumps(d))
    msg = _errors(co, _cfg(tmp_path))
    assert "annotation 2 (id 3, image 'a.jpg'): unknown category_id 9" in msg
    assert "annotation 3: image_id 8 is not in 'images'" in msg
    assert "annotation 4 (id 5, image 'a.jpg') ('full'): bbox [0, 0, 0, 5] has width or height <= 0" in msg
    assert "x2 104, y2 4) lies outside the 100x50 image" in msg


def test_a_folder_that_is_no_data_set(tmp_path):
    root = tmp_path / "photos"
    _image(root / "a.jpg", 10, 10)
    (root / "notes.md").write_text("hi")
    p = run_tool("check_dataset.py", str(root))
    assert p.returncode == 1 and "Traceback" not in p.stderr
    err = p.stdout.splitlines()[0]
    assert err.startswith(f"error: {root}: not a labelled data set: found 1 image(s) and 1 .md file(s); "
                          "looked for a VOC devkit")
    assert "YOLO (data.yaml" in err and "LabelMe" in err and "CVAT" in err and "COCO" in err


# -- background images ---------------------------------------------------------------------------
def test_background_images_kept_for_folders_only(voc_set):
    from frcnn.roi_data.roidb import filter_roidb, get_training_roidb

    voc, cfg = voc_set
    cfg.TRAIN.USE_FLIPPED = False
    imdb = get_imdb(str(voc), cfg)
    kept = filter_roidb(get_training_roidb(imdb, cfg), cfg)
    assert [e["index"] for e in kept if e.get("background_image")] == ["zz_background"]
    cfg.TRAIN.KEEP_EMPTY_IMAGES = False
    assert len(filter_roidb(get_training_roidb(imdb, cfg), cfg)) == len(kept) - 1
    cfg.TRAIN.KEEP_EMPTY_IMAGES = "auto"
    assert not any(e.get("background_image")
                   for e in get_training_roidb(get_imdb("shapes_train", cfg), cfg))
    p = run_tool("check_dataset.py", f"{voc}", "--set", "DATA_DIR", cfg.DATA_DIR)
    assert "1 background image(s) without objects" in p.stdout


def test_keep_empty_images_takes_true_false_or_auto():
    from frcnn.config import cfg_from_list

    assert cfg_from_list(["TRAIN.KEEP_EMPTY_IMAGES", "False"]).TRAIN.KEEP_EMPTY_IMAGES is False
    assert cfg_from_list(["TRAIN.KEEP_EMPTY_IMAGES", "auto"]).TRAIN.KEEP_EMPTY_IMAGES == "auto"
    with pytest.raises(ValueError, match="TRAIN.KEEP_EMPTY_IMAGES: expected True, False or 'auto'"):
        cfg_from_list(["TRAIN.KEEP_EMPTY_IMAGES", "1"])


def test_an_image_without_objects_gives_all_background_targets():
    from frcnn.rpn.anchor_target import anchor_target
    from frcnn.roi_data.proposal_target import ProposalTargetParams, proposal_target

    anchors = torch.tensor([[0., 0., 15., 15.], [16., 0., 31., 15.], [0., 16., 15., 31.]])
    t = anchor_target(anchors, torch.zeros((0, 5)), torch.tensor([32., 32., 1.]),
                      generator=torch.Generator().manual_seed(0))
    labels = t[0] if isinstance(t, tuple) else t["labels"]
    assert labels.tolist() == [0, 0, 0]
    rois = torch.tensor([[0., 0., 10., 10.], [5., 5., 20., 20.]])
    out = proposal_target(rois, torch.zeros((0, 5)), 3, ProposalTargetParams(rois_per_image=4),
                          generator=torch.Generator().manual_seed(0))
    assert out["labels"].tolist() == [0, 0]
    assert not out["bbox_inside_weights"].any()


# -- conversion ------------------------------------------------------------------------------
def test_convert_round_trip_voc_yolo_voc_keeps_every_box(tmp_path):
    """VOC -> YOLO -> VOC with boxes off the pixel grid too: every box within 1/100 pixel."""
    src = tmp_path / "src"
    _image(src / "a.jpg", 333, 217)
    (src / "a.xml").write_text(
        "<annotation><size><width>333</width><height>217</height></size>"
        "<object><name>thing</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>333</xmax>"
        "<ymax>217</ymax></bndbox></object><object><name>thing</name><bndbox><xmin>10.25</xmin>"
        "<ymin>20.5</ymin><xmax>100.75</xmax><ymax>33</ymax></bndbox></object></annotation>")
    p = run_tool("convert_dataset.py", str(src), str(tmp_path / "y"), "--to", "yolo")
    assert p.returncode == 0, p.stderr
    p = run_tool("convert_dataset.py", str(tmp_path / "y"), str(tmp_path / "v"), "--to", "voc")
    assert p.returncode == 0, p.stderr
    a = read_folder(str(src), "labelimg").records[0].objects
    b = read_folder(str(tmp_path / "v"), "voc").records[0].objects
    assert [o[0] for o in a] == [o[0] for o in b]
    assert np.abs(np.array([o[1] for o in a]) - np.array([o[1] for o in b])).max() <= 0.01
    assert a[0][1] == b[0][1] == (0.0, 0.0, 332.0, 216.0)  # whole pixels: exact


@pytest.mark.parametrize("prefix", ["", "yolo:", "coco_json:"])
def test_the_experiment_scripts_take_a_folder(tmp_path, prefix):
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = ('NET=TINY; DATASET="$1"; source experiments/scripts/_datasets.sh alt_opt; '
              'echo "$TRAIN_IMDB|$TEST_IMDB|$CFG"')
    ds = f"{prefix}{tmp_path}"
    p = subprocess.run(["bash", "-c", script, "_", ds], cwd=root, capture_output=True, text=True)
    assert p.stdout.strip() == f"{ds}:trainval|{ds}:test|auto", p.stderr
    p = subprocess.run(["bash", "-c", script, "_", str(tmp_path / "missing")], cwd=root,
                       capture_output=True, text=True)
    assert p.returncode == 2 and "the path of a labelled folder" in p.stderr
