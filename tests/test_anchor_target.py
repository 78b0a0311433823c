import numpy as np
import torch

from frcnn.config import get_default_cfg, cfg_from_list
from frcnn.ops.reference import bbox_overlaps_reference
from frcnn.rpn.anchor_target import AnchorTargetParams, anchor_target, subsample
from frcnn.rpn.generate_anchors import generate_anchors, shifted_anchors


def _cfg(*pairs):
    return cfg_from_list(list(pairs), get_default_cfg()) if pairs else get_default_cfg()


def _run(anchors, gt, im_hw, cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    info = torch.tensor([im_hw[0], im_hw[1], 1.0])
    return anchor_target(torch.tensor(anchors, dtype=torch.float32),
                         torch.tensor(gt, dtype=torch.float32).reshape(-1, 5), info, AnchorTargetParams.from_cfg(cfg), g)


def test_ties_all_positive_and_thresholds():
    # two anchors tie at the gt's best IoU (< 0.7): both positive; a low one negative,
    # one between 0.3 and 0.7 that is not a best anchor: ignored
    gt = [[10, 10, 29, 29, 1]]                       # 20x20
    anchors = [[0, 10, 19, 29], [20, 10, 39, 29],    # IoU 10*20/(400+400-200)= 1/3 each (tie)
               [60, 60, 79, 79],                     # IoU 0
               [10, 10, 29, 29 + 30]]                # IoU 400/1000 = 0.4 > 1/3: the single best
    labels, targets, inw, outw = _run(anchors, gt, (100, 100), _cfg())
    assert labels.tolist() == [-1, -1, 0, 1]
    anchors[3] = [70, 10, 89, 29]                    # now the tie is the best
    labels, _, _, _ = _run(anchors, gt, (100, 100), _cfg())
    assert labels.tolist() == [1, 1, 0, 0]


def test_high_iou_positive_and_weights():
    gt = [[10, 10, 29, 29, 1]]
    anchors = [[10, 10, 29, 29], [11, 10, 29, 29], [50, 50, 69, 69], [60, 60, 79, 79]]
    labels, targets, inw, outw = _run(anchors, gt, (100, 100), _cfg())
    assert labels.tolist() == [1, 1, 0, 0]           # IoU 1 and 0.95 both >= 0.7
    np.testing.assert_allclose(outw.numpy(), np.full((4, 4), 0.25))
    np.testing.assert_allclose(inw.numpy(), [[1] * 4, [1] * 4, [0] * 4, [0] * 4])
    np.testing.assert_allclose(targets[0].numpy(), 0, atol=1e-7)
    w = 19.0
    np.testing.assert_allclose(targets[1].numpy(), [-0.5 / w, 0, np.log(20 / w), 0], rtol=1e-5)


def test_cross_boundary_ignored():
    gt = [[0, 0, 19, 19, 1]]
    anchors = [[-1, 0, 18, 19],      # IoU 0.9 with gt but sticks out left: ignored
               [0, 0, 19, 20],       # y2 == H: outside (needs y2 < H)
               [0, 0, 15, 15],       # inside, best remaining (IoU 0.64)
               [40, 0, 59, 19]]      # inside, bg
    labels, targets, inw, outw = _run(anchors, gt, (20, 100), _cfg())
    assert labels.tolist() == [-1, -1, 1, 0]
    assert float(targets[:2].abs().sum()) == 0 and float(outw[:2].sum()) == 0


def test_gt_without_overlap_marks_no_anchor():
    gt = [[10, 10, 29, 29, 1], [200, 200, 209, 209, 2]]   # the second overlaps no inside anchor
    anchors = [[10, 10, 29, 29], [50, 50, 69, 69], [60, 60, 79, 79]]
    labels, _, _, _ = _run(anchors, gt, (300, 300), _cfg())
    assert labels.tolist() == [1, 0, 0]


def test_no_gt_all_background_candidates():
    anchors = [[0, 0, 9, 9], [10, 10, 19, 19], [-5, 0, 4, 9]]
    labels, targets, _, outw = _run(anchors, np.zeros((0, 5)), (50, 50), _cfg())
    assert labels.tolist() == [0, 0, -1]
    np.testing.assert_allclose(outw[:2].numpy(), 0.5)


def test_sampling_counts():
    cfg = _cfg()
    anchors = shifted_anchors(38, 50, 16, generate_anchors())
    gt = torch.tensor([[100, 100, 500, 450, 1], [300, 50, 700, 400, 2]], dtype=torch.float32)
    info = torch.tensor([600., 800., 1.])
    g = torch.Generator().manual_seed(3)
    labels, targets, inw, outw = anchor_target(anchors, gt, info, AnchorTargetParams.from_cfg(cfg), g)
    nfg, nbg = int((labels == 1).sum()), int((labels == 0).sum())
    assert nfg <= 128 and nfg + nbg == 256
    np.testing.assert_allclose(outw[labels >= 0].numpy(), 1 / 256, rtol=1e-6)
    assert float(outw[labels < 0].abs().sum()) == 0
    # many positives: exactly 128 fg kept
    cfg2 = _cfg("TRAIN.RPN_POSITIVE_OVERLAP", "0.2")
    labels2, _, _, _ = anchor_target(anchors, gt, info, AnchorTargetParams.from_cfg(cfg2), g)
    assert int((labels2 == 1).sum()) == 128 and int((labels2 == 0).sum()) == 128


def _reference_labels(anchors, gt, H, W, cfg):
    """py-faster-rcnn's labelling (before sampling), straight from its description, in numpy."""
    inside = np.where((anchors[:, 0] >= 0) & (anchors[:, 1] >= 0) & (anchors[:, 2] < W) & (anchors[:, 3] < H))[0]
    a = anchors[inside]
    labels = np.full(len(inside), -1)
    ov = bbox_overlaps_reference(a.astype(np.float64), gt[:, :4].astype(np.float64))
    ov = np.asarray(ov)
    argmax = ov.argmax(1)
    maxo = ov[np.arange(len(inside)), argmax]
    gt_arg = ov.argmax(0)
    gt_max = ov[gt_arg, np.arange(ov.shape[1])]
    gt_arg = np.where(ov == gt_max)[0]
    labels[maxo < cfg.TRAIN.RPN_NEGATIVE_OVERLAP] = 0
    labels[gt_arg] = 1
    labels[maxo >= cfg.TRAIN.RPN_POSITIVE_OVERLAP] = 1
    full = np.full(len(anchors), -1)
    full[inside] = labels
    return full


def test_matches_reference_labelling_without_sampling():
    cfg = _cfg("TRAIN.RPN_BATCHSIZE", "100000", "TRAIN.RPN_FG_FRACTION", "1.0")
    rng = np.random.RandomState(0)
    anchors = shifted_anchors(20, 25, 16, generate_anchors())
    for _ in range(3):
        xy = rng.uniform(0, 300, size=(4, 2))
        wh = rng.uniform(20, 200, size=(4, 2))
        gt = np.hstack((xy, np.minimum(xy + wh, [399, 319]), np.ones((4, 1)))).astype(np.float32)
        labels, _, _, _ = anchor_target(anchors, torch.from_numpy(gt), torch.tensor([320., 400., 1.]),
                                           AnchorTargetParams.from_cfg(cfg))
        ref = _reference_labels(anchors.numpy(), gt, 320, 400, cfg)
        np.testing.assert_array_equal(labels.numpy(), ref)


def test_subsample_uniform_and_bounded():
    mask = torch.zeros(100, dtype=torch.bool)
    mask[::3] = True
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(100)
    for _ in range(200):
        s = subsample(mask, 10, g)
        assert int(s.sum()) == 10 and not bool((s & ~mask).any())
        counts += s.float()
    assert counts[mask].min() > 5          # every candidate gets picked sometimes
    assert int(subsample(mask, torch.tensor(1000), g).sum()) == int(mask.sum())
