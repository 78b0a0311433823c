import math

import numpy as np
import torch

from frcnn.models.losses import fast_rcnn_losses, rpn_losses, smooth_l1


def test_smooth_l1_hand_values():
    pred = torch.tensor([0.0, 0.05, 0.2, -1.0])
    z = torch.zeros(4)
    one = torch.ones(4)
    # sigma 3: quadratic below 1/9: 0.5*9*x^2, else |x| - 0.5/9
    np.testing.assert_allclose(smooth_l1(pred, z, one, one, 3.0).numpy(),
                               [0, 0.5 * 9 * 0.0025, 0.2 - 0.5 / 9, 1 - 0.5 / 9], rtol=1e-6)
    # sigma 1: 0.5 x^2 below 1
    np.testing.assert_allclose(smooth_l1(pred, z, one, one, 1.0).numpy(),
                               [0, 0.5 * 0.0025, 0.5 * 0.04, 0.5], rtol=1e-6)
    # inside weight multiplies the difference, outside weight the loss
    np.testing.assert_allclose(smooth_l1(pred, z, one * 2, one * 3, 1.0).numpy(),
                               3 * np.array([0, 0.5 * 0.01, 0.5 * 0.16, 2 - 0.5]), rtol=1e-6)


def test_rpn_losses_hand_case():
    logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [0.0, 1.0], [5.0, -5.0]]])   # B=1, N=4
    labels = torch.tensor([[1, 0, 1, -1]])
    deltas = torch.tensor([[[0.5, 0, 0, 0], [9, 9, 9, 9], [0, 0.1, 0, 0], [7, 7, 7, 7]]])
    targets = torch.zeros(1, 4, 4)
    inw = torch.tensor([[[1.] * 4, [0.] * 4, [1.] * 4, [0.] * 4]])
    outw = (labels >= 0).float()[..., None].expand(1, 4, 4) / 3
    cls, box = rpn_losses(logits, deltas, labels, targets, inw, outw, sigma=3.0)
    ce = (math.log(2) + math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))) / 3
    sl = ((0.5 - 0.5 / 9) + 0.5 * 9 * 0.01) / 3
    assert abs(cls.item() - ce) < 1e-6 and abs(box.item() - sl) < 1e-6
    # two images: the mean of the per-image losses
    cls2, box2 = rpn_losses(torch.cat((logits, logits)), torch.cat((deltas, deltas * 0)),
                            torch.cat((labels, labels)), torch.cat((targets, targets)),
                            torch.cat((inw, inw)), torch.cat((outw, outw)))
    assert abs(cls2.item() - ce) < 1e-6 and abs(box2.item() - sl / 2) < 1e-6
    # an image without sampled anchors (too small for any anchor) does not dilute the other
    cls3, box3 = rpn_losses(torch.cat((logits, logits)), torch.cat((deltas, deltas)),
                            torch.cat((labels, labels * 0 - 1)), torch.cat((targets, targets)),
                            torch.cat((inw, inw * 0)), torch.cat((outw, outw * 0)))
    assert abs(cls3.item() - ce) < 1e-6 and abs(box3.item() - sl) < 1e-6


def test_fast_rcnn_losses_hand_case():
    logits = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    labels = torch.tensor([0, 1])
    pred = torch.zeros(2, 12)
    pred[1, 4] = 2.0               # class 1, dx
    pred[0, 4] = 5.0               # bg row: zero weight
    t = torch.zeros(2, 12)
    inw = torch.zeros(2, 12)
    inw[1, 4:8] = 1
    cls, box = fast_rcnn_losses(logits, pred, labels, t, inw, inw.clone())
    ce = (-math.log(math.e / (math.e + 2)) - math.log(math.e ** 2 / (math.e ** 2 + 2))) / 2
    assert abs(cls.item() - ce) < 1e-6
    assert abs(box.item() - (2 - 0.5) / 2) < 1e-6


def test_fast_rcnn_losses_empty_batch_has_grad():
    w = torch.ones(3, requires_grad=True)
    cls, box = fast_rcnn_losses(torch.zeros(0, 3) * w, torch.zeros(0, 12), torch.zeros(0, dtype=torch.long),
                                torch.zeros(0, 12), torch.zeros(0, 12), torch.zeros(0, 12))
    assert cls.item() == 0 and box.item() == 0
    (cls + box).backward()
