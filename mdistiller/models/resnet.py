"""The post-activation ResNet shared by the CIFAR zoo (``resnet8``..``resnet110``,
``resnet8x4``/``resnet32x4``, ``ResNet18``/``ResNet50``) and the ImageNet ResNets.

The variants differ only in stem, widths, depths, block type and two attribute names
(``downsample``/``shortcut`` projection, ``fc``/``linear`` head), which decide the
state-dict keys the published checkpoints use.
"""

import torch.nn as nn
import torch.nn.functional as F

from .common import StagedNet, init_weights


class ResBlock(nn.Module):
    """Basic (3x3, 3x3) or bottleneck (1x1, 3x3, 1x1 x4) residual block.

    ``forward`` returns ``(relu(preact), preact)`` with ``preact`` the residual sum. The
    projection shortcut (1x1 conv + BN, when the shape changes) is named ``shortcut_name``.
    """

    def __init__(self, cin, planes, stride=1, bottleneck=False, shortcut_name="downsample"):
        super().__init__()
        self.bottleneck = bottleneck
        if bottleneck:
            specs = [(cin, planes, 1, 1), (planes, planes, 3, stride), (planes, 4 * planes, 1, 1)]
        else:
            specs = [(cin, planes, 3, stride), (planes, planes, 3, 1)]
        for i, (a, b, k, s) in enumerate(specs, 1):
            self.add_module(f"conv{i}", nn.Conv2d(a, b, k, s, k // 2, bias=False))
            self.add_module(f"bn{i}", nn.BatchNorm2d(b))
        self.out_channels = cout = specs[-1][1]
        proj = None
        if stride != 1 or cin != cout:
            proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.shortcut_name = shortcut_name
        self.add_module(shortcut_name, proj)

    @property
    def last_bn(self):
        """The BN before the block's output ReLU."""
        return self.bn3 if self.bottleneck else self.bn2

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        if self.bottleneck:
            out = F.relu(self.bn2(self.conv2(out)))
        out = self.last_bn((self.conv3 if self.bottleneck else self.conv2)(out))
        proj = getattr(self, self.shortcut_name)
        pre = out + (x if proj is None else proj(x))
        return F.relu(pre), pre


class ResNet(StagedNet):
    """ResNet with ``len(depths)`` stages of ``ResBlock``; the first stage keeps the stem's
    resolution, each later one halves it."""

    def __init__(self, depths, widths, stem_width, bottleneck=False, num_classes=100,
                 shortcut_name="downsample", head_name="fc"):
        super().__init__()
        k, s = (7, 2) if self.imagenet_stem else (3, 1)
        self.conv1 = nn.Conv2d(3, stem_width, k, s, k // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        cin, stages = stem_width, []
        for i, (depth, width) in enumerate(zip(depths, widths)):
            blocks = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(ResBlock(cin, width, stride, bottleneck, shortcut_name))
                cin = blocks[-1].out_channels
            stages.append(blocks)
        self._set_stages(stages)
        self.head_name = head_name
        self.add_module(head_name, nn.Linear(cin, num_classes))
        self.stage_channels = [stem_width] + [stage[-1].out_channels for stage in stages]
        init_weights(self)

    def get_bn_before_relu(self):
        return [stage[-1].last_bn for stage in self.stages()]
