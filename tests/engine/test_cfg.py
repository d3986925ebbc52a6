"""Config loading: defaults, _BASE_ inheritance, overrides, errors, legacy KD.* keys,
and a property-based test of the override path."""

import ast
import math
import warnings

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yacs.config import CfgNode as CN

from mdistiller.config.load import CFG, STR_OR_LIST_KEYS, ConfigWarning, load_cfg, merge_dict
from mdistiller.utils.errors import ConfigError


def _leaves(node, prefix=""):
    for k, v in node.items():
        if isinstance(v, CN):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


ALL_KEYS = dict(_leaves(CFG))


def test_every_default_has_a_comment():
    import inspect

    from mdistiller.config import defaults

    for line in inspect.getsource(defaults).splitlines():
        if line.startswith("CFG.") and "= CN()" not in line:
            assert "#" in line, f"default without a comment: {line}"


def test_required_nodes_and_defaults():
    for node in ["EXPERIMENT", "DATASET", "DISTILLER", "SOLVER", "LOG", "KD", "DKD", "MLKD", "SLD"]:
        assert node in CFG
    assert CFG.SLD.GAMMA == 150 and list(CFG.SLD.TEMPERATURES) == [1, 2, 3, 4, 5, 6]
    assert CFG.SLD.CE_WEIGHT == 0.1 and CFG.SLD.KD_WEIGHT == 0.9 and CFG.SLD.DETACH_PSEUDO_TEACHER is False
    assert list(CFG.MLKD.TEMPERATURES) == [4, 3, 5, 2, 6]
    assert CFG.KD.TEMPERATURE == 4 and CFG.KD.LOSS.CE_WEIGHT == 0.1 and CFG.DKD.BETA == 8.0
    assert isinstance(CFG.EXPERIMENT.SEED, int)


def test_mdistiller_public_names():
    from mdistiller.distillers import distiller_dict
    from mdistiller.config.load import CFG as cfg2
    from mdistiller.models import cifar_model_dict, imagenet_model_dict

    assert cfg2 is CFG and "SLD" in distiller_dict and "resnet8x4" in cifar_model_dict
    assert "ResNet18" in imagenet_model_dict


def write(path, data):
    path.write_text(yaml.safe_dump(data) if isinstance(data, dict) else data)
    return str(path)


def test_base_inheritance_and_overrides(tmp_path):
    (tmp_path / "base").mkdir()
    base = write(tmp_path / "base" / "b.yaml", {"SOLVER": {"LR": 0.01, "EPOCHS": 10}, "SLD": {"GAMMA": 5}})
    child = write(tmp_path / "c.yaml", {"_BASE_": "base/b.yaml", "SOLVER": {"EPOCHS": 20},
                                        "DISTILLER": {"TYPE": "SLD"}})
    cfg = load_cfg(child, ["SLD.TEMPERATURES", "[2, 3]", "SOLVER.LR", "0.02"])
    assert cfg.SOLVER.EPOCHS == 20 and cfg.SOLVER.LR == 0.02 and cfg.SLD.GAMMA == 5
    assert list(cfg.SLD.TEMPERATURES) == [2.0, 3.0] and cfg.DISTILLER.TYPE == "SLD"
    assert load_cfg(base).SOLVER.EPOCHS == 10
    cyc = write(tmp_path / "cyc.yaml", {"_BASE_": "cyc.yaml"})
    with pytest.raises(ConfigError, match="cycle"):
        load_cfg(cyc)


