"""Distiller registry. ``distiller_dict[TYPE](student, teacher, cfg)`` builds a distiller.

Register a new method with::

    @register_distiller("MYKD")
    class MyKD(Distiller): ...
"""

from ..utils.registry import Registry
from ._base import Distiller  # noqa: F401

DISTILLERS = Registry("distiller")
register_distiller = DISTILLERS.register
#: mdistiller's name for the registry (read-only mapping TYPE -> class)
distiller_dict = DISTILLERS

# Importing the modules registers the methods.
from . import logit  # noqa: E402,F401
from . import feature  # noqa: E402,F401
