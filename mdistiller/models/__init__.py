"""Model zoo registries.

``cifar_model_dict[name]`` is ``(constructor, teacher_checkpoint_or_None)`` as in mdistiller
(constructors take ``num_classes=100``; the checkpoint path is relative to the repository,
``download_ckpts/cifar_teachers/<name>_vanilla/ckpt_epoch_240.pth``);
``imagenet_model_dict[name]`` is a constructor taking ``pretrained=False, num_classes=1000``.
Register a new model with::

    @register_model("my_net", family="cifar")
    def my_net(num_classes=100): ...

Every model returns ``(logits, feats)``; see :mod:`mdistiller.models.common`.
"""

from . import cifar, imagenet  # noqa: F401  (importing the families registers their models)
from .external import MODEL_SOURCES, build_external, split_source  # noqa: F401
from .registry import (  # noqa: F401
    CIFAR_MODELS, CIFAR_TEACHER_DIR, IMAGENET_MODELS, MODEL_FAMILIES, TINY_IMAGENET_MODELS, build_model,
    check_model_name, cifar_model_dict, cifar_teacher_ckpt, imagenet_model_dict, model_constructor, register_model)
