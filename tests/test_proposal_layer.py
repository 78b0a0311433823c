import numpy as np
import torch

from frcnn.config import cfg_from_list, get_default_cfg
from frcnn.utils.bbox_transform import bbox_transform_inv, clip_boxes
from frcnn.ops.reference import nms_reference
from frcnn.rpn.generate_anchors import generate_anchors, shifted_anchors
from frcnn.rpn.proposal_layer import ProposalParams, proposal_layer


def _cfg(pre, post, min_size=0, thresh=0.7):
    return cfg_from_list(["TEST.RPN_PRE_NMS_TOP_N", str(pre), "TEST.RPN_POST_NMS_TOP_N", str(post),
                          "TEST.RPN_MIN_SIZE", str(min_size), "TEST.RPN_NMS_THRESH", str(thresh)],
                         get_default_cfg())


# A (0.9) and B (0.8) overlap heavily, C (0.7) is apart, D (0.6) overlaps A
BOXES = torch.tensor([[10., 10., 50., 50.], [12., 12., 52., 52.], [100., 100., 140., 140.], [11., 11., 51., 51.]])
SCORES = torch.tensor([0.9, 0.8, 0.7, 0.6])
INFO = torch.tensor([200., 200., 1.])


def _run(cfg, order=(0, 1, 2, 3)):
    o = list(order)
    return proposal_layer(SCORES[o], torch.zeros(4, 4), BOXES[o], INFO, ProposalParams.from_cfg(cfg, False))


def test_top_n_before_then_nms_then_top_n():
    boxes, scores = _run(_cfg(-1, -1))
    # decoding zero deltas grows each box by one pixel (reference's inverse)
    np.testing.assert_allclose(boxes.numpy(), (BOXES[[0, 2]] + torch.tensor([0., 0., 1., 1.])).numpy())
    assert scores.tolist() == [np.float32(0.9), np.float32(0.7)]
    boxes, scores = _run(_cfg(2, -1))           # C is cut before NMS, B is suppressed by A
    assert scores.tolist() == [np.float32(0.9)]
    boxes, scores = _run(_cfg(-1, 1))           # NMS keeps A and C, post cut keeps A
    assert scores.tolist() == [np.float32(0.9)]
    boxes, scores = _run(_cfg(-1, -1), order=(3, 2, 1, 0))   # input order does not matter
    assert scores.tolist() == [np.float32(0.9), np.float32(0.7)]


def test_min_size_scaled_and_train_keys():
    cfg = _cfg(-1, -1, min_size=30)
    info = torch.tensor([200., 200., 1.5])      # min size 45 > 42 px boxes: all dropped
    b, s = proposal_layer(SCORES, torch.zeros(4, 4), BOXES, info, ProposalParams.from_cfg(cfg, False))
    assert b.shape == (0, 4)
    b, s = proposal_layer(SCORES, torch.zeros(4, 4), BOXES, INFO, ProposalParams.from_cfg(cfg, False))
    assert len(s) == 2
    cfg.TRAIN.RPN_PRE_NMS_TOP_N = 1
    cfg.TRAIN.RPN_MIN_SIZE = 0
    b, s = proposal_layer(SCORES, torch.zeros(4, 4), BOXES, INFO, ProposalParams.from_cfg(cfg, True))
    assert s.tolist() == [np.float32(0.9)]


def test_matches_reference_pipeline():
    g = torch.Generator().manual_seed(0)
    anchors = shifted_anchors(10, 12, 16, generate_anchors())
    n = anchors.shape[0]
    scores = torch.rand(n, generator=g)
    deltas = torch.randn(n, 4, generator=g) * 0.2
    info = torch.tensor([160., 190., 1.2])
    cfg = _cfg(300, 50, min_size=16)
    boxes, sc = proposal_layer(scores, deltas, anchors, info, ProposalParams.from_cfg(cfg, False))
    # numpy re-statement of the reference steps
    p = clip_boxes(bbox_transform_inv(anchors, deltas), (160, 190)).numpy()
    ws, hs = p[:, 2] - p[:, 0] + 1, p[:, 3] - p[:, 1] + 1
    keep = np.where((ws >= 16 * 1.2) & (hs >= 16 * 1.2))[0]
    p, s = p[keep], scores.numpy()[keep]
    order = np.argsort(-s, kind="stable")[:300]
    p, s = p[order], s[order]
    k = np.asarray(nms_reference(torch.from_numpy(p), torch.from_numpy(s), 0.7))[:50]
    np.testing.assert_allclose(boxes.numpy(), p[k], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(sc.numpy(), s[k])