@pytest.mark.parametrize("opts,pattern", [
    (["SOLVER.LRR", "0.1"], r"unknown config key 'SOLVER.LRR'; did you mean 'SOLVER.LR'\?"),
    (["SLD.GAMA", "3"], r"did you mean 'SLD.GAMMA'"),
    (["SOLVER.EPOCHS", "ten"], r"'SOLVER.EPOCHS' expects a int, got 'ten' \(str\)"),
    (["SOLVER.EPOCHS", "1.5"], r"'SOLVER.EPOCHS' expects a int"),
    (["LOG.WANDB", "1"], r"'LOG.WANDB' expects a bool"),
    (["SLD.TEMPERATURES", "[1, 'a']"], r"'SLD.TEMPERATURES' expects a list of float"),
    (["SOLVER.LR"], r"KEY VALUE pairs, got an odd number"),
    (["SLD.TEMPERATURES", "[]"], r"SLD.TEMPERATURES must be a non-empty list of positive numbers"),
    (["SLD.TEMPERATURES", "[0, 1]"], r"SLD.TEMPERATURES must be a non-empty list of positive numbers"),
    (["SLD.GAMMA", "-1"], r"SLD.GAMMA must be >= 0"),
    (["SLD.CE_WEIGHT", "-0.5"], r"SLD.CE_WEIGHT must be a non-negative number"),
    (["SLD.KD_WEIGHT", "nan"], r"'SLD.KD_WEIGHT' expects a float, got 'nan'"),
    (["SOLVER.LR_DECAY_STAGES", "[150, 100]"], r"LR_DECAY_STAGES must be strictly increasing"),
    (["SOLVER.AMP", "fp8"], r"SOLVER.AMP must be one of"),
])
def test_bad_overrides_name_the_problem(opts, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_cfg(None, opts)


def test_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_cfg(str(tmp_path / "nope.yaml"))
    bad = write(tmp_path / "bad.yaml", "SOLVER:\n  LR: 0.1\n   EPOCHS: [1, 2\n")
    with pytest.raises(ConfigError, match=r"YAML syntax error in .* at line \d+"):
        load_cfg(bad)
    nan = write(tmp_path / "nan.yaml", "SLD:\n  KD_WEIGHT: .nan\n")
    with pytest.raises(ConfigError, match="SLD.KD_WEIGHT must be a non-negative number"):
        load_cfg(nan)
    section = write(tmp_path / "sec.yaml", "DISTILER:\n  TYPE: KD\n")
    with pytest.raises(ConfigError, match="unknown config section 'DISTILER'; did you mean 'DISTILLER'"):
        load_cfg(section)


def test_gamma_not_below_epochs_warns():
    with pytest.warns(ConfigWarning, match="never run"):
        load_cfg(None, ["DISTILLER.TYPE", "SLD", "SOLVER.EPOCHS", "100"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_cfg(None, ["DISTILLER.TYPE", "SLD", "SOLVER.EPOCHS", "240"])


@pytest.mark.parametrize("method,key,new", [("SLD", "KD.LOSS.CE_WEIGHT", "SLD.CE_WEIGHT"),
                                            ("SLD", "KD.LOSS.KD_WEIGHT", "SLD.KD_WEIGHT"),
                                            ("MLKD", "KD.LOSS.CE_WEIGHT", "MLKD.CE_WEIGHT"),
                                            ("MLKD", "KD.TEMPERATURE", "MLKD.TEMPERATURES")])
def test_reference_kd_keys_are_translated_with_a_warning(tmp_path, method, key, new):
    sec, *rest = key.split(".")
    data = {"DISTILLER": {"TYPE": method}}
    node = data.setdefault(sec, {})
    for p in rest[:-1]:
        node = node.setdefault(p, {})
    node[rest[-1]] = 2.0
    with pytest.warns(ConfigWarning, match=f"{key} = 2.0 .*using it as {new}"):
        cfg = load_cfg(write(tmp_path / "ref.yaml", data))
    sec2, k2 = new.split(".")
    value = cfg[sec2][k2]
    assert (value[0] if isinstance(value, list) else value) == 2.0


def test_sld_temperature_in_kd_node_is_not_silently_ignored():
    with pytest.warns(ConfigWarning, match="KD.TEMPERATURE = 2.0 has no effect on SLD"):
        load_cfg(None, ["DISTILLER.TYPE", "SLD", "KD.TEMPERATURE", "2.0"])


def test_conflicting_legacy_and_new_keys():
    with pytest.raises(ConfigError, match="both KD.LOSS.CE_WEIGHT and SLD.CE_WEIGHT"):
        load_cfg(None, ["DISTILLER.TYPE", "SLD", "KD.LOSS.CE_WEIGHT", "1.0", "SLD.CE_WEIGHT", "0.5"])


@pytest.mark.parametrize("method", ["SLD", "MLKD"])
def test_saved_full_config_reloads_silently_and_unchanged(tmp_path, method):
    """A run's config.yaml (every key, KD.* at their defaults) is not a reference file."""
    node = method + "."
    cfg = load_cfg(None, ["DISTILLER.TYPE", method, node + "CE_WEIGHT", "0.5", node + "KD_WEIGHT", "2.0",
                          node + "TEMPERATURES", "[3.0, 5.0]", "SOLVER.EPOCHS", "400"])
    path = tmp_path / "config.yaml"
    path.write_text(cfg.dump())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = load_cfg(str(path))
    assert again == cfg


# ---------------------------------------------------------------------------------------
# Property-based: random overrides are accepted with their value and type, or rejected
# with the project's ConfigError -- never another exception.
# ---------------------------------------------------------------------------------------
scalars = st.one_of(
    st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
)
values = st.one_of(scalars, st.lists(scalars, max_size=4))
keys = st.one_of(st.sampled_from(sorted(ALL_KEYS)), st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ_.", min_size=1,
                                                             max_size=16))


def _same(a, b):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b and (type(a) is type(b) or {type(a), type(b)} <= {int, float})


def _literal(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return None


def _check_read_back(cfg, given):
    for key, value in given.items():
        node = cfg
        for p in key.split("."):
            node = node[p]
        default = ALL_KEYS[key]
        assert _same(node, value), (key, node, value)
        if key in STR_OR_LIST_KEYS and isinstance(node, list):  # several teachers: a list of str
            assert all(isinstance(v, str) for v in node), (key, node)
            continue
        # the type read back is the key's type; the only conversion is int -> float
        assert type(node) is type(default), (key, type(node), type(default))
        if type(value) is not type(default):
            assert (isinstance(default, float) and type(value) is int) or isinstance(value, (list, tuple))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, values, max_size=4))
def test_random_yaml_overrides(pairs):
    nested = {}
    for key, value in pairs.items():
        node = nested
        parts = key.split(".")
        try:
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            if isinstance(node, dict):
                node[parts[-1]] = value
        except AttributeError:
            continue
    cfg = CFG.clone()
    cfg.defrost()
    try:
        merge_dict(cfg, yaml.safe_load(yaml.safe_dump(nested)))
        from mdistiller.config.load import validate_cfg

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            validate_cfg(cfg)
    except ConfigError:
        return
    flat = {k: v for k, v in pairs.items() if k in ALL_KEYS and _reachable(nested, k)}
    _check_read_back(cfg, flat)


def _reachable(nested, key):
    node = nested
    for p in key.split("."):
        if not isinstance(node, dict) or p not in node:
            return False
        node = node[p]
    return True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(sorted(ALL_KEYS)), values), max_size=3, unique_by=lambda t: t[0]))
