"""ImageNet models: constructors ``name(pretrained=False, num_classes=1000)``; importing the
modules registers them. ``pretrained=True`` loads torchvision's ImageNet weights (downloaded
to torch's hub cache on first use)."""

from . import mobilenet, resnet  # noqa: F401  (importing the modules registers them)
from .registry import register  # noqa: F401
