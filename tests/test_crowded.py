"""Crowded scenes: the shapes_crowded set, anchors fitted to the boxes (coverage at the RPN's
positive rule, k-means scales) and proposals / detections per image sized from the objects."""
import numpy as np
import pytest

from frcnn import autocfg
from frcnn.anchor_fit import anchor_coverage, kmeans_scales
from frcnn.config import get_default_cfg
from frcnn.datasets import get_imdb
from frcnn.rpn.generate_anchors import generate_anchors


def test_shapes_crowded(tmp_path):
    cfg = get_default_cfg()
    cfg.DATA_DIR = str(tmp_path)
    cfg.SHAPES.NUM_TRAIN, cfg.SHAPES.NUM_TEST = 3, 1
    tr = get_imdb("shapes_crowded_train", cfg)
    plain = get_imdb("shapes_train", cfg)
    assert tr.name == "shapes_crowded_train" and tr.path != plain.path
    assert get_imdb("shapes_crowded_test", cfg).path == tr.path
    for e in tr.roidb:
        assert 30 <= len(e["boxes"]) <= 60
        b = e["boxes"].astype(float)
        side = np.sqrt((b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1))
        # 12-40 px shapes (aspect 0.7-1.4, rotated), >= 70 % of each visible
        assert side.max() <= 40 * 1.5 and side.min() >= 6
    assert max(len(e["boxes"]) for e in plain.roidb) <= 4  # the plain set is unchanged
    assert cfg.SHAPES.MAX_OBJECTS == 4                       # the caller's cfg is not touched


def test_anchor_coverage_hand_worked():
    a = generate_anchors(16, (1,), (2,))[0]  # [-8, -8, 23, 23]: a 32 px anchor at cell (0, 0)
    assert list(a) == [-8, -8, 23, 23]
    # the same box one cell in (x + 16, y + 16) is an anchor inside the image: covered
    assert anchor_coverage([(64, 64, [[8, 8, 39, 39]])], (1,), (2,)) == 1.0
    # a 16 px box inside a 32 px anchor: IoU 0.25 < 0.7
    assert anchor_coverage([(64, 64, [[16, 16, 31, 31]])], (1,), (2,)) == 0.0
    # the only matching anchor crosses the image border: the RPN does not label it
    assert anchor_coverage([(64, 64, [[-8, -8, 23, 23]])], (1,), (2,)) == 0.0
    # two images, 3 boxes, 2 covered
    cov = anchor_coverage([(64, 64, [[8, 8, 39, 39], [16, 16, 31, 31]]),
                           (48, 48, [[8, 8, 39, 39]])], (1,), (2,))
    assert cov == pytest.approx(2 / 3)


def test_kmeans_scales():
    sides = [16] * 50 + [17] * 10 + [64] * 40 + [66] * 5
    s = kmeans_scales(sides, 2)
    assert len(s) == 2 and s[0] == pytest.approx(np.exp(np.log([16] * 50 + [17] * 10).mean()) / 16,
                                                 abs=0.01)
    assert s[1] == pytest.approx(np.exp(np.log([64] * 40 + [66] * 5).mean()) / 16, abs=0.01)
    assert kmeans_scales([32] * 10, 3) == (2.0,)  # one size: one scale, not three copies


