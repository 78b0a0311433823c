"""TINY: a small stride-16 network trained from scratch (default demo and CI net).

Five 3x3 convs (16, 32, 64, 128 with stride 2, then 128), each followed by GroupNorm(8) and
ReLU: GroupNorm keeps training from scratch stable at 1-2 images per batch, where BatchNorm
statistics would be useless. Input is the Caffe blob (BGR minus PIXEL_MEANS), scaled by 1/128
inside. RPN conv 128. Head: RoI 7x7 x 128 -> 1x1 conv 64 -> fc6 256 -> fc7 256 (ReLU).
About 1.3M parameters in all; a 600x800 image costs ~0.75 GMAC in the shared convs.
"""
import torch.nn as nn
import torch.nn.functional as F

from frcnn.models.roi_heads import RoIHeads

TINY_LAYERS = (("conv1", 3, 16, 2), ("conv2", 16, 32, 2), ("conv3", 32, 64, 2),
               ("conv4", 64, 128, 2), ("conv5", 128, 128, 1))


class Tiny(nn.Module):
    """Shared convs: images [B, 3, H, W] -> [B, 128, ceil(H/16), ceil(W/16)]."""

    out_channels = 128
    feat_stride = 16
    rpn_channels = 128
    frozen_prefixes = ()

    def __init__(self):
        super().__init__()
        for name, cin, cout, stride in TINY_LAYERS:
            setattr(self, name, nn.Conv2d(cin, cout, 3, stride=stride, padding=1))
            setattr(self, name.replace("conv", "gn"), nn.GroupNorm(8, cout))
            nn.init.kaiming_normal_(getattr(self, name).weight, nonlinearity="relu")
            nn.init.zeros_(getattr(self, name).bias)

    def forward(self, x):
        x = x * (1.0 / 128)
        for name, _, _, _ in TINY_LAYERS:
            x = F.relu(getattr(self, name.replace("conv", "gn"))(getattr(self, name)(x)))
        return x

    def make_head(self, num_classes, **pooling):
        return TinyHead(num_classes, **pooling)


class TinyHead(RoIHeads):
    """RoI 7x7 x 128 -> conv_reduce 1x1 64 -> fc6 256 -> fc7 256."""

    def __init__(self, num_classes, **pooling):
        super().__init__(num_classes, (7, 7), 1.0 / 16, 256, **pooling)
        self.conv_reduce = nn.Conv2d(128, 64, 1)
        self.fc6 = nn.Linear(64 * 7 * 7, 256)
        self.fc7 = nn.Linear(256, 256)

    def top(self, pooled):
        x = F.relu(self.conv_reduce(pooled))
        x = F.relu(self.fc6(x.flatten(1)))
        return F.relu(self.fc7(x))
