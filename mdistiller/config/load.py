"""Config loading: YAML files with ``_BASE_`` inheritance, ``KEY VALUE`` overrides, checks.

``CFG`` (the defaults, see :mod:`mdistiller.config.defaults`) stays importable here for
mdistiller users. Use :func:`load_cfg` to build a run's config::

    cfg = load_cfg("my_run.yaml", ["SOLVER.EPOCHS", "10"])

The methods' config nodes, checks and reference-repo keys come from the registered
distillers (importing this module imports :mod:`mdistiller.distillers`), and from the
plugins named by ``EXPERIMENT.PLUGINS`` (imported before the rest of the config is read).
Every problem raises :class:`~mdistiller.utils.errors.ConfigError` with a one-line message
that names the key (and the closest valid key for a typo) or the expected type.
"""

import ast
import copy
import difflib
import logging
import os
import warnings

import yaml
from yacs.config import CfgNode as CN

from ..dataset import check_holdout
from ..dataset.imagenet import check_decode
from ..dataset.tiny_imagenet import VIEWS
from ..distillers import DISTILLERS, check_methods
from ..utils.checks import get_key
from ..utils.checks import is_number as _is_number
from ..utils.errors import ConfigError, ConfigWarning
from ..utils.threads import usable_cpus
from ..solver import dot
from . import plugins
from .defaults import CFG

logger = logging.getLogger(__name__)

BASE_KEY = "_BASE_"

#: LOG.LEVEL's values (the levels of the package's logging tree)
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

# list keys whose default is empty: the element type they take
ELEMENT_TYPES = {"DISTILLER.EXTRA": ["str"], "EXPERIMENT.PLUGINS": ["str"], "EXPERIMENT.HOOKS": ["str"]}


# ---------------------------------------------------------------------------------------
# Reading YAML
# ---------------------------------------------------------------------------------------
class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                dup = key in seen
            except TypeError:
                continue
            if dup:
                raise ConfigError(f"key '{key}' appears twice in the same section of '{self.name}' (line "
                                  f"{key_node.start_mark.line + 1}); the later one would silently replace the "
                                  f"earlier: merge them into one")
            seen.add(key)
        return super().construct_mapping(node, deep)


def _read_yaml(path):
    if os.path.isdir(path):
        raise ConfigError(f"config file '{path}' is a folder; pass a YAML file with --cfg")
    if not os.path.isfile(path):
        raise ConfigError(f"config file '{path}' does not exist; check the --cfg path")
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if b"\0" in raw:
            raise UnicodeDecodeError("utf-8", raw, raw.index(b"\0"), raw.index(b"\0") + 1, "NUL byte")
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.reason != "NUL byte" and all(c.isprintable() or c in "\n\r\t" for c in raw.decode("latin-1")):
            raise ConfigError(f"config file '{path}' is not UTF-8 (byte {raw[e.start]:#04x} at offset {e.start}; "
                              f"a Latin-1 file?); save it as UTF-8") from None
        raise ConfigError(f"config file '{path}' is not a text YAML file (binary content); pass a YAML "
                          f"config") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file '{path}': {os.strerror(e.errno) if e.errno else e}; check "
                          f"the file and its permissions") from None
    try:
        loader = _UniqueKeyLoader(text)
        loader.name = path
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"YAML syntax error in '{path}'{where}: {e.problem}; fix the file's syntax"
        ) from None
    except (yaml.YAMLError, ValueError, TypeError, RecursionError) as e:
        if isinstance(e, ConfigError):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"cannot parse YAML file '{path}': {first[:200]}; fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of KEY: value, not {type(data).__name__}")
    return data


def _deep_update(dst, src):
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)
    return dst


