"""``EXPERIMENT.PLUGINS``: methods outside the package, imported before a config is read.

An entry is a Python file (it ends with ``.py`` or names a folder; a relative path is
relative to the config file naming it, or to the working directory in an override) or an
importable module (``my_pkg.my_module``). The config keeps files as absolute paths, so a
run folder's ``config.yaml`` loads them again from anywhere. Importing an entry twice in one
process does nothing the second time.
"""

import hashlib
import importlib
import importlib.util
import os
import re
import sys

from ..utils.errors import ConfigError, MdistillerError

FIX = "EXPERIMENT.PLUGINS takes .py files (relative to the config file naming them) or module names"


def is_file(entry):
    """Whether a plugin entry names a file (else a module)."""
    return entry.endswith(".py") or "/" in entry or os.sep in entry


def resolve(entries, base_dir):
    """The entries with relative file paths made absolute from ``base_dir``."""
    return [os.path.normpath(os.path.join(base_dir, e)) if isinstance(e, str) and is_file(e) else e
            for e in entries]


def module_name(path):
    """The module name a plugin file is imported under: one per absolute path."""
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    return f"mdistiller_plugin_{stem}_{hashlib.sha1(path.encode()).hexdigest()[:12]}"


def _failed(entry, error):
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return ConfigError(f"plugin '{entry}' failed to import: {type(error).__name__}: {first[:200]}; fix the plugin")


def _exited(entry, e):
    return ConfigError(f"plugin '{entry}' called sys.exit({e.code!r}) while being imported; a plugin must not exit "
                       f"(raise an exception instead); fix the plugin")


def _import_file(path):
    if not os.path.isfile(path):
        raise ConfigError(f"plugin file '{path}' does not exist; {FIX}")
    name = module_name(os.path.abspath(path))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as e:
        del sys.modules[name]
        if isinstance(e, SystemExit):
            raise _exited(path, e) from None
        if isinstance(e, MdistillerError) or not isinstance(e, Exception):
            raise
        raise _failed(path, e) from e
    return module


def _import_module(name):
    try:
        return importlib.import_module(name)
    except MdistillerError:
        raise
    except SystemExit as e:
        raise _exited(name, e) from None
    except ModuleNotFoundError as e:
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            raise ConfigError(f"plugin module '{name}' is not importable; install it or add its folder to "
                              f"PYTHONPATH ({FIX})") from None
        raise _failed(name, e) from e
    except Exception as e:
        raise _failed(name, e) from e


def import_plugins(entries):
    """Import each plugin entry (files by absolute path, see :func:`resolve`)."""
    for entry in entries:
        if not isinstance(entry, str) or not entry:
            raise ConfigError(f"plugin entry {entry!r} is not a file or module name; {FIX}")
        _import_file(entry) if is_file(entry) else _import_module(entry)
