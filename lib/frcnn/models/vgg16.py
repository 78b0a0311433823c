"""VGG16 (Simonyan & Zisserman) as py-faster-rcnn uses it: conv1_1..conv5_3, stride 16, 512 ch.

Input: BGR 0-255 minus PIXEL_MEANS (Caffe). Max-pools use Caffe's ceil mode, so a 600x800
image gives a 38x50 conv5_3. Head: RoI pool 7x7, fc6/fc7 4096 + ReLU + dropout 0.5.
"""
import torch.nn as nn
import torch.nn.functional as F

from frcnn.models.roi_heads import RoIHeads

# (name, in, out), a max-pool after each block but the last
VGG16_BLOCKS = (
    (("conv1_1", 3, 64), ("conv1_2", 64, 64)),
    (("conv2_1", 64, 128), ("conv2_2", 128, 128)),
    (("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256)),
    (("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512)),
    (("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512)),
)


class VGG16(nn.Module):
    """Shared convs: images [B, 3, H, W] -> conv5_3 [B, 512, ~H/16, ~W/16]."""

    out_channels = 512
    feat_stride = 16
    rpn_channels = 512                       # rpn_conv/3x3 num_output
    frozen_prefixes = ("conv1_1", "conv1_2", "conv2_1", "conv2_2")

    def __init__(self):
        super().__init__()
        for block in VGG16_BLOCKS:
            for name, cin, cout in block:
                setattr(self, name, nn.Conv2d(cin, cout, 3, padding=1))

    def forward(self, x):
        for i, block in enumerate(VGG16_BLOCKS):
            for name, _, _ in block:
                x = F.relu(getattr(self, name)(x), inplace=True)
            if i < len(VGG16_BLOCKS) - 1:
                x = F.max_pool2d(x, 2, 2, ceil_mode=True)
        return x

    def make_head(self, num_classes, **pooling):
        return VGG16Head(num_classes, **pooling)


class VGG16Head(RoIHeads):
    """RoI 7x7 x 512 -> fc6 4096 -> fc7 4096 (ReLU, dropout 0.5 with the usual train-time rescale)."""

    def __init__(self, num_classes, **pooling):
        super().__init__(num_classes, (7, 7), 1.0 / 16, 4096, **pooling)
        self.fc6 = nn.Linear(512 * 7 * 7, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.drop6 = nn.Dropout(0.5)
        self.drop7 = nn.Dropout(0.5)

    def top(self, pooled):
        x = self.drop6(F.relu(self.fc6(pooled.flatten(1)), inplace=True))
        return self.drop7(F.relu(self.fc7(x), inplace=True))
