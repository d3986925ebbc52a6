"""mdistiller's (CRD repo's) CIFAR-100 models; importing the modules registers them."""

from . import mobilenetv2, resnet, shufflenet, vgg, wrn  # noqa: F401  (importing the modules registers them)
from .registry import CIFAR_TEACHERS, register  # noqa: F401
