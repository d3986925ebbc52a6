"""Wide ResNets ``wrn_<depth>_<widen>``: pre-activation blocks, depth = 6n + 4."""

import torch.nn as nn
import torch.nn.functional as F

from ..common import FeatureNet, feature_dict, init_weights, pool_flat
from .registry import register


class WRNBlock(nn.Module):
    """Pre-activation block ``BN-ReLU-conv-BN-ReLU-conv`` plus (projected) identity."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.convShortcut = None if cin == cout else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def residual(self, x, act):
        """The block's output given its input ``x`` and ``act = relu(bn1(x))``."""
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        return out + (x if self.convShortcut is None else self.convShortcut(act))

    def forward(self, x):
        return self.residual(x, F.relu(self.bn1(x)))


class WRNStage(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.layer = nn.Sequential(*blocks)


class WideResNet(FeatureNet):
    """Stem conv, three stages, final BN-ReLU. The preact features of stages 1..3 are the
    BN outputs that the next stage's first block (or the final BN) computes on them."""

    def __init__(self, depth, widen, num_classes=100):
        super().__init__()
        n = (depth - 4) // 6
        self.stage_channels = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        for i, (cin, cout) in enumerate(zip(self.stage_channels, self.stage_channels[1:]), 1):
            stride = 1 if i == 1 else 2
            blocks = [WRNBlock(cin if j == 0 else cout, cout, stride if j == 0 else 1) for j in range(n)]
            self.add_module(f"block{i}", WRNStage(blocks))
        self.bn1 = nn.BatchNorm2d(self.stage_channels[-1])
        self.fc = nn.Linear(self.stage_channels[-1], num_classes)
        init_weights(self, zero_linear_bias=True)

    def stages(self):
        return [self.block1, self.block2, self.block3]

    def get_feat_modules(self):
        return nn.ModuleList([self.conv1, *self.stages()])

    def get_bn_before_relu(self):
        return [self.block2.layer[0].bn1, self.block3.layer[0].bn1, self.bn1]

    def forward(self, x):
        x = self.conv1(x)
        feats, preacts = [x], [x]
        for i, stage in enumerate(self.stages()):
            first = stage.layer[0]
            pre = first.bn1(x)  # each BN runs once per forward
            if i > 0:
                preacts.append(pre)
            x = stage.layer[1:](first.residual(x, F.relu(pre)))
            feats.append(x)
        pre = self.bn1(x)
        preacts.append(pre)
        pooled = pool_flat(F.relu(pre))
        return self.fc(pooled), feature_dict(feats, pooled, preacts)


for depth, widen in [(16, 1), (16, 2), (40, 1), (40, 2)]:
    register(f"wrn_{depth}_{widen}", WideResNet, depth=depth, widen=widen)
