"""VGG with batch norm (``vgg8``..``vgg19``): five conv blocks, global pooling, one linear."""

import torch.nn as nn
import torch.nn.functional as F

from ..common import FeatureNet, conv_bn, feature_dict, init_weights, pool_flat
from .registry import register

# conv widths of the five blocks
VGG_CONFIGS = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256] * 3, [512] * 3, [512] * 3],
    "vgg19": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}


class VGG(FeatureNet):
    """Blocks ``block0..block4`` of conv(bias)-BN-ReLU without the last ReLU (so each
    block's output is its preact feature), 2x2 max pooling between blocks 0-3, and before
    block 4 only for 64x64 inputs, as the reference."""

    def __init__(self, widths, num_classes=100):
        super().__init__()
        cin = 3
        for i, block in enumerate(widths):
            layers = []
            for cout in block:
                layers += conv_bn(cin, cout, bias=True)
                cin = cout
            self.add_module(f"block{i}", nn.Sequential(*layers[:-1]))
        self.classifier = nn.Linear(cin, num_classes)
        self.stage_channels = [block[-1] for block in widths]
        init_weights(self, linear_std=0.01)

    def blocks(self):
        return [getattr(self, f"block{i}") for i in range(5)]

    def get_feat_modules(self):
        return nn.ModuleList(self.blocks())

    def get_bn_before_relu(self):
        return [block[-1] for block in self.blocks()[1:]]

    def forward(self, x):
        size = x.shape[2]
        x = F.relu(self.block0(x))
        feats, preacts = [x], [x]
        for i, block in enumerate(self.blocks()[1:], 1):
            if i < 4 or size == 64:
                x = F.max_pool2d(x, 2)
            pre = block(x)
            x = F.relu(pre)
            feats.append(x)
            preacts.append(pre)
        pooled = pool_flat(x)
        return self.classifier(pooled), feature_dict(feats, pooled, preacts)


for name, widths in VGG_CONFIGS.items():
    register(name, VGG, widths=widths)
