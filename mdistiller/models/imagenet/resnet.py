"""ImageNet ResNets with torchvision's state-dict layout (so its weights load unchanged) and
mdistiller's features: stem BN output, then the raw (pre-ReLU) stage outputs as preacts."""

from functools import partial

from torchvision.models import ResNet18_Weights, ResNet34_Weights, ResNet50_Weights, ResNet101_Weights

from ..resnet import ResNet
from .registry import register

# name: (blocks per stage, bottleneck, torchvision weights)
IMAGENET_RESNETS = {
    "ResNet18": ((2, 2, 2, 2), False, ResNet18_Weights.IMAGENET1K_V1),
    "ResNet34": ((3, 4, 6, 3), False, ResNet34_Weights.IMAGENET1K_V1),
    "ResNet50": ((3, 4, 6, 3), True, ResNet50_Weights.IMAGENET1K_V1),
    "ResNet101": ((3, 4, 23, 3), True, ResNet101_Weights.IMAGENET1K_V1),
}


class ImageNetResNet(ResNet):
    """ResNet with the 7x7 stride-2 stem and 3x3 max pooling."""

    imagenet_stem = True

    def __init__(self, depths, bottleneck, num_classes=1000):
        super().__init__(depths, (64, 128, 256, 512), 64, bottleneck, num_classes)

    def get_bn_before_relu(self):
        return super().get_bn_before_relu()[1:]  # stages 2-4, as mdistiller


for name, (depths, bottleneck, weights) in IMAGENET_RESNETS.items():
    register(name, partial(ImageNetResNet, depths, bottleneck), weights)
