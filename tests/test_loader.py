"""Training loader: blobs as the reference, determinism, resume, aspect grouping, shards."""
import itertools

import cv2
import numpy as np
import pytest
import torch

from frcnn.config import get_default_cfg
from frcnn.roi_data.loader import make_data_loader
from frcnn.roi_data.image_blob import get_image_blob
from frcnn.utils.blob import im_list_to_blob, prep_im_for_blob
from frcnn.roi_data.roidb import append_flipped, merge_proposals, prepare_roidb


@pytest.fixture
def cfg():
    c = get_default_cfg()
    c.TRAIN.SCALES = (40, 50)
    c.TRAIN.MAX_SIZE = 100
    c.TRAIN.NUM_WORKERS = 0
    return c


def _roidb(tmp_path, n=7):
    rng = np.random.default_rng(0)
    r = []
    for i in range(n):
        w, h = (60, 40) if i % 3 else (40, 64)  # 2/3 horizontal
        p = str(tmp_path / f"im{i}.png")
        cv2.imwrite(p, rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        boxes = np.array([[1, 2, 20, 30], [5, 5, 9, 9]], np.float32)
        ov = np.zeros((2, 3), np.float32)
        ov[[0, 1], [1, 2]] = 1
        r.append({"index": f"im{i}", "image": p, "width": w, "height": h, "boxes": boxes,
                  "gt_classes": np.array([1, 2], np.int32), "gt_overlaps": ov, "flipped": False})
    return prepare_roidb(append_flipped(r))


def _take(loader, n):
    return list(itertools.islice(iter(loader), n))


def _same(a, b):
    assert a["image_ids"] == b["image_ids"] and a["iteration"] == b["iteration"]
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["im_info"], b["im_info"])
    for x, y in zip(a["gt_boxes"], b["gt_boxes"]):
        assert torch.equal(x, y)


def test_prep_im_for_blob_reference():
    im = np.full((30, 60, 3), 200, np.uint8)
    out, s = prep_im_for_blob(im, np.array([[[100.0, 110.0, 120.0]]]), 60, 100)
    # short side 30 -> 60 would make the long side 120 > 100: capped
    assert s == pytest.approx(100 / 60) and out.shape == (50, 100, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[10, 10], [100, 90, 80])
    out, s = prep_im_for_blob(im, np.zeros((1, 1, 3)), 45, 1000)
    assert s == 1.5 and out.shape == (45, 90, 3)
    blob = im_list_to_blob([np.ones((2, 3, 3), np.float32), np.ones((4, 1, 3), np.float32)])
    assert blob.shape == (2, 4, 3, 3) and blob[0, 2:].sum() == 0 and blob[1, :, 1:].sum() == 0
    cfg = get_default_cfg()
    b, scales = get_image_blob([im], (15, 30), cfg)  # a pyramid of one image
    assert b.shape == (2, 30, 60, 3) and scales == [0.5, 1.0]


def test_batch_contents(tmp_path, cfg):
    r = _roidb(tmp_path)
    b = next(iter(make_data_loader(r, cfg, 2, seed=0)))
    assert b["images"].dtype == torch.float32 and b["images"].shape[:2] == (2, 3)
    assert b["im_info"].shape == (2, 3) and b["iteration"] == 0 and b["proposals"] is None
    for j, iid in enumerate(b["image_ids"]):
        e = next(e for e in r if e["index"] + ("_flipped" if e["flipped"] else "") == iid)
        h, w, s = b["im_info"][j].tolist()
        assert s * min(e["width"], e["height"]) in (pytest.approx(40), pytest.approx(50))
        assert (h, w) == (round(e["height"] * s), round(e["width"] * s))
        np.testing.assert_allclose(b["gt_boxes"][j][:, :4].numpy(), e["boxes"] * s, rtol=1e-6)
        np.testing.assert_array_equal(b["gt_boxes"][j][:, 4].numpy(), [1, 2])
        im = cv2.imread(e["image"])
        if e["flipped"]:
            im = im[:, ::-1]
        ref, _ = prep_im_for_blob(im, cfg.PIXEL_MEANS, s * min(im.shape[:2]), cfg.TRAIN.MAX_SIZE)
        got = b["images"][j].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(got[:int(h), :int(w)], ref, atol=1e-4)
        assert not got[int(h):].any() and not got[:, int(w):].any()  # zero padding


