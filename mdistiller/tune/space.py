"""The search space of ``tune.py``: ``--space KEY=SPEC``, one per config key.

``SPEC`` is ``int:LOW:HIGH``, ``float:LOW:HIGH``, ``float:LOW:HIGH:log`` or
``choice:V1;V2;...`` (each value a config value, e.g. ``choice:[1,2,3,4,5,6];[2,3,4]``).
The Optuna parameter is named after the key (``SLD.GAMMA``), so ``study.best_params`` reads
as ``KEY VALUE`` overrides. Optuna's categorical values are scalars: a choice whose config
value is a list is stored as its text and parsed back (as any override) when the trial's
config is built.
"""

import math
from dataclasses import dataclass

from ..config.load import get_key, load_cfg
from ..utils.errors import ConfigError

#: keys the tuner sets itself (or that must not vary within a study)
RESERVED = ("EXPERIMENT.NAME", "EXPERIMENT.PROJECT", "EXPERIMENT.PLUGINS", "EXPERIMENT.HOOKS", "LOG.PREFIX",
            "DATASET.HOLDOUT", "DATASET.HOLDOUT_SEED")
FORMS = "int:LOW:HIGH, float:LOW:HIGH, float:LOW:HIGH:log or choice:V1;V2;..."


@dataclass
class Param:
    key: str
    kind: str  # int, float or choice
    low: float = None
    high: float = None
    log: bool = False
    choices: tuple = ()  # the values as stored in the study (scalars; lists as their text)
    spec: str = ""

    def sample(self, trial):
        """The trial's value (suggested by its sampler)."""
        if self.kind == "int":
            return trial.suggest_int(self.key, self.low, self.high)
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log)
        return trial.suggest_categorical(self.key, list(self.choices))


def override_text(value):
    """A stored parameter value as the text of a ``KEY VALUE`` override."""
    return value if isinstance(value, str) else repr(value)


def _number(kind, text, spec):
    try:
        value = int(text) if kind == "int" else float(text)
    except ValueError:
        raise ConfigError(f"--space {spec}: '{text}' is not {'an integer' if kind == 'int' else 'a number'}; "
                          f"use {FORMS}") from None
    if not math.isfinite(value):
        raise ConfigError(f"--space {spec}: '{text}' is not finite; give finite bounds")
    return value


def parse_space(spec):
    """``"KEY=SPEC"`` -> :class:`Param` (form only; :func:`check_space` checks the values)."""
    key, sep, body = (s.strip() for s in spec.partition("="))
    if not sep or not key or not body:
        raise ConfigError(f"--space '{spec}' must look like KEY=SPEC with SPEC {FORMS}")
    kind, _, rest = body.partition(":")
    if kind in ("int", "float"):
        parts = rest.split(":")
        log = kind == "float" and len(parts) == 3 and parts[2] == "log"
        if len(parts) != 2 and not log:
            raise ConfigError(f"--space {spec}: expected {kind}:LOW:HIGH" + (
                " or float:LOW:HIGH:log" if kind == "float" else ""))
        low, high = (_number(kind, p.strip(), spec) for p in parts[:2])
        if (low > high) if kind == "int" else (low >= high):
            raise ConfigError(f"--space {spec}: LOW must be below HIGH; swap them")
        if log and low <= 0:
            raise ConfigError(f"--space {spec}: a log range needs LOW > 0")
        return Param(key, kind, low, high, log, spec=spec)
    if kind == "choice":
        values = [v.strip() for v in rest.split(";")]
        if not rest.strip() or not all(values):
            raise ConfigError(f"--space {spec}: choice needs values separated by ';' (choice:V1;V2), none empty")
        if len(set(values)) < len(values):
            raise ConfigError(f"--space {spec}: a choice value is listed twice; give each once")
        return Param(key, "choice", choices=tuple(values), spec=spec)
    raise ConfigError(f"--space {spec}: unknown kind '{kind}'; use {FORMS}")


def check_space(params, cfg_path, opts):
    """Every key known and not reserved or given twice, every bound and choice a valid value
    for its key (the config is built with each); choices become their stored values. Raises
    ConfigError (one line)."""
    keys = [p.key for p in params]
    if not params:
        raise ConfigError("no --space given; name at least one KEY=SPEC to search (e.g. --space SOLVER.LR=float:0.01:0.1:log)")
    for p in params:
        if p.key in RESERVED or p.key.startswith("LOG."):
            raise ConfigError(f"--space {p.spec}: {p.key} is set by tune.py or fixed for a study; tune another key")
        if keys.count(p.key) > 1 or p.key in list(opts)[0::2]:
            raise ConfigError(f"{p.key} is given more than once (--space and/or overrides); keep one")
    stored = []
    for p in params:
        texts = [override_text(v) for v in (p.low, p.high)] if p.kind != "choice" else p.choices
        values = []
        for text in texts:
            try:
                cfg = load_cfg(cfg_path, list(opts) + [p.key, text])
            except ConfigError as e:
                raise ConfigError(f"--space {p.spec}: {e}") from None
            values.append(get_key(cfg, p.key))
        if p.kind == "choice":
            # scalars as the config parsed them; lists as the text given (Optuna's choices are scalars)
            p.choices = tuple(t if isinstance(v, (list, tuple, dict)) else v for t, v in zip(texts, values))
        stored.append(p)
    return stored


def trial_overrides(params):
    """``{KEY: value}`` (a trial's or the study's best params) -> ``[KEY, text, ...]``."""
    return [x for k, v in params.items() for x in (k, override_text(v))]
