"""coco_json:<annotations.json>:<image_dir>[:split]: loading, split rule, validation, evaluation."""
import json
import os

import cv2
import numpy as np
import pytest

from frcnn.config import get_default_cfg
from frcnn.datasets import DatasetError, get_imdb
from frcnn.datasets.coco_json import split_ids, voc_aps
from frcnn.datasets.validate import check_coco

pytest.importorskip("pycocotools")

from test_validate import run_tool  # noqa: E402


@pytest.fixture
def cfg(tmp_path):
    c = get_default_cfg()
    c.DATA_DIR = str(tmp_path / "data")
    return c


def make_coco(root, n=10):
    """n images 64x48, each with a dog [2, 3, 20, 30] and a cat [30, 10, 25, 30] (x, y, w, h)."""
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in range(n):
        name = f"img{i:02d}.jpg"
        cv2.imwrite(os.path.join(root, "images", name), rng.integers(0, 255, (48, 64, 3), np.uint8))
        images.append({"id": 100 + i, "file_name": name, "width": 64, "height": 48})
        anns.append({"id": 2 * i + 1, "image_id": 100 + i, "category_id": 3,
                     "bbox": [2, 3, 20, 30], "area": 600, "iscrowd": 0})
        anns.append({"id": 2 * i + 2, "image_id": 100 + i, "category_id": 1,
                     "bbox": [30, 10, 25, 30], "area": 750, "iscrowd": 0})
    data = {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}]}
    path = os.path.join(root, "ann.json")
    with open(path, "w") as f:
        json.dump(data, f)
    return path, os.path.join(root, "images"), data


def write(path, data):
    with open(path, "w") as f:
        json.dump(data, f)


def test_load_split_and_roidb(tmp_path, cfg):
    ann, ims, _ = make_coco(str(tmp_path))
    full = get_imdb(f"coco_json:{ann}:{ims}", cfg)
    assert full.name == "ann_all" and full.classes == ("__background__", "cat", "dog")
    assert full.num_images == 10
    train = get_imdb(f"coco_json:{ann}:{ims}:trainval", cfg)
    test = get_imdb(f"coco_json:{ann}:{ims}:test", cfg)
    assert test.image_index == ["104", "109"]  # every 5th image by file name
    assert sorted(train.image_index + test.image_index, key=int) == full.image_index
    e = test.roidb[0]
    np.testing.assert_array_equal(e["boxes"], [[2, 3, 21, 32], [30, 10, 54, 39]])
    np.testing.assert_array_equal(e["gt_classes"], [2, 1])
    assert e["image"].endswith("img04.jpg")


def test_split_rule_by_file_name():
    ims = [{"id": i, "file_name": f"{9 - i}.jpg"} for i in range(10)]
    assert split_ids(ims, "test") == [5, 0]  # files 4.jpg and 9.jpg
    assert len(split_ids(ims, "trainval")) == 8 and len(split_ids(ims, "all")) == 10


def test_every_problem_in_one_run(tmp_path, cfg):
    ann, ims, data = make_coco(str(tmp_path))
    a = data["annotations"]
    a[0]["bbox"] = [float("nan"), 3, 20, 30]             # non-finite (json.dump writes NaN)
    a[2]["bbox"] = [2, 3, -5, 30]                        # width <= 0
    a[4]["bbox"] = [50, 3, 20, 30]                       # outside 64 px
    a[6]["category_id"] = 7                              # unknown class
    a.append({"id": 99, "image_id": 555, "category_id": 1, "bbox": [1, 1, 5, 5]})  # no such image
    a.append(dict(a[8]))                                 # duplicate annotation id
    data["images"].append(dict(data["images"][3]))       # duplicate image id
    os.remove(os.path.join(ims, "img05.jpg"))            # missing image
    p = os.path.join(ims, "img06.jpg")
    b = open(p, "rb").read()
    open(p, "wb").write(b[: len(b) // 3])                # truncated JPEG
    write(ann, data)
    r = check_coco(ann, ims, "all", cfg)
    kinds = sorted(e.kind for e in r.errors)
    assert kinds == ["bad coordinate", "box outside image", "duplicate id", "duplicate id",
                     "inverted box", "missing image", "truncated image", "unknown class",
                     "unknown image"], r.format()
    text = r.format()
    assert "ann.json: annotation 0 (id 1, image 'img00.jpg') ('dog'): bbox [nan, 3, 20, 30]" in text
    assert "img06.jpg: truncated JPEG" in text and "image id 103 is used twice" in text
    # training stops before the first iteration with the same list
    with pytest.raises(DatasetError) as e:
        get_imdb(f"coco_json:{ann}:{ims}", cfg).roidb
    assert "9 problem(s)" in str(e.value)


def test_bad_json(tmp_path, cfg):
    p = tmp_path / "x.json"
    p.write_text('{"images": [')
    with pytest.raises(DatasetError, match="x.json: unreadable json"):
        get_imdb(f"coco_json:{p}:{tmp_path}", cfg)
    r = check_coco(str(p), str(tmp_path), "all", cfg)
    assert [e.kind for e in r.errors] == ["unreadable json"]


def test_evaluation_voc_and_coco(tmp_path, cfg, capsys):
    ann, ims, _ = make_coco(str(tmp_path))
    imdb = get_imdb(f"coco_json:{ann}:{ims}:test", cfg)
    gt = imdb.roidb
    all_boxes = [[np.zeros((0, 5))] * imdb.num_images] + [
        [np.hstack([e["boxes"][e["gt_classes"] == c], np.full(((e["gt_classes"] == c).sum(), 1), 0.9)])
         for e in gt] for c in range(1, imdb.num_classes)]
    ap = imdb.evaluate_detections(all_boxes, str(tmp_path / "out"))
    assert ap == pytest.approx(1.0) and imdb.voc_map == pytest.approx(1.0)
    out = capsys.readouterr().out
    assert "Mean AP@0.5 (VOC) = 1.0000" in out and "AP for dog = 1.0000" in out
    # a wrong-class detection halves the precision of 'cat' (by hand: AP 0.5 at two images)
    miss = [list(x) for x in all_boxes]
    miss[1] = [np.vstack([d, [[0, 0, 10, 10, 0.95]]]) for d in all_boxes[1]]
    aps = voc_aps(miss, gt, imdb.num_classes)
    assert aps[2] == pytest.approx(1.0) and aps[1] == pytest.approx(0.5)


def test_check_dataset_cli(tmp_path):
    ann, ims, data = make_coco(str(tmp_path))
    data["annotations"][3]["bbox"] = [30, 10, 25, "wide"]
    write(ann, data)
    p = run_tool("check_dataset.py", f"coco_json:{ann}:{ims}", "--set", "DATA_DIR", str(tmp_path / "d"))
    errs = [ln for ln in p.stdout.splitlines() if ln.startswith("error:")]
    assert p.returncode == 1 and "Traceback" not in p.stdout + p.stderr
    assert len(errs) == 1 and "annotation 3 (id 4, image 'img01.jpg')" in errs[0]