def read_yaml_with_bases(path, _seen=None):
    """Return the nested dict of ``path`` with its ``_BASE_`` files merged underneath."""
    path = os.path.abspath(path)
    _seen = set() if _seen is None else _seen
    if path in _seen:
        raise ConfigError(f"'_BASE_' cycle through '{path}'; remove the circular inheritance")
    _seen = _seen | {path}
    data = _read_yaml(path)
    _resolve_plugins(data, os.path.dirname(path))
    bases = data.pop(BASE_KEY, None)
    if bases is None:
        return data
    if not isinstance(bases, (str, list)):
        raise ConfigError(f"'_BASE_' in '{path}' must be a path or a list of paths, got {bases!r}")
    merged = {}
    for base in [bases] if isinstance(bases, str) else bases:
        if not isinstance(base, str):
            raise ConfigError(f"'_BASE_' in '{path}' must be a path or a list of paths")
        base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
        _deep_update(merged, read_yaml_with_bases(base_path, _seen))
    return _deep_update(merged, data)


def _plugin_entries(data):
    """``EXPERIMENT.PLUGINS`` of a nested dict when it sets it as a list, else None."""
    exp = data.get("EXPERIMENT")
    value = exp.get("PLUGINS") if isinstance(exp, dict) else None
    return value if isinstance(value, list) else None


def _resolve_plugins(data, base_dir):
    """Make the relative plugin files of ``data`` absolute, from ``base_dir``."""
    entries = _plugin_entries(data)
    if entries is not None:
        data["EXPERIMENT"]["PLUGINS"] = plugins.resolve(entries, base_dir)


# ---------------------------------------------------------------------------------------
# Merging with checks
# ---------------------------------------------------------------------------------------
def _all_keys(node, prefix=""):
    for k, v in node.items():
        full = f"{prefix}{k}"
        if isinstance(v, CN):
            yield from _all_keys(v, full + ".")
        else:
            yield full


def _unknown_key(full_key, cfg):
    close = difflib.get_close_matches(full_key, list(_all_keys(cfg)), n=1, cutoff=0.6)
    hint = (f"; did you mean '{close[0]}'?" if close
            else "; see mdistiller/config/defaults.py and the methods' defaults for valid keys")
    return ConfigError(f"unknown config key '{full_key}'{hint}")


def _type_name(value):
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list", tuple: "list"}.get(
        type(value), type(value).__name__
    )


def coerce_value(full_key, default, value):
    """Return ``value`` converted to the type of ``default`` or raise ConfigError.

    Allowed conversions: int -> float (``LR 1``), tuple <-> list, and per-element int ->
    float inside lists of floats. bool is never taken for a number or vice versa.
    """
    def bad():
        return ConfigError(
            f"config key '{full_key}' expects a {_type_name(default)}"
            f"{' of ' + _type_name(default[0]) if isinstance(default, (list, tuple)) and default else ''}"
            f", got {value!r} ({_type_name(value)})"
        )

    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise bad()
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        return float(value)
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        raise bad()
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            raise bad()
        if default:
            proto = default[0]
            try:
                value = [coerce_value(full_key, proto, v) for v in value]
            except ConfigError:
                raise bad() from None
        return type(default)(value)
    if default is None:
        return value
    raise bad()


def _merge(cfg, data, prefix="", explicit=None, root=None):
    root = cfg if root is None else root
    for k, v in data.items():
        full = f"{prefix}{k}"
        if not isinstance(k, str) or k not in cfg:
            if isinstance(v, dict):  # a whole unknown section: suggest a section
                close = difflib.get_close_matches(str(k), [n for n in cfg if isinstance(cfg[n], CN)], n=1)
                hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
                raise ConfigError(f"unknown config section '{full}'{hint}")
            raise _unknown_key(full, root)
        cur = cfg[k]
        if isinstance(cur, CN):
            if not isinstance(v, dict):
                raise ConfigError(f"config key '{full}' is a section; give it KEY: value pairs, not {v!r}")
            _merge(cur, v, full + ".", explicit, root)
        else:
            if isinstance(v, dict):
                raise ConfigError(f"config key '{full}' takes a {_type_name(cur)}, not a section")
            if isinstance(v, CliText):
                v = _parse_override_value(v, cur)
            cfg[k] = coerce_value(full, ELEMENT_TYPES.get(full, cur), v)
            if explicit is not None:
                explicit.add(full)


class CliText(str):
    """An override value as typed on the command line, decoded against its key's type."""