def _crowded_roidb(n=40, per_image=(30, 45, 60), side=20):
    out = []
    for i in range(n):
        k = per_image[i % len(per_image)]
        xs = (np.arange(k) % 12) * 40 + 8
        ys = (np.arange(k) // 12) * 40 + 8
        b = np.stack([xs, ys, xs + side - 1, ys + side - 1], 1).astype(np.float32)
        out.append({"width": 500, "height": 400, "boxes": b, "gt_classes": np.ones(len(b), np.int32),
                    "flipped": False})
    return out


def test_crowded_scenes_get_more_proposals_and_detections():
    keys, notes = autocfg.derive(_crowded_roidb(), "ELITE0", get_default_cfg())
    # 95th pct 60 objects: 15 x 60 = 900 proposals, 10 x that before NMS; most 60 -> 180
    assert keys["TRAIN.RPN_POST_NMS_TOP_N"] == keys["TEST.RPN_POST_NMS_TOP_N"] == 900
    assert keys["ALT_OPT.PROPOSAL_POST_NMS_TOP_N"] == 900
    assert keys["TRAIN.RPN_PRE_NMS_TOP_N"] == 9000
    assert keys["TEST.MAX_PER_IMAGE"] == 180
    assert "TRAIN.RPN_BATCHSIZE" not in keys  # the reference's 256 for crowded images
    assert "most 60" in notes[3]
    # 16 RoIs per object: 960 capped at 512 per image, 2 images per Fast R-CNN batch
    assert keys["TRAIN.BATCH_SIZE"] == 1024 and keys["POOLING_MODE"] == "align"
    assert keys["TRAIN.BBOX_SMOOTH_L1_SIGMA"] == 3.0
    # 20 px boxes: proposals under 10 px are dropped instead of the reference's 16 px
    assert keys["TRAIN.RPN_MIN_SIZE"] == keys["TEST.RPN_MIN_SIZE"] == 10
    # 20 objects per image (95th pct): 16 x 20 = 320 RoIs per image
    keys, _ = autocfg.derive(_crowded_roidb(per_image=(20,)), "ELITE0", get_default_cfg())
    assert keys["TRAIN.BATCH_SIZE"] == 640
    # few objects: the cards-like settings stay
    keys, _ = autocfg.derive(_crowded_roidb(per_image=(2, 3)), "ELITE0", get_default_cfg())
    assert keys["TRAIN.RPN_POST_NMS_TOP_N"] == 300 and keys["TEST.MAX_PER_IMAGE"] == 100
    assert keys["TRAIN.RPN_BATCHSIZE"] == 128 and keys["TRAIN.BATCH_SIZE"] == 128
    # end2end (1 image per batch): its reference's 128 RoIs per image for few objects, 512 crowded
    e2e = get_default_cfg()
    e2e.TRAIN.IMS_PER_BATCH = 1
    for per_image, rois in (((2, 3), 128), ((20,), 320), ((60,), 512)):
        keys, _ = autocfg.derive(_crowded_roidb(per_image=per_image), "ELITE0", e2e)
        assert keys["TRAIN.BATCH_SIZE"] == rois


def test_anchor_scales_change_only_when_coverage_improves():
    # 20 px boxes at scale 384 / 400 (a multiple of 32): 19.2 px; powers of two give 16, 32, 64 px
    # anchors (IoU <= 0.69 and 0.36: nothing covered); k-means puts one at 19.2 px
    keys, notes = autocfg.derive(_crowded_roidb(), "ELITE0", get_default_cfg())
    assert "0.0% with powers of two [1, 2, 4]" in notes[1] and "k-means kept" in notes[1]
    assert keys["ANCHOR_SCALES"] == (1.2,)
    cfg = get_default_cfg()
    cfg.ANCHOR_SCALES = (2, 4)
    keys, notes = autocfg.derive(_crowded_roidb(), "ELITE0", cfg, user_keys=["ANCHOR_SCALES"])
    assert "ANCHOR_SCALES" not in keys and "k-means" not in notes[1]


def test_schedule_of_auto_sized_folders():
    keys, notes = autocfg.derive(_crowded_roidb(), "ELITE0", get_default_cfg())
    assert keys["SOLVER.SCHEDULE"] == autocfg.FOLDER_SCHEDULE == "fixed"
    assert "--set SOLVER.SCHEDULE plateau" in notes[2]
    cfg = get_default_cfg()
    cfg.SOLVER.SCHEDULE = "plateau"
    keys, notes = autocfg.derive(_crowded_roidb(), "ELITE0", cfg, user_keys=["SOLVER.SCHEDULE"])
    assert "SOLVER.SCHEDULE" not in keys
    assert "SOLVER.SCHEDULE plateau: those iterations x 1.5 at most" in notes[2]
