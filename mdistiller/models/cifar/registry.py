"""How cifar models register themselves (:func:`register`)."""

from ..registry import cifar_teacher_ckpt, register_model

#: models with a published teacher checkpoint in mdistiller's cifar_teachers.tar
CIFAR_TEACHERS = ("resnet56", "resnet110", "resnet32x4", "ResNet50", "wrn_40_2", "vgg13")


def register(name, cls, **config):
    """Register the constructor ``name(num_classes=100, **kwargs)`` building
    ``cls(num_classes=num_classes, **config, **kwargs)`` as CIFAR model ``name``."""

    def build(num_classes=100, **kwargs):
        return cls(num_classes=num_classes, **config, **kwargs)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"CIFAR model {name}: {cls.__name__} with {config}."
    register_model(name, "cifar", cifar_teacher_ckpt(name) if name in CIFAR_TEACHERS else None)(build)
