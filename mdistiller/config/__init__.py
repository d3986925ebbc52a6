"""The configuration: the defaults (:mod:`.defaults`, every key with a comment), loading
YAML files and ``KEY VALUE`` overrides with checks (:mod:`.load`), and the
``EXPERIMENT.PLUGINS`` files imported before a config is read (:mod:`.plugins`).

This package's ``__init__`` imports only the defaults, so the method registry (which adds
each method's node to ``CFG``) can import them without importing the loader, which imports
the methods to check their keys.
"""

from .defaults import CFG  # noqa: F401