def test_deterministic_resume_and_workers(tmp_path, cfg):
    r = _roidb(tmp_path)
    a = _take(make_data_loader(r, cfg, 2, seed=5), 12)
    b = _take(make_data_loader(r, cfg, 2, seed=5), 12)
    for x, y in zip(a, b):
        _same(x, y)
    resumed = _take(make_data_loader(r, cfg, 2, seed=5, start_iter=7), 5)
    for x, y in zip(a[7:], resumed):
        _same(x, y)
    # heavy cv2 use in the parent first: forked workers must not deadlock on cv2's thread pool
    from frcnn.datasets.shapes import _params, generate_image
    generate_image(0, 0, 0, _params(cfg))
    workers = _take(make_data_loader(r, cfg, 2, seed=5, start_iter=3, num_workers=2), 4)
    for x, y in zip(a[3:], workers):
        _same(x, y)
    other = _take(make_data_loader(r, cfg, 2, seed=6), 12)
    assert [x["image_ids"] for x in other] != [x["image_ids"] for x in a]


def test_epochs_and_aspect_grouping(tmp_path, cfg):
    r = _roidb(tmp_path)  # 14 entries: 6 vertical, 8 horizontal
    loader = make_data_loader(r, cfg, 3, seed=1)
    per_epoch = loader.batches_per_epoch
    assert per_epoch == 2 + 3  # ceil(6/3) + ceil(8/3): partial batches completed in-group
    for epoch in range(2):
        seen = set()
        for b in _take(make_data_loader(r, cfg, 3, seed=1, start_iter=epoch * per_epoch), per_epoch):
            h, w = b["im_info"][:, 0], b["im_info"][:, 1]
            assert bool((w >= h).all()) or bool((w < h).all())  # one orientation per batch
            seen.update(b["image_ids"])
        assert len(seen) == len(r)  # every entry every epoch
    assert make_data_loader(r, cfg, 5, seed=1).batches_per_epoch == 4
    cfg.TRAIN.ASPECT_GROUPING = False
    assert make_data_loader(r, cfg, 5, seed=1).batches_per_epoch == 3


def test_rank_shards(tmp_path, cfg):
    r = _roidb(tmp_path)
    single = _take(make_data_loader(r, cfg, 4, seed=2), 6)
    r0 = _take(make_data_loader(r, cfg, 2, seed=2, rank=0, world_size=2), 6)
    r1 = _take(make_data_loader(r, cfg, 2, seed=2, rank=1, world_size=2), 6)
    for s, a, b in zip(single, r0, r1):
        assert s["image_ids"] == a["image_ids"] + b["image_ids"]  # the global batch, split
        assert torch.equal(s["im_info"], torch.cat([a["im_info"], b["im_info"]]))
    with pytest.raises(ValueError):
        make_data_loader(r, cfg, 2, seed=2, rank=2, world_size=2)


def test_proposals_and_crowd(tmp_path, cfg):
    r = _roidb(tmp_path, n=2)
    r[0]["gt_overlaps"][1] = -1  # crowd: not a training gt
    prepare_roidb(r)
    m = merge_proposals(r, [np.array([[0, 0, 10, 10], [2, 3, 30, 30]], np.float32)] * 2)
    b = next(iter(make_data_loader(m, cfg, 1, seed=0, with_proposals=True)))
    e = next(e for e in m if e["index"] + ("_flipped" if e["flipped"] else "") == b["image_ids"][0])
    s = b["im_info"][0, 2].item()
    np.testing.assert_allclose(b["proposals"][0].numpy(), e["boxes"][e["gt_classes"] == 0] * s,
                               rtol=1e-6)
    assert b["proposals"][0].shape == (2, 4) and b["proposals"][0].dtype == torch.float32
    want = 1 if e["index"] == "im0" else 2
    assert b["gt_boxes"][0].shape == (want, 5)


def test_grayscale_image_in_batch(tmp_path, cfg):
    p = str(tmp_path / "g.png")
    cv2.imwrite(p, np.full((40, 60), 77, np.uint8))
    r = prepare_roidb([{"index": "g", "image": p, "width": 60, "height": 40, "flipped": False,
                        "boxes": np.array([[1, 1, 5, 5]], np.float32),
                        "gt_classes": np.array([1], np.int32),
                        "gt_overlaps": np.array([[0, 1]], np.float32)}])
    b = next(iter(make_data_loader(r, cfg, 1, seed=0)))
    px = b["images"][0, :, 5, 5].numpy()
    np.testing.assert_allclose(px, 77 - cfg.PIXEL_MEANS.ravel(), atol=1e-3)
