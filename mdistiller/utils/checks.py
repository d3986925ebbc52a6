"""Value checks shared by the framework's and the methods' config validation.

Each raises :class:`~mdistiller.utils.errors.ConfigError` with a one-line message naming
the key, the rule and the value given.
"""

from .errors import ConfigError


def is_number(x):
    """A finite int or float (not a bool)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and abs(x) != float("inf")


def get_key(cfg, dotted):
    """The value of a dotted key (``"SOLVER.LR"``) in a CfgNode or nested dict."""
    node = cfg
    for p in dotted.split("."):
        node = node[p]
    return node


def check_non_negative(node, name, keys):
    """``name.key`` of ``node`` is a finite number >= 0, for each of ``keys`` (dotted)."""
    for key in keys:
        v = get_key(node, key)
        if not is_number(v) or v < 0:
            raise ConfigError(f"{name}.{key} must be a non-negative number, got {v}")


def check_positive(node, name, keys):
    """``name.key`` of ``node`` is a finite number > 0, for each of ``keys`` (dotted)."""
    for key in keys:
        v = get_key(node, key)
        if not is_number(v) or v <= 0:
            raise ConfigError(f"{name}.{key} must be positive, got {v}")


def check_at_least(node, name, key, low):
    """``name.key`` of ``node`` is an int >= ``low``."""
    v = get_key(node, key)
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ConfigError(f"{name}.{key} must be an integer >= {low}, got {v}")


def check_temperatures(node, name, key="TEMPERATURES"):
    """``name.key`` is a non-empty list of positive numbers."""
    temps = get_key(node, key)
    if not temps or any(not is_number(t) or t <= 0 for t in temps):
        raise ConfigError(f"{name}.{key} must be a non-empty list of positive numbers, got {list(temps)}")


def check_choice(node, name, key, choices):
    """``name.key`` is one of ``choices``."""
    v = get_key(node, key)
    if v not in choices:
        raise ConfigError(f"{name}.{key} must be one of {', '.join(map(str, choices))}; got {v!r}")
