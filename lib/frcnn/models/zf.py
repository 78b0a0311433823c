"""ZF net (Zeiler & Fergus) as py-faster-rcnn uses it: stride 16, conv5 256 ch.

conv1 96x7x7 s2 p3, ReLU, LRN, pool 3x3 s2 p1; conv2 256x5x5 s2 p2, ReLU, LRN, pool; conv3/4 384,
conv5 256 (3x3 p1). Caffe pools round up (ceil mode). LRN is Caffe's WITHIN_CHANNEL
(local 3, alpha 5e-5, beta 0.75). Head: RoI 6x6, fc6/fc7 4096 with Caffe's dropout
(scale_train false: no rescale in training, x0.5 at test).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from frcnn.models.roi_heads import RoIHeads


def within_channel_lrn(x, size=3, alpha=5e-5, beta=0.75):
    """Caffe LRN WITHIN_CHANNEL: x * (1 + alpha * avgpool_{size x size}(x^2))^-beta.

    The average counts the zero padding (Caffe AVE pooling divides by size^2 at borders).
    """
    avg = F.avg_pool2d(x * x, size, stride=1, padding=(size - 1) // 2, count_include_pad=True)
    return x * (1.0 + alpha * avg).pow(-beta)


class CaffeDropout(nn.Module):
    """Dropout with scale_train false: training zeroes with prob p and does not rescale;
    test multiplies by (1 - p)."""

    def __init__(self, p=0.5):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.training:
            return x * (torch.rand_like(x) >= self.p).to(x.dtype)
        return x * (1.0 - self.p)


class ZF(nn.Module):
    """Shared convs: images [B, 3, H, W] -> conv5 [B, 256, H', W'] (stride 16)."""

    out_channels = 256
    feat_stride = 16
    rpn_channels = 256
    frozen_prefixes = ()                      # ZF trains all convs in stage 1

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 96, 7, stride=2, padding=3)
        self.conv2 = nn.Conv2d(96, 256, 5, stride=2, padding=2)
        self.conv3 = nn.Conv2d(256, 384, 3, padding=1)
        self.conv4 = nn.Conv2d(384, 384, 3, padding=1)
        self.conv5 = nn.Conv2d(384, 256, 3, padding=1)

    def forward(self, x):
        x = within_channel_lrn(F.relu(self.conv1(x)))
        x = F.max_pool2d(x, 3, 2, padding=1, ceil_mode=True)
        x = within_channel_lrn(F.relu(self.conv2(x)))
        x = F.max_pool2d(x, 3, 2, padding=1, ceil_mode=True)
        x = F.relu(self.conv3(x))
        x = F.relu(self.conv4(x))
        return F.relu(self.conv5(x))

    def make_head(self, num_classes, **pooling):
        return ZFHead(num_classes, **pooling)


class ZFHead(RoIHeads):
    """RoI 6x6 x 256 -> fc6 4096 -> fc7 4096 (ReLU, Caffe dropout 0.5 without train rescale)."""

    def __init__(self, num_classes, **pooling):
        super().__init__(num_classes, (6, 6), 1.0 / 16, 4096, **pooling)
        self.fc6 = nn.Linear(256 * 6 * 6, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.drop6 = CaffeDropout(0.5)
        self.drop7 = CaffeDropout(0.5)

    def top(self, pooled):
        x = self.drop6(F.relu(self.fc6(pooled.flatten(1))))
        return self.drop7(F.relu(self.fc7(x)))
