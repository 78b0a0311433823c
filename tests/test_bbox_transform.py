import numpy as np
import torch

from frcnn.utils.bbox_transform import bbox_transform, bbox_transform_inv, clip_boxes


def test_hand_case():
    ex = torch.tensor([[0., 0., 9., 19.]])          # w 10, h 20, ctr (5, 10)
    gt = torch.tensor([[5., 0., 24., 19.]])         # w 20, h 20, ctr (15, 10)
    t = bbox_transform(ex, gt)
    np.testing.assert_allclose(t.numpy(), [[1.0, 0.0, np.log(2.0), 0.0]], rtol=1e-6)


def test_inverse_has_no_minus_one():
    boxes = torch.tensor([[0., 0., 9., 9.]])
    out = bbox_transform_inv(boxes, torch.zeros(1, 4))
    # reference: x2 = ctr + 0.5 w, so zero deltas grow the box by one pixel
    np.testing.assert_allclose(out.numpy(), [[0., 0., 10., 10.]])


def test_round_trip_and_multiclass():
    g = torch.Generator().manual_seed(0)
    ex = torch.rand(50, 2, generator=g) * 100
    ex = torch.cat((ex, ex + 5 + torch.rand(50, 2, generator=g) * 80), 1)
    gt = torch.rand(50, 2, generator=g) * 100
    gt = torch.cat((gt, gt + 5 + torch.rand(50, 2, generator=g) * 80), 1)
    d = bbox_transform(ex, gt)
    back = bbox_transform_inv(ex, d)
    np.testing.assert_allclose(back.numpy(), (gt + torch.tensor([0., 0., 1., 1.])).numpy(), atol=1e-3)
    d3 = torch.cat((torch.zeros(50, 4), d, d), 1)
    b3 = bbox_transform_inv(ex, d3).view(50, 3, 4)
    np.testing.assert_allclose(b3[:, 1].numpy(), back.numpy(), atol=1e-5)
    np.testing.assert_allclose(b3[:, 2].numpy(), back.numpy(), atol=1e-5)


def test_no_clamp_on_dw():
    out = bbox_transform_inv(torch.tensor([[0., 0., 15., 15.]]), torch.tensor([[0., 0., 10., 0.]]))
    assert out[0, 2] - out[0, 0] > 16 * np.exp(10) - 1


def test_empty():
    assert bbox_transform_inv(torch.zeros(0, 4), torch.zeros(0, 8)).shape == (0, 8)


def test_clip_tuple_and_tensor():
    b = torch.tensor([[-5., -3., 120., 90., 10., 10., 20., 20.]])
    exp = [[0., 0., 99., 49., 10., 10., 20., 20.]]
    np.testing.assert_array_equal(clip_boxes(b, (50, 100)).numpy(), exp)
    np.testing.assert_array_equal(clip_boxes(b, torch.tensor([50., 100., 1.6])).numpy(), exp)