def _parse_override_value(text, default):
    """Decode a command-line override: for a str key the text itself (``TAG 123`` is the
    string "123"), otherwise a Python literal as yacs does (``[1, 2]``, ``0.5``, ``True``);
    ``true``/``false`` in any case are booleans."""
    if isinstance(default, str):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            return str(text)
        return value if isinstance(value, str) else str(text)
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        low = text.strip().lower()
        if low in ("true", "false"):
            return low == "true"
        return str(text)


def overrides_to_dict(opts):
    """Turn ``["A.B", "1", "C", "x"]`` into a nested dict, checking the list is paired."""
    opts = list(opts or [])
    if len(opts) % 2:
        raise ConfigError(
            f"overrides must be KEY VALUE pairs, got an odd number ({len(opts)}): {' '.join(map(str, opts))}"
        )
    out = {}
    for key, raw in zip(opts[0::2], opts[1::2]):
        if not isinstance(key, str) or not key or key.startswith("-"):
            raise ConfigError(f"override key {key!r} is not a config key (KEY VALUE pairs expected)")
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override '{key}' conflicts with an earlier override of '{p}'")
            node = nxt
        node[parts[-1]] = CliText(raw) if isinstance(raw, str) else raw
    return out


# ---------------------------------------------------------------------------------------
# Reference-repo compatibility (a method's ``legacy_keys``)
# ---------------------------------------------------------------------------------------
def _set(cfg, dotted, value):
    parts = dotted.split(".")
    node = cfg
    for p in parts[:-1]:
        node = node[p]
    node[parts[-1]] = value


def translate_legacy_keys(cfg, explicit):
    """Move the reference-repo keys of the method's ``legacy_keys`` into its node, with a warning.

    A file that also sets the method's own key (a run's saved config.yaml sets every key)
    keeps it; the old key's value only counts, and must then agree, where it is not the default."""
    method = DISTILLERS.get(cfg.DISTILLER.TYPE)
    table = method.legacy_keys if method is not None else {}
    if not table:
        return
    for old, new in table.items():
        if old not in explicit:
            continue
        value = get_key(cfg, old)
        first_only = bool(new) and new.endswith("[0]")  # the old key sets the first of a list
        own = new[:-3] if first_only else new
        if (own is None or own in explicit) and value == get_key(CFG, old):
            continue
        if new is None:
            warnings.warn(
                f"{old} = {value} has no effect on {cfg.DISTILLER.TYPE} (the reference ignores it too); "
                f"set the {method.cfg_node}.* keys instead",
                ConfigWarning,
                stacklevel=3,
            )
            continue
        current = get_key(cfg, own)
        if own in explicit and (current[0] if first_only else current) != value:
            raise ConfigError(f"both {old} and {own} are set and disagree; keep only {own}")
        _set(cfg, own, [float(value), *current[1:]] if first_only else value)
        warnings.warn(
            f"{old} = {value} is a reference-repo key for {cfg.DISTILLER.TYPE}; using it as {new} "
            f"(write {new} in new config files)",
            ConfigWarning,
            stacklevel=3,
        )


# The logit-standardization (LS) repository's command-line flags, ``--logit-stand
# --base-temp T --kd-weight W`` (its tools/train.py as of commit f6e5aa5), applied after the
# file and the KEY VALUE pairs as there, in this project's nodes: for each method LS serves,
# ``{key: what it becomes}`` with "temp" = T, "weight" = W, "times weight" = value * W.
LS_DEFAULT_BASE_TEMP, LS_DEFAULT_KD_WEIGHT = 2.0, 9.0  # its --base-temp and --kd-weight defaults
LS_FLAG_KEYS = {
    "KD": {"KD.TEMPERATURE": "temp", "KD.LOSS.KD_WEIGHT": "weight"},
    # LS's MLKD reads its first temperature from KD.TEMPERATURE and its weight from KD.LOSS.KD_WEIGHT
    "MLKD": {"MLKD.TEMPERATURES[0]": "temp", "MLKD.KD_WEIGHT": "weight"},
    "DKD": {"DKD.ALPHA": "times weight", "DKD.BETA": "times weight", "DKD.T": "temp"},
}


