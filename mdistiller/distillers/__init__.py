"""The distillation methods, one file each, named after the method:

* ``sld.py``: **SLD**, Swapped Logit Distillation, the flagship (``swapkd.py``: its one-
  temperature variant SWAPKD);
* ``kd.py``, ``dkd.py`` (DKD, DKD_aug), ``mlkd.py`` (MLKD, KD_ours), ``vanilla.py`` (NONE);
* ``feature/``: mdistiller's feature baselines, ``feature/<name>.py`` each;
* the public base classes: ``base.py`` (:class:`Distiller`, :class:`Need`, and the one
  description of the contract a method declares), ``logit.py`` (``LogitDistiller``),
  ``feature/base.py`` (``FeatureDistiller``); ``losses.py`` (the logit losses as functions);
* ``registry.py`` (``distiller_dict``, ``register_distiller``), ``combine.py`` (the builder).

``distiller_dict[TYPE](student, teacher, cfg)`` builds a distiller. A method is one file. Put it under ``mdistiller/distillers/`` (every module there whose
name does not start with ``_`` is imported when the package is, so nothing else needs
editing) or anywhere else as a plugin (``EXPERIMENT.PLUGINS``), and register it::

    @register_distiller("MYKD")
    class MyKD(LogitDistiller):
        cfg_node = "MYKD"

        @staticmethod
        def defaults(node):
            node.TEMPERATURE = 4.0  # softmax temperature

Registering adds the method's config node, with its defaults, to
``mdistiller.config.defaults.CFG``; the config loader calls its ``check_config`` and applies its
``legacy_keys``. See :mod:`mdistiller.distillers.base` for the contract and
``docs/new_method.md`` for a worked example.
"""

import importlib
import pkgutil

from .base import Distiller, Need, TrainingSet  # noqa: F401
from .registry import (  # noqa: F401
    _NODE_OWNERS, DISTILLERS, check_methods, check_recipe, distiller_dict, register_distiller, registered_methods)


def discover():
    """Import every module of this package (and its subpackages) whose name does not start
    with ``_``: a method file dropped here registers itself."""
    for info in pkgutil.walk_packages(__path__, __name__ + "."):
        if not any(part.startswith("_") for part in info.name[len(__name__) + 1:].split(".")):
            importlib.import_module(info.name)


discover()

from .combine import Combined, build_distiller, method_names, views_for_cfg  # noqa: E402,F401
