"""How imagenet models register themselves (:func:`register`)."""

from ...utils.errors import ConfigError
from ..registry import register_model


def register(name, build, weights=None):
    """Register ``build(num_classes)`` as ImageNet model ``name``; ``weights`` is the
    torchvision weights enum entry whose state dict ``pretrained=True`` loads."""

    def ctor(pretrained=False, num_classes=1000):
        if pretrained and weights is None:
            raise ConfigError(f"ImageNet model '{name}' has no pretrained weights; use pretrained=False")
        if pretrained and num_classes != 1000:
            raise ConfigError(f"pretrained '{name}' has 1000 classes, not {num_classes}; "
                              "use pretrained=False or num_classes=1000")
        model = build(num_classes)
        if pretrained:
            model.load_state_dict(weights.get_state_dict(progress=True))
        return model

    ctor.__name__ = ctor.__qualname__ = name
    register_model(name, "imagenet")(ctor)