def apply_ls_flags(cfg, logit_stand=False, base_temp=None, kd_weight=None):
    """Apply the LS repository's ``--logit-stand``/``--base-temp``/``--kd-weight`` to ``cfg``
    (not frozen) with its semantics: only with ``logit_stand`` and only for KD, DKD and MLKD
    (``DISTILLER.LOGIT_STAND`` on, the keys of :data:`LS_FLAG_KEYS` set); otherwise nothing
    changes, as there, and a warning says so. ``None`` means the flag's default (2, 9)."""
    given = [f for f, v in (("--base-temp", base_temp), ("--kd-weight", kd_weight)) if v is not None]
    if not logit_stand:
        if given:
            warnings.warn(f"{' and '.join(given)} change{'s' if len(given) == 1 else ''} nothing without "
                          f"--logit-stand (as in the "
                          f"logit-standardization repository); add --logit-stand", ConfigWarning, stacklevel=2)
        return cfg
    method = cfg.DISTILLER.TYPE
    if method not in LS_FLAG_KEYS:
        warnings.warn(f"--logit-stand, --base-temp and --kd-weight change nothing for {method} (in the "
                      f"logit-standardization repository they serve {', '.join(sorted(LS_FLAG_KEYS))} only)",
                      ConfigWarning, stacklevel=2)
        return cfg
    temp = LS_DEFAULT_BASE_TEMP if base_temp is None else float(base_temp)
    weight = LS_DEFAULT_KD_WEIGHT if kd_weight is None else float(kd_weight)
    cfg.DISTILLER.LOGIT_STAND = True
    for key, rule in LS_FLAG_KEYS[method].items():
        first_only = key.endswith("[0]")
        own = key[:-3] if first_only else key
        current = get_key(cfg, own)
        value = {"temp": temp, "weight": weight}.get(rule)
        if value is None:  # "times weight"
            value = (current[0] if first_only else current) * weight
        _set(cfg, own, [value, *current[1:]] if first_only else coerce_value(own, current, value))
    return cfg


# ---------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------
# what SOLVER.TYPE / SOLVER.TRAINER may say: what the framework implements, and the values
# the reference files carry that mean nothing here (the views follow the distiller), and DOT's
SOLVER_TYPES = ("SGD",)
SOLVER_TRAINERS = ("base", "ours", "crd", "aug") + dot.DOT_TRAINERS


#: bounds of EXPERIMENT.SEED (torch's generators take 64-bit seeds) and of the synthetic dataset
MAX_SEED, MAX_SYNTHETIC = 2**63 - 1, 1_000_000


def max_workers():
    """The most loader workers a run may fork: 4 per usable core, and never fewer than 64
    (configs written for a larger machine still load on a small one)."""
    return max(64, 4 * usable_cpus())


def check_workers(key, value):
    """A worker count beyond :func:`max_workers` forks the machine to a halt: refused."""
    limit = max_workers()
    if _is_number(value) and value > limit:
        raise ConfigError(f"{key} {value} is more than {limit} worker processes (the bound: 4 per usable core, at "
                          f"least 64); set it to at most {limit}, e.g. the number of cores")


