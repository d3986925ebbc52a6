"""The method registry: ``DISTILLERS`` (mdistiller's ``distiller_dict``), ``register_distiller``
(which adds the method's config node to :data:`mdistiller.config.defaults.CFG`) and the
config checks every registered method contributes (:func:`check_methods`)."""

from yacs.config import CfgNode as CN

from ..config.defaults import CFG
from ..utils.errors import ConfigError, DuplicateNameError
from ..utils.registry import Registry, same_definition
from .base import Distiller

DISTILLERS = Registry("distiller")
#: mdistiller's name for the registry (read-only mapping TYPE -> class)
distiller_dict = DISTILLERS
# config node -> the class whose defaults() declared it
_NODE_OWNERS = {}


def _node_owner(cls):
    """The class that already declared ``cls.cfg_node`` and whether ``cls`` may share it;
    raises DuplicateNameError for a clash."""
    node = cls.cfg_node
    owner = _NODE_OWNERS.get(node)
    if owner is None and node in CFG:
        raise DuplicateNameError(f"config node '{node}' of distiller {cls.__qualname__} is one of the framework's "
                                 f"nodes; choose another cfg_node")
    if owner is None or owner.defaults is cls.defaults or cls.defaults is Distiller.defaults \
            or same_definition(owner, cls):
        return owner
    raise DuplicateNameError(f"config node '{node}' is declared by both {owner.__module__}.{owner.__qualname__} "
                             f"and {cls.__module__}.{cls.__qualname__}; give one of them another cfg_node")


def _add_config_node(cls):
    """Merge ``cls``'s config node (its :meth:`~Distiller.defaults`) into the global defaults."""
    owner = _node_owner(cls)
    if owner is not None and not same_definition(owner, cls):
        return  # shared with the class that declared it (an alias, a subclass or a reader)
    node = CN()
    cls.defaults(node)
    frozen = CFG.is_frozen()
    CFG.defrost()
    CFG[cls.cfg_node] = node
    if frozen:
        CFG.freeze()
    _NODE_OWNERS[cls.cfg_node] = cls


def register_distiller(name=None, cls=None):
    """Register ``cls`` under ``name`` (default: its class name) and add its config node;
    without ``cls``, return a class decorator."""

    def deco(c):
        if c.cfg_node is not None:
            _node_owner(c)  # a clash fails before anything is registered
        DISTILLERS.register(name or c.__name__, c)
        if c.cfg_node is not None:
            _add_config_node(c)
        return c

    return deco if cls is None else deco(cls)


def registered_methods():
    """Each registered class once, in registration order (aliases share their class)."""
    return list(dict.fromkeys(DISTILLERS.values()))


def method_names(predicate):
    """The registered methods whose class satisfies ``predicate``, each under its first
    registered name (aliases share their class)."""
    first = {}
    for n, c in DISTILLERS.items():
        first.setdefault(c, n)
    return [n for c, n in first.items() if predicate(c)]


def logit_stand_methods():
    """The methods that honour ``DISTILLER.LOGIT_STAND``."""
    return method_names(lambda c: getattr(c, "supports_logit_stand", False))


def check_recipe(cfg):
    """The ``DISTILLER`` recipe keys against the run's methods: ``VIEWS`` each logit method
    can train on, ``LOGIT_STAND`` only where honoured (ConfigError otherwise)."""
    d = cfg.DISTILLER
    if d.VIEWS not in (0, 1, 2):
        raise ConfigError(f"DISTILLER.VIEWS must be 0 (the method's own), 1 or 2, got {d.VIEWS}")
    main = DISTILLERS.get(d.TYPE)
    if main is None:
        return
    views = main.views_for(cfg)
    if d.VIEWS and views != d.VIEWS:
        raise ConfigError(f"{d.TYPE} trains on {views} view(s), so DISTILLER.VIEWS {d.VIEWS} is not possible for it; "
                          f"set DISTILLER.VIEWS 0 or {views}")
    if d.LOGIT_STAND or cfg.EXPERIMENT.LOGIT_STAND:
        refusing = [n for n in [d.TYPE, *d.EXTRA] if not getattr(DISTILLERS.get(n), "supports_logit_stand", False)]
        if refusing:
            raise ConfigError(f"DISTILLER.LOGIT_STAND is not implemented for {', '.join(refusing)}; "
                              f"set it False or use a logit method that supports it ({', '.join(logit_stand_methods())})")


def check_methods(cfg):
    """Every registered method checks its config node (ConfigError on a bad value)."""
    used = {DISTILLERS.get(n) for n in [cfg.DISTILLER.TYPE, *cfg.DISTILLER.EXTRA]}
    for cls in registered_methods():
        cls.check_config(cfg, cls in used)
    check_recipe(cfg)
