"""COCO through pycocotools on a tiny json written here."""
import json
import os

import cv2
import numpy as np
import pytest

from frcnn.config import get_default_cfg
from frcnn.datasets import DatasetError, get_imdb
from frcnn.roi_data.image_blob import gt_mask
from frcnn.roi_data.roidb import get_training_roidb

pytest.importorskip("pycocotools")


@pytest.fixture
def cfg(tmp_path):
    c = get_default_cfg()
    c.DATA_DIR = str(tmp_path / "data")
    root = os.path.join(c.DATA_DIR, "coco")
    os.makedirs(os.path.join(root, "annotations"))
    os.makedirs(os.path.join(root, "images", "val2014"))
    images = [{"id": 42, "file_name": "COCO_val2014_000000000042.jpg", "width": 64, "height": 48},
              {"id": 7, "file_name": "COCO_val2014_000000000007.jpg", "width": 50, "height": 60}]
    for im in images:
        cv2.imwrite(os.path.join(root, "images", "val2014", im["file_name"]),
                    np.zeros((im["height"], im["width"], 3), np.uint8))
    anns = [
        {"id": 1, "image_id": 42, "category_id": 3, "bbox": [10, 5, 20, 30], "area": 600, "iscrowd": 0},
        {"id": 2, "image_id": 42, "category_id": 1, "bbox": [50, 40, 30, 30], "area": 900, "iscrowd": 0},
        {"id": 3, "image_id": 42, "category_id": 1, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 1},
        {"id": 4, "image_id": 7, "category_id": 1, "bbox": [3, 4, 10, 12], "area": 120, "iscrowd": 0},
        {"id": 5, "image_id": 7, "category_id": 3, "bbox": [3, 4, 10, 12], "area": 0, "iscrowd": 0},
    ]
    cats = [{"id": 1, "name": "cat", "supercategory": "animal"},
            {"id": 3, "name": "dog", "supercategory": "animal"}]
    with open(os.path.join(root, "annotations", "instances_val2014.json"), "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": cats}, f)
    return c


def test_coco_roidb(cfg):
    imdb = get_imdb("coco_2014_val", cfg)
    assert imdb.name == "coco_2014_val" and imdb.classes == ("__background__", "cat", "dog")
    assert sorted(imdb.image_index) == ["42", "7"]
    r = {e["index"]: e for e in imdb.roidb}
    e = r["42"]
    # x2 = x1 + w - 1, clipped to the image (64 x 48)
    np.testing.assert_array_equal(e["boxes"], [[10, 5, 29, 34], [50, 40, 63, 47], [0, 0, 4, 4]])
    np.testing.assert_array_equal(e["gt_classes"], [2, 1, 1])
    assert (e["gt_overlaps"][2] == -1).all()  # crowd: never fg nor bg
    assert os.path.isfile(e["image"]) and (e["width"], e["height"]) == (64, 48)
    assert len(r["7"]["boxes"]) == 1  # the zero-area box is dropped
    t = get_training_roidb(imdb, cfg)
    crowd = next(x for x in t if x["index"] == "42")
    np.testing.assert_array_equal(gt_mask(crowd), [True, True, False])


def test_coco_eval_perfect_and_empty(cfg, tmp_path):
    imdb = get_imdb("coco_2014_val", cfg)
    # perfect detections = the json's non-crowd boxes (COCOeval scores against those, unclipped)
    ann = json.load(open(os.path.join(cfg.DATA_DIR, "coco", "annotations", "instances_val2014.json")))
    cat_to_c = {1: 1, 3: 2}
    all_boxes = [[np.zeros((0, 5))] * imdb.num_images for _ in range(imdb.num_classes)]
    for a in ann["annotations"]:
        if a["iscrowd"]:
            continue
        i, c = imdb.image_index.index(str(a["image_id"])), cat_to_c[a["category_id"]]
        x, y, w, h = a["bbox"]
        all_boxes[c][i] = np.vstack([all_boxes[c][i], [x, y, x + w - 1, y + h - 1, 0.9]])
    ap = imdb.evaluate_detections(all_boxes, str(tmp_path / "out"))
    assert ap == pytest.approx(1.0)
    assert imdb.aps["cat"] == pytest.approx(1.0) and imdb.aps["dog"] == pytest.approx(1.0)
    res = json.load(open(tmp_path / "out" / "detections_coco_2014_val_results.json"))
    d = next(x for x in res if x["image_id"] == 42 and x["category_id"] == 3)
    assert d["bbox"] == [10, 5, 20, 30]  # back to COCO x, y, w, h
    empty = [[np.zeros((0, 5))] * imdb.num_images for _ in range(imdb.num_classes)]
    assert imdb.evaluate_detections(empty, str(tmp_path / "out2")) == 0.0


def test_coco_missing(cfg):
    with pytest.raises(DatasetError, match="instances_train2017.json"):
        get_imdb("coco_2017_train", cfg)