def validate_framework_keys(cfg):
    """SOLVER, LOG, DATASET and EXPERIMENT settings that types alone cannot check."""
    s, data = cfg.SOLVER, cfg.DATASET

    def at_least(key, low, what):
        value = get_key(cfg, key)
        if not _is_number(value) or value < low:
            raise ConfigError(f"{key} must be {what}, got {value}")

    at_least("SOLVER.MOMENTUM", 0, "a number >= 0 (SGD momentum, e.g. 0.9)")
    at_least("SOLVER.WEIGHT_DECAY", 0, "a number >= 0 (e.g. 0.0005)")
    if not _is_number(s.LR_DECAY_RATE) or s.LR_DECAY_RATE <= 0:
        raise ConfigError(f"SOLVER.LR_DECAY_RATE must be a positive factor (e.g. 0.1), got {s.LR_DECAY_RATE}")
    if any(e < 0 for e in s.LR_DECAY_STAGES):
        raise ConfigError(f"SOLVER.LR_DECAY_STAGES must be epochs >= 0, got {list(s.LR_DECAY_STAGES)}")
    if s.TYPE not in SOLVER_TYPES:
        raise ConfigError(f"SOLVER.TYPE '{s.TYPE}' is not implemented (only {', '.join(SOLVER_TYPES)}, the "
                          f"reference's optimizer); set SOLVER.TYPE SGD")
    if s.TRAINER not in SOLVER_TRAINERS:
        raise ConfigError(f"SOLVER.TRAINER '{s.TRAINER}' is not implemented here (the one trainer serves "
                          f"{', '.join(SOLVER_TRAINERS)}); set SOLVER.TRAINER base")
    at_least("DATASET.NUM_WORKERS", 0, "a number of worker processes >= 0 (0 = load in the main process)")
    check_workers("DATASET.NUM_WORKERS", data.NUM_WORKERS)
    at_least("DATASET.SYNTHETIC_SIZE", 1, "at least 1")
    at_least("DATASET.SYNTHETIC_CLASSES", 2, "at least 2")
    at_least("EXPERIMENT.SEED", 0, "an integer >= 0")
    for key, high in (("EXPERIMENT.SEED", MAX_SEED), ("DATASET.SYNTHETIC_SIZE", MAX_SYNTHETIC),
                      ("DATASET.SYNTHETIC_CLASSES", MAX_SYNTHETIC)):
        if get_key(cfg, key) > high:
            raise ConfigError(f"{key} must be at most {high}, got {get_key(cfg, key)}; set a smaller value")
    for key in ("LOG.READ_FREQ", "LOG.SAVE_CHECKPOINT_FREQ", "LOG.TENSORBOARD_FREQ"):
        at_least(key, 1, "at least 1 (a number of steps or epochs)")
    if str(cfg.LOG.LEVEL).upper() not in LEVELS:
        raise ConfigError(f"LOG.LEVEL '{cfg.LOG.LEVEL}' is not a level; set one of {', '.join(LEVELS)}")
    if data.TINY_IMAGENET_VIEW not in VIEWS:
        raise ConfigError(f"DATASET.TINY_IMAGENET_VIEW '{data.TINY_IMAGENET_VIEW}' is not a view; set "
                          f"{' or '.join(VIEWS)}")
    if data.ROOT and os.path.isfile(data.ROOT):
        raise ConfigError(f"DATASET.ROOT '{data.ROOT}' is a file; set it to the dataset's folder")


def validate_cfg(cfg):
    """Check settings that types alone cannot; raise ConfigError, warn on suspicious ones."""
    s = cfg.SOLVER
    if s.EPOCHS < 1:
        raise ConfigError(f"SOLVER.EPOCHS must be at least 1, got {s.EPOCHS}")
    if s.BATCH_SIZE < 1 or cfg.DATASET.TEST.BATCH_SIZE < 1:
        raise ConfigError("SOLVER.BATCH_SIZE and DATASET.TEST.BATCH_SIZE must be positive")
    if not _is_number(s.LR) or s.LR <= 0:
        raise ConfigError(f"SOLVER.LR must be a positive number, got {s.LR}")
    stages = list(s.LR_DECAY_STAGES)
    if any(b <= a for a, b in zip(stages, stages[1:])):
        raise ConfigError(f"SOLVER.LR_DECAY_STAGES must be strictly increasing, got {stages}")
    if s.AMP not in ("none", "bf16", "fp16"):
        raise ConfigError(f"SOLVER.AMP must be one of none, bf16, fp16; got '{s.AMP}'")
    if s.COMPILE_MODE not in ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"):
        raise ConfigError(f"SOLVER.COMPILE_MODE must be one of default, reduce-overhead, max-autotune, "
                          f"max-autotune-no-cudagraphs; got '{s.COMPILE_MODE}'")
    if s.DEVICE not in ("auto", "cpu", "cuda") and not s.DEVICE.startswith("cuda:"):
        raise ConfigError(f"SOLVER.DEVICE must be auto, cpu or cuda; got '{s.DEVICE}'")
    if not 0 < cfg.DATASET.SUBSET <= 1 or not 0 < cfg.DATASET.VAL_SUBSET <= 1:
        raise ConfigError("DATASET.SUBSET and DATASET.VAL_SUBSET must be fractions in (0, 1]")
    check_holdout(cfg)
    check_decode(cfg)  # DATASET.DECODE: cpu or device
    validate_framework_keys(cfg)

    dot.check_config(cfg)  # SOLVER.TRAINER dot: what DOT supports
    check_methods(cfg)  # each registered method checks its own node


