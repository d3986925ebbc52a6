"""--space KEY=SPEC: the forms, the checks against the config, the values stored in the study."""

import pytest

from mdistiller.config.load import load_cfg
from mdistiller.tune.space import check_space, override_text, parse_space, trial_overrides
from mdistiller.utils.errors import ConfigError


def test_the_four_forms():
    p = parse_space("SOLVER.EPOCHS=int:1:5")
    assert (p.key, p.kind, p.low, p.high) == ("SOLVER.EPOCHS", "int", 1, 5)
    p = parse_space("SOLVER.LR=float:0.001:0.1:log")
    assert (p.kind, p.low, p.high, p.log) == ("float", 0.001, 0.1, True)
    assert not parse_space("SOLVER.LR=float:0.01:0.1").log
    p = parse_space("SLD.TEMPERATURES=choice:[1,2,3,4,5,6];[2,3,4]")
    assert p.choices == ("[1,2,3,4,5,6]", "[2,3,4]")


@pytest.mark.parametrize("spec, message", [
    ("SOLVER.LR", "must look like KEY=SPEC"),
    ("SOLVER.LR=uniform:0:1", "unknown kind 'uniform'"),
    ("SOLVER.LR=float:0.1", "expected float:LOW:HIGH"),
    ("SOLVER.LR=float:0.1:0.01", "LOW must be below HIGH"),
    ("SOLVER.LR=float:0:0.1:log", "a log range needs LOW > 0"),
    ("SOLVER.LR=float:0:inf", "not finite"),
    ("SOLVER.EPOCHS=int:1.5:3", "not an integer"),
    ("SOLVER.LR=choice:0.1;;0.2", "none empty"),
    ("SOLVER.LR=choice:0.1;0.1", "listed twice"),
])
def test_malformed_specs_are_one_line(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_space(spec)


def test_values_are_checked_against_the_config_and_lists_stored_as_text():
    params = check_space([parse_space("SLD.TEMPERATURES=choice:[1,2];[4]"), parse_space("SLD.GAMMA=choice:0;10"),
                          parse_space("SOLVER.LR=float:0.01:0.1")], None, [])
    assert params[0].choices == ("[1,2]", "[4]")  # Optuna's choices are scalars: the text
    assert params[1].choices == (0, 10)  # scalars as the config parses them
    opts = trial_overrides({"SLD.TEMPERATURES": "[1,2]", "SLD.GAMMA": 10, "SOLVER.LR": 0.05})
    cfg = load_cfg(None, opts)
    assert list(cfg.SLD.TEMPERATURES) == [1.0, 2.0] and cfg.SLD.GAMMA == 10 and cfg.SOLVER.LR == 0.05
    assert override_text(0.1 + 0.2) == repr(0.1 + 0.2)  # no digits lost
    with pytest.raises(ConfigError, match="--space SOLVER.EPOCHS=int:0:3: .*SOLVER.EPOCHS"):
        check_space([parse_space("SOLVER.EPOCHS=int:0:3")], None, [])
    with pytest.raises(ConfigError, match="SOLVR.LR"):
        check_space([parse_space("SOLVR.LR=float:0.1:0.2")], None, [])
    with pytest.raises(ConfigError, match="set by tune.py"):
        check_space([parse_space("DATASET.HOLDOUT=float:0.1:0.2")], None, [])
    with pytest.raises(ConfigError, match="more than once"):
        check_space([parse_space("SOLVER.LR=float:0.1:0.2")], None, ["SOLVER.LR", "0.1"])