def test_random_command_line_overrides(pairs):
    opts, expected = [], {}
    for key, value in pairs:
        text = value if isinstance(ALL_KEYS[key], str) and isinstance(value, str) else repr(value)
        opts += [key, text]
        # a str key takes the text as typed; other keys decode it as a Python literal
        expected[key] = text if isinstance(ALL_KEYS[key], str) else value
        if key in STR_OR_LIST_KEYS and isinstance(_literal(text), list):
            expected[key] = _literal(text)  # the teacher keys also take a list literal
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg = load_cfg(None, opts)
    except ConfigError:
        return
    given = {}
    for key, value in expected.items():
        if key.startswith("KD.") or key in ("SLD.CE_WEIGHT", "SLD.KD_WEIGHT", "MLKD.CE_WEIGHT", "MLKD.KD_WEIGHT",
                                            "MLKD.TEMPERATURES"):
            continue  # may be rewritten by the reference-key translation (tested above)
        given[key] = value
    _check_read_back(cfg, given)


def test_teacher_keys_take_a_list_literal_from_the_command_line():
    cfg = load_cfg(None, ["DISTILLER.TEACHER", "['0']"])
    assert cfg.DISTILLER.TEACHER == ["0"]
    assert load_cfg(None, ["DISTILLER.TEACHER", "resnet20"]).DISTILLER.TEACHER == "resnet20"
