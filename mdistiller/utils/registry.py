"""A small name -> object registry in the style of fvcore/detectron2 ``Registry``.

``Registry`` is a read-only mapping, so existing code that treats ``cifar_model_dict`` or
``distiller_dict`` as a plain dict (``d[name]``, ``name in d``, ``d.keys()``) keeps working.
Registering a name twice raises :class:`DuplicateNameError`, unless it is the same
definition again (the same object, or an object of the same module and qualified name: a
module or plugin imported a second time), which replaces the entry. Looking up an unknown
name raises :class:`UnknownNameError` listing the known names and the closest match.
"""

import difflib
from collections.abc import Mapping

from .errors import DuplicateNameError, UnknownNameError


def same_definition(a, b):
    """True when ``b`` is ``a`` or the same definition imported again (same module and
    qualified name), as when a plugin file is executed a second time."""
    if a is b:
        return True
    key = (lambda o: (getattr(o, "__module__", None), getattr(o, "__qualname__", None)))
    return key(a)[1] is not None and "<lambda>" not in key(a)[1] and key(a) == key(b)


class Registry(Mapping):
    """Maps names to registered objects; ``kind`` names what is registered in messages."""

    def __init__(self, kind):
        self.kind = kind
        self._items = {}

    # -- registration -------------------------------------------------------------------
    def register(self, name=None, value=None):
        """Register ``value`` under ``name``; without ``value``, return a decorator.

        The decorator registers the decorated object itself, under ``name`` or, when
        ``name`` is None, under the object's ``__name__``.
        """
        if value is not None:
            self._add(name, value)
            return value

        def deco(obj):
            self._add(name or obj.__name__, obj)
            return obj

        return deco

    def _add(self, name, value):
        if name in self._items and not same_definition(self._items[name], value):
            raise DuplicateNameError(
                f"{self.kind} '{name}' is registered twice; choose another name for one of them"
            )
        self._items[name] = value

    # -- lookup ---------------------------------------------------------------------------
    def get(self, name, default=None):
        return self._items.get(name, default)

    def __getitem__(self, name):
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name):
        known = sorted(self, key=str.lower)
        close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown {self.kind} '{name}'{hint}; known {self.kind}s: {', '.join(known)}"

    def __contains__(self, name):
        return name in self._items

    def __iter__(self):
        return iter(self._items)

    def __len__(self):
        return len(self._items)

    def __repr__(self):
        return f"Registry({self.kind!r}, {sorted(self._items)})"


class OverlayRegistry(Registry):
    """A registry that is ``base`` with entries of its own on top: its own names win, every
    other name is looked up in ``base`` when asked (so names registered there later count)."""

    def __init__(self, kind, base):
        super().__init__(kind)
        self.base = base

    def get(self, name, default=None):
        return self._items[name] if name in self._items else self.base.get(name, default)

    def __getitem__(self, name):
        if name in self._items:
            return self._items[name]
        if name in self.base:
            return self.base[name]
        raise UnknownNameError(self.unknown_message(name))

    def __contains__(self, name):
        return name in self._items or name in self.base

    def __iter__(self):
        return iter(list(self._items) + [n for n in self.base if n not in self._items])

    def __len__(self):
        return len(set(self._items) | set(self.base))
