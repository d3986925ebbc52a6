"""The model registries (``cifar_model_dict``, ``imagenet_model_dict``, ``TINY_IMAGENET_MODELS``,
``MODEL_FAMILIES``), ``register_model`` and ``build_model``; see :mod:`mdistiller.models`."""

from ..utils.registry import OverlayRegistry, Registry
from .external import MODEL_SOURCES, build_external, split_source

CIFAR_MODELS = Registry("CIFAR model")
IMAGENET_MODELS = Registry("ImageNet model")
#: Tiny-ImageNet's models: the CIFAR zoo, except the names upstream mdistiller maps to other
#: networks there (its tiny_imagenet_model_dict: ``MobileNetV2`` is ``mobilenetv2_tinyimagenet``)
TINY_IMAGENET_MODELS = OverlayRegistry("Tiny-ImageNet model", CIFAR_MODELS)
#: family name -> registry of that family's models
MODEL_FAMILIES = Registry("model family")
MODEL_FAMILIES.register("cifar", CIFAR_MODELS)
MODEL_FAMILIES.register("imagenet", IMAGENET_MODELS)
MODEL_FAMILIES.register("tiny_imagenet", TINY_IMAGENET_MODELS)
#: mdistiller's names for the registries
cifar_model_dict = CIFAR_MODELS
imagenet_model_dict = IMAGENET_MODELS

#: where mdistiller's published CIFAR-100 teachers (cifar_teachers.tar) are unpacked
CIFAR_TEACHER_DIR = "download_ckpts/cifar_teachers"


def cifar_teacher_ckpt(name):
    """The published teacher checkpoint path of CIFAR model ``name``."""
    return f"{CIFAR_TEACHER_DIR}/{name}_vanilla/ckpt_epoch_240.pth"


def register_model(name, family="cifar", teacher_ckpt=None):
    """Decorator registering a model constructor under ``name`` in ``family``'s registry.

    CIFAR entries are stored as mdistiller's ``(constructor, teacher_ckpt)`` pairs; ImageNet
    teachers use pretrained weights instead, so ``teacher_ckpt`` is for CIFAR models only.
    ``family="tiny_imagenet"`` registers a name for Tiny-ImageNet runs only (over the CIFAR zoo's).
    """
    registry = MODEL_FAMILIES[family]
    if teacher_ckpt is not None and registry is not CIFAR_MODELS:
        raise ValueError(f"teacher_ckpt is for CIFAR models only, not for {registry.kind} '{name}'")

    def deco(ctor):
        registry.register(name, (ctor, teacher_ckpt) if registry is CIFAR_MODELS else ctor)
        return ctor

    return deco


def model_constructor(name, family="cifar"):
    """The constructor of model ``name`` of ``family`` (UnknownNameError if unknown)."""
    entry = MODEL_FAMILIES[family][name]
    return entry[0] if isinstance(entry, tuple) else entry


def build_model(name, family="cifar", num_classes=None, image_size=None, **kwargs):
    """Build model ``name`` of ``family`` ("cifar" or "imagenet"), or of a source prefix
    (``timm:<name>``, ``torchvision:<name>``, see :mod:`mdistiller.models.external`; built
    for ``image_size`` inputs, default 32 for "cifar", 224 for "imagenet").

    ``num_classes=None`` keeps the constructor's default; ``kwargs`` go to the constructor
    (e.g. ``pretrained=True`` for ImageNet models). Unknown names raise UnknownNameError
    listing the known ones.
    """
    if split_source(name)[0] is not None:
        size = image_size or (32 if family == "cifar" else 224)
        return build_external(name, num_classes, size, **kwargs)
    ctor = model_constructor(name, family)
    return ctor(**kwargs) if num_classes is None else ctor(num_classes=num_classes, **kwargs)


def check_model_name(name, family="cifar"):
    """UnknownNameError (listing the known names) unless ``name`` is a zoo model of ``family``
    or has a registered source prefix; the library's own names are checked when built."""
    source = split_source(name)[0]
    if source is None:
        MODEL_FAMILIES[family][name]
    else:
        MODEL_SOURCES[source]
