"""CIFAR ResNets: the 3-stage ``resnet<depth>`` family (depth = 6n + 2, n basic blocks per
stage) and the 4-stage ``ResNet18``/``ResNet50`` with a 3x3 stem (mdistiller's resnetv2)."""

from ..resnet import ResNet
from .registry import register

# name: (depth, (stem width, stage widths...))
CIFAR_RESNETS = {
    "resnet8": (8, (16, 16, 32, 64)),
    "resnet14": (14, (16, 16, 32, 64)),
    "resnet20": (20, (16, 16, 32, 64)),
    "resnet32": (32, (16, 16, 32, 64)),
    "resnet44": (44, (16, 16, 32, 64)),
    "resnet56": (56, (16, 16, 32, 64)),
    "resnet110": (110, (16, 16, 32, 64)),
    "resnet8x4": (8, (32, 64, 128, 256)),
    "resnet32x4": (32, (32, 64, 128, 256)),
}

# name: (blocks per stage, bottleneck)
CIFAR_RESNETS_V2 = {
    "ResNet18": ((2, 2, 2, 2), False),
    "ResNet50": ((3, 4, 6, 3), True),
}

for name, (depth, widths) in CIFAR_RESNETS.items():
    register(name, ResNet, depths=((depth - 2) // 6,) * 3, widths=widths[1:], stem_width=widths[0])

for name, (depths, bottleneck) in CIFAR_RESNETS_V2.items():
    register(name, ResNet, depths=depths, widths=(64, 128, 256, 512), stem_width=64,
             bottleneck=bottleneck, shortcut_name="shortcut", head_name="linear")