# ---------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------
def get_default_cfg():
    """A mutable copy of the defaults."""
    return CFG.clone()


def merge_dict(cfg, data, explicit=None):
    """Merge a nested dict into ``cfg`` with key and type checks (raises ConfigError)."""
    _merge(cfg, data, "", explicit)
    return cfg


def load_plugins(data, overrides):
    """Import the plugins the config names (the override's list, else the file's), so their
    config nodes and registry entries exist before the rest is merged. A relative file in
    the override is made absolute from the working directory (in ``overrides`` too)."""
    probe = CN({"EXPERIMENT": CN({"PLUGINS": []})})
    for part, base_dir in ((data, None), (overrides, os.getcwd())):
        exp = part.get("EXPERIMENT")
        if isinstance(exp, dict) and "PLUGINS" in exp:
            _merge(probe, {"EXPERIMENT": {"PLUGINS": exp["PLUGINS"]}})  # decoded and type-checked
            if base_dir is not None:
                exp["PLUGINS"] = probe.EXPERIMENT.PLUGINS = plugins.resolve(probe.EXPERIMENT.PLUGINS, base_dir)
    plugins.import_plugins(probe.EXPERIMENT.PLUGINS)


def load_cfg(path=None, opts=None, base=None, freeze=True, ls_flags=None):
    """Build a run's config: defaults <- YAML (with _BASE_) <- ``KEY VALUE`` overrides
    <- the LS repository's flags ``ls_flags`` (a dict of :func:`apply_ls_flags`' keywords).

    ``EXPERIMENT.PLUGINS`` are imported first. Raises ConfigError for a missing file, YAML
    syntax error (with line number), unknown key (with the closest valid key), wrong type,
    odd override list, missing plugin, or invalid setting.
    """
    data = read_yaml_with_bases(path) if path else {}
    overrides = overrides_to_dict(opts)
    load_plugins(data, overrides)
    cfg = (base or CFG).clone()
    cfg.defrost()
    explicit = set()
    merge_dict(cfg, data, explicit)
    merge_dict(cfg, overrides, explicit)
    translate_legacy_keys(cfg, explicit)
    apply_ls_flags(cfg, **(ls_flags or {}))
    validate_cfg(cfg)
    if freeze:
        cfg.freeze()
    return cfg


def cfg_to_dict(cfg):
    """A plain nested dict of a CfgNode (for saving, hashing and comparing)."""
    if isinstance(cfg, CN):
        return {k: cfg_to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, tuple):
        return list(cfg)
    return cfg


def diff_cfg(a, b, prefix=""):
    """Dotted keys whose values differ between two configs (dicts or CfgNodes)."""
    a, b = cfg_to_dict(a), cfg_to_dict(b)
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff_cfg(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}")
    return out


def log_msg(msg, mode="INFO"):
    """mdistiller's coloured console message."""
    color_map = {"INFO": 36, "TRAIN": 32, "EVAL": 31}
    return f"\033[{color_map.get(mode, 36)}m[{mode}] {msg}\033[0m"


def show_cfg(cfg):
    dump_cfg = CN()
    dump_cfg.EXPERIMENT = cfg.EXPERIMENT
    dump_cfg.DATASET = cfg.DATASET
    dump_cfg.DISTILLER = cfg.DISTILLER
    dump_cfg.SOLVER = cfg.SOLVER
    dump_cfg.LOG = cfg.LOG
    if cfg.DISTILLER.TYPE in cfg:
        dump_cfg.update({cfg.DISTILLER.TYPE: cfg.get(cfg.DISTILLER.TYPE)})
    print(log_msg("CONFIG:\n{}".format(dump_cfg.dump()), "INFO"))


__all__ = ["CFG", "load_cfg", "apply_ls_flags", "get_key", "get_default_cfg", "merge_dict", "validate_cfg", "cfg_to_dict",
           "diff_cfg", "overrides_to_dict", "ConfigWarning", "log_msg", "show_cfg"]
