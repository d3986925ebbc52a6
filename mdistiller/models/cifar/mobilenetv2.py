"""MobileNetV2 for CIFAR (mdistiller's ``mobile_half``: expansion 6, width 0.5)."""

import torch.nn as nn

from ..common import FeatureNet, conv_bn, feature_dict, init_weights, pool_flat
from .registry import register

# (expansion, channels, blocks, first stride); expansion None = the model's expansion
MBV2_SETTINGS = [(1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2),
                 (None, 96, 3, 1), (None, 160, 3, 2), (None, 320, 1, 1)]
#: indices of the block groups whose outputs are features (after the stem)
MBV2_FEATURE_GROUPS = (1, 2, 4, 6)


class InvertedResidual(nn.Module):
    """1x1 expand, 3x3 depthwise, 1x1 linear projection; identity added when shapes match."""

    def __init__(self, cin, cout, stride, expansion):
        super().__init__()
        mid = cin * expansion
        self.use_res = stride == 1 and cin == cout
        self.conv = nn.Sequential(*conv_bn(cin, mid, 1), *conv_bn(mid, mid, 3, stride, groups=mid),
                                  *conv_bn(mid, cout, 1, relu=False))

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(FeatureNet):
    """Stem, seven groups of inverted residuals, 1x1 conv to 1280, pooling, linear.
    The reference defines no preact features for it."""

    def __init__(self, expansion=6, width=0.5, num_classes=100):
        super().__init__()
        cin = int(32 * width)
        self.conv1 = nn.Sequential(*conv_bn(3, cin, 3, 2))
        self.stage_channels = [cin]
        groups = []
        for i, (t, c, n, s) in enumerate(MBV2_SETTINGS):
            cout = int(c * width)
            blocks = [InvertedResidual(cin if j == 0 else cout, cout, s if j == 0 else 1, t or expansion)
                      for j in range(n)]
            groups.append(nn.Sequential(*blocks))
            cin = cout
            if i in MBV2_FEATURE_GROUPS:
                self.stage_channels.append(cout)
        self.blocks = nn.ModuleList(groups)
        last = int(1280 * width) if width > 1.0 else 1280
        self.conv2 = nn.Sequential(*conv_bn(cin, last, 1))
        self.classifier = nn.Sequential(nn.Linear(last, num_classes))
        init_weights(self, linear_std=0.01)

    def get_feat_modules(self):
        return nn.ModuleList([self.conv1, self.blocks])

    def get_bn_before_relu(self):
        return [self.blocks[i][-1].conv[-1] for i in MBV2_FEATURE_GROUPS]

    def forward(self, x):
        x = self.conv1(x)
        feats = [x]
        for i, group in enumerate(self.blocks):
            x = group(x)
            if i in MBV2_FEATURE_GROUPS:
                feats.append(x)
        pooled = pool_flat(self.conv2(x))
        return self.classifier(pooled), feature_dict(feats, pooled)


register("MobileNetV2", MobileNetV2, expansion=6, width=0.5)
