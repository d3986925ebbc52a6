"""mdistiller's (CRD repo's) CIFAR-100 models; importing the modules registers them."""

from .. import cifar_teacher_ckpt, register_model
from ..common import constructor

#: models with a published teacher checkpoint in mdistiller's cifar_teachers.tar
CIFAR_TEACHERS = ("resnet56", "resnet110", "resnet32x4", "ResNet50", "wrn_40_2", "vgg13")


def register(name, cls, **config):
    """Register ``cls(num_classes=100, **config)`` as CIFAR model ``name``."""
    teacher = cifar_teacher_ckpt(name) if name in CIFAR_TEACHERS else None
    register_model(name, "cifar", teacher)(constructor(name, cls, **config))


from . import mobilenetv2, resnet, shufflenet, vgg, wrn  # noqa: E402,F401
