"""MobileNets for ImageNet: ``MobileNetV1`` in mdistiller's layout (which mdistiller calls
MobileNetV2) and ``MobileNetV2`` with torchvision's state-dict layout."""

import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import MobileNet_V2_Weights
from torchvision.models import MobileNetV2 as TorchvisionMobileNetV2

from ..common import FeatureNet, conv_bn, feature_dict, pool_flat
from .registry import register

# (output channels, stride) of the stem and the 13 depthwise-separable units
MBV1_UNITS = [(32, 2), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
              (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]
#: units whose outputs are the features
MBV1_FEATURE_UNITS = (3, 5, 11, 13)


class MobileNetV1(FeatureNet):
    """``model.0`` stem conv-BN, ``model.1..13`` depthwise conv-BN-ReLU + pointwise conv-BN;
    each unit's output goes through a ReLU (applied here, so the BN output is its preact)."""

    def __init__(self, num_classes=1000):
        super().__init__()
        units, cin = [], 3
        for i, (cout, stride) in enumerate(MBV1_UNITS):
            if i == 0:
                layers = conv_bn(cin, cout, 3, stride, relu=False)
            else:
                layers = conv_bn(cin, cin, 3, stride, groups=cin) + conv_bn(cin, cout, 1, relu=False)
            units.append(nn.Sequential(*layers))
            cin = cout
        self.model = nn.Sequential(*units)
        self.fc = nn.Linear(cin, num_classes)
        self.stage_channels = [MBV1_UNITS[i][0] for i in MBV1_FEATURE_UNITS]

    def get_feat_modules(self):
        return nn.ModuleList([self.model])

    def get_bn_before_relu(self):
        return [self.model[i][-1] for i in MBV1_FEATURE_UNITS]

    def forward(self, x):
        feats, preacts = [], []
        for i, unit in enumerate(self.model):
            pre = unit(x)
            x = F.relu(pre)
            if i in MBV1_FEATURE_UNITS:
                feats.append(x)
                preacts.append(pre)
        pooled = pool_flat(x)
        return self.fc(pooled), feature_dict(feats, pooled, preacts)


#: torchvision ``features`` indices whose outputs are the features after the stem (as the
#: CIFAR MobileNetV2's: the ends of the 24-, 32-, 96- and 320-channel groups)
MBV2_FEATURE_LAYERS = (3, 6, 13, 17)


class MobileNetV2(FeatureNet, TorchvisionMobileNetV2):
    """torchvision's MobileNetV2 returning ``(logits, feats)``: the stem (its BN output as
    preact) and the linear-bottleneck outputs (their own preacts; no ReLU follows them)."""

    def __init__(self, num_classes=1000):
        super().__init__(num_classes=num_classes)
        self.stage_channels = [self.features[0][1].num_features] + [
            self.features[i].out_channels for i in MBV2_FEATURE_LAYERS]

    def get_feat_modules(self):
        return nn.ModuleList([self.features])

    def get_bn_before_relu(self):
        return [self.features[i].conv[-1] for i in MBV2_FEATURE_LAYERS]

    def forward(self, x):
        conv, bn, act = self.features[0]
        pre = bn(conv(x))
        x = act(pre)
        feats, preacts = [x], [pre]
        for i, layer in enumerate(self.features[1:], 1):
            x = layer(x)
            if i in MBV2_FEATURE_LAYERS:
                feats.append(x)
                preacts.append(x)
        pooled = pool_flat(x)
        return self.classifier(pooled), feature_dict(feats, pooled, preacts)


register("MobileNetV1", MobileNetV1)
register("MobileNetV2", MobileNetV2, MobileNet_V2_Weights.IMAGENET1K_V1)
