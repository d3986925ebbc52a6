"""MobileNetV2 for CIFAR (mdistiller's ``mobile_half``: expansion 6, width 0.5) and upstream's
Tiny-ImageNet MobileNetV2 (``mobilenetv2_tinyimagenet``, the Tiny-ImageNet zoo's ``MobileNetV2``)."""

import torch.nn as nn

from ..common import FeatureNet, conv_bn, feature_dict, init_weights, pool_flat
from ..registry import model_constructor, register_model
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


class LinearBottleneck(nn.Module):
    """Tiny-ImageNet MobileNetV2's block: 1x1 expand (x ``t``), 3x3 depthwise (``stride``),
    1x1 linear projection, each conv with a bias and followed by BN (ReLU6 after the first
    two); the input is added when ``stride`` is 1 and the widths match."""

    def __init__(self, cin, cout, stride, t=6):
        super().__init__()
        mid = cin * t
        self.residual = nn.Sequential(
            nn.Conv2d(cin, mid, 1), nn.BatchNorm2d(mid), nn.ReLU6(inplace=True),
            nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid), nn.BatchNorm2d(mid), nn.ReLU6(inplace=True),
            nn.Conv2d(mid, cout, 1), nn.BatchNorm2d(cout))
        self.use_res = stride == 1 and cin == cout

    def forward(self, x):
        out = self.residual(x)
        return out + x if self.use_res else out


# (blocks, output width, first stride, expansion) of stages 2-6; stage 1 is 32 -> 16 (t 1),
# stage 7 is 160 -> 320 (t 6), both one block of stride 1
TINY_MBV2_STAGES = [(2, 24, 2, 6), (3, 32, 2, 6), (4, 64, 2, 6), (3, 96, 1, 6), (3, 160, 1, 6)]


class MobileNetV2TinyImageNet(FeatureNet):
    """Upstream mdistiller's Tiny-ImageNet MobileNetV2 (``mobilenetv2_tinyimagenet``, its
    ``models/cifar/mv2_tinyimagenet.py``; 2,497,480 parameters at 200 classes): full width
    (no 0.5 multiplier), a 1x1 stem conv with padding 1 (64 -> 66 pixels), ReLU6, convs with
    biases, a 1x1 conv to 1280 and a 1x1 conv as the classifier. Module names follow
    upstream's, so its checkpoints load. Features: the stem, stages 2, 3, 4 and the 1280-wide
    map (as upstream); ``pooled_feat`` is the pooled 1280 vector, flattened (upstream keeps it
    ``[N, 1280, 1, 1]``). Upstream defines no BN-before-ReLU list, so OFD does not serve it."""

    def __init__(self, num_classes=200):
        super().__init__()
        self.pre = nn.Sequential(nn.Conv2d(3, 32, 1, padding=1), nn.BatchNorm2d(32), nn.ReLU6(inplace=True))
        self.stage1 = LinearBottleneck(32, 16, 1, 1)
        cin = 16
        for i, (n, cout, stride, t) in enumerate(TINY_MBV2_STAGES, start=2):
            setattr(self, f"stage{i}", nn.Sequential(*[LinearBottleneck(cin if j == 0 else cout, cout,
                                                                        stride if j == 0 else 1, t)
                                                       for j in range(n)]))
            cin = cout
        self.stage7 = LinearBottleneck(160, 320, 1, 6)
        self.conv1 = nn.Sequential(nn.Conv2d(320, 1280, 1), nn.BatchNorm2d(1280), nn.ReLU6(inplace=True))
        self.conv2 = nn.Conv2d(1280, num_classes, 1)
        self.stage_channels = [32, 24, 32, 64, 1280]

    def get_feat_modules(self):
        return nn.ModuleList([self.pre, self.stage1, self.stage2, self.stage3, self.stage4, self.stage5,
                              self.stage6, self.stage7, self.conv1])

    def forward(self, x):
        x = self.pre(x)
        feats = [x]
        x = self.stage2(self.stage1(x))
        feats.append(x)
        x = self.stage3(x)
        feats.append(x)
        x = self.stage4(x)
        feats.append(x)
        x = self.conv1(self.stage7(self.stage6(self.stage5(x))))
        feats.append(x)
        pooled = nn.functional.adaptive_avg_pool2d(x, 1)
        return self.conv2(pooled).flatten(1), feature_dict(feats, pooled.flatten(1))


register("mobilenetv2_tinyimagenet", MobileNetV2TinyImageNet)
# on Tiny-ImageNet, MobileNetV2 is this network (upstream's tiny_imagenet_model_dict)
register_model("MobileNetV2", "tiny_imagenet")(model_constructor("mobilenetv2_tinyimagenet"))
