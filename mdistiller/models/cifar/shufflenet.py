"""ShuffleNet V1 (groups 3) and V2 (1x) for CIFAR: 1x1 stem, three stages, no max pooling."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..common import StagedNet, channel_shuffle, conv_bn
from .registry import register


def _conv_bn(cin, cout, kernel=1, stride=1, groups=1):
    """A ``(conv, BN)`` pair, 1x1 by default."""
    return conv_bn(cin, cout, kernel, stride, groups, relu=False)


class ShuffleV1Block(nn.Module):
    """Grouped 1x1, shuffle, 3x3 depthwise, grouped 1x1; stride 2 concatenates an avg-pooled
    shortcut instead of adding it. Returns ``(relu(preact), preact)``."""

    def __init__(self, cin, cout, stride, groups):
        super().__init__()
        mid = cout // 4
        self.stride = stride
        self.groups1 = 1 if cin == 24 else groups  # the stem's 24 channels are not grouped
        self.conv1, self.bn1 = _conv_bn(cin, mid, groups=self.groups1)
        self.conv2, self.bn2 = _conv_bn(mid, mid, 3, stride, groups=mid)
        self.conv3, self.bn3 = _conv_bn(mid, cout, groups=groups)

    def forward(self, x):
        out = channel_shuffle(F.relu(self.bn1(self.conv1(x))), self.groups1)
        out = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(out)))))
        pre = torch.cat([out, F.avg_pool2d(x, 3, 2, 1)], 1) if self.stride == 2 else out + x
        return F.relu(pre), pre


class ShuffleV2Down(nn.Module):
    """Stride-2 unit: two branches (depthwise-first and pointwise-first), concat, shuffle."""

    def __init__(self, cin, cout):
        super().__init__()
        mid = cout // 2
        self.conv1, self.bn1 = _conv_bn(cin, cin, 3, 2, groups=cin)
        self.conv2, self.bn2 = _conv_bn(cin, mid)
        self.conv3, self.bn3 = _conv_bn(cin, mid)
        self.conv4, self.bn4 = _conv_bn(mid, mid, 3, 2, groups=mid)
        self.conv5, self.bn5 = _conv_bn(mid, mid)

    def forward(self, x):
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], 1), 2), None  # never a stage's last block


class ShuffleV2Block(nn.Module):
    """Split channels in halves, transform the second (1x1, 3x3 depthwise, 1x1), concat, shuffle.
    The preact is the unshuffled concat before the branch's last ReLU, as the reference."""

    def __init__(self, channels):
        super().__init__()
        self.half = half = channels // 2
        self.conv1, self.bn1 = _conv_bn(half, half)
        self.conv2, self.bn2 = _conv_bn(half, half, 3, groups=half)
        self.conv3, self.bn3 = _conv_bn(half, half)

    def forward(self, x):
        x1, x2 = x[:, : self.half], x[:, self.half:]
        branch = self.bn3(self.conv3(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x2)))))))
        out = channel_shuffle(torch.cat([x1, F.relu(branch)], 1), 2)
        return out, torch.cat([x1, branch], 1)


class ShuffleNet(StagedNet):
    """Shared layout: 1x1 stem to 24 channels, the given stages (see the subclasses), an
    optional 1x1 conv-BN-ReLU to ``final_width``, pooling, linear head."""

    head_name = "linear"

    def __init__(self, stages, widths, num_classes, final_width=None):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(3, 24)
        self._set_stages(stages)
        if final_width:
            self.conv2, self.bn2 = _conv_bn(widths[-1], final_width)
        self.linear = nn.Linear(final_width or widths[-1], num_classes)
        self.stage_channels = [24, *widths]


class ShuffleNetV1(ShuffleNet):
    """Each stage: a stride-2 block whose branch adds ``width - cin`` channels to the pooled
    input, then ``depth - 1`` residual blocks."""

    def __init__(self, widths, depths, groups, num_classes=100):
        stages = [[ShuffleV1Block(cin if j == 0 else w, w - cin if j == 0 else w, 2 if j == 0 else 1, groups)
                   for j in range(d)] for cin, w, d in zip((24, *widths), widths, depths)]
        super().__init__(stages, widths, num_classes)


class ShuffleNetV2(ShuffleNet):
    """Each stage: a down unit, then ``depth`` split-transform-shuffle units."""

    def __init__(self, widths, depths, final_width, num_classes=100):
        stages = [[ShuffleV2Down(cin, w)] + [ShuffleV2Block(w) for _ in range(d)]
                  for cin, w, d in zip((24, *widths), widths, depths)]
        super().__init__(stages, widths, num_classes, final_width)

    def final(self, x):
        return F.relu(self.bn2(self.conv2(x)))


register("ShuffleV1", ShuffleNetV1, widths=(240, 480, 960), depths=(4, 8, 4), groups=3)
register("ShuffleV2", ShuffleNetV2, widths=(116, 232, 464), depths=(3, 7, 3), final_width=1024)
