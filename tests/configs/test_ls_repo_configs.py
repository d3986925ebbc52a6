"""The logit-standardization (LS) repository's README commands run here unchanged, with its
effective values (tests/data/ls_repo_configs.json.gz, recorded from
sunshangquan/logit-standardization-KD at f6e5aa5: its config files, its defaults, and what its
tools/train.py makes of ``--logit-stand --base-temp 2 --kd-weight 9``).

What differs by design (configs/README.md, "logit standardization"):
- run names (``EXPERIMENT.NAME``/``TAG``/``PROJECT``) and ``SOLVER.TRAINER`` are not compared;
- ``EXPERIMENT.LOGIT_STAND`` is ``DISTILLER.LOGIT_STAND`` here; LS's MLKD reads ``KD.TEMPERATURE``
  (its first temperature, then 3, 5, 2, 6) and ``KD.LOSS.*``, which live in ``MLKD.*`` here;
- without the flags, LS's own defaults (``KD.TEMPERATURE`` 2, ``KD.LOSS.KD_WEIGHT`` 9) are not
  this project's (mdistiller's 4 and 0.9): the files that leave them unset differ there only.
"""

import os
import warnings

import pytest
import yaml

from mdistiller.cli.train import main as train_main
from mdistiller.distillers import DISTILLERS
from mdistiller.engine.cfg import ConfigWarning, cfg_to_dict, get_key, load_cfg
from tests.conftest import REPO_ROOT, load_reference

REF = load_reference("ls_repo_configs")
COMMANDS = {c["file"]: c for c in REF["commands"]}
FRAMEWORK = ("EXPERIMENT", "DATASET", "DISTILLER", "SOLVER", "LOG")
NOT_COMPARED = ("EXPERIMENT.NAME", "EXPERIMENT.TAG", "EXPERIMENT.PROJECT", "SOLVER.TRAINER")
MLKD_TAIL = [3.0, 5.0, 2.0, 6.0]
FLAGS = ["--logit-stand", "--base-temp", "2", "--kd-weight", "9"]
# this project's files that hold an LS README recipe: the file's values are the command's
SHIPPED_LS = {"configs/cifar100/ls/kd_res32x4_res8x4.yaml": "configs/cifar100/kd/resnet32x4_resnet8x4.yaml",
              "configs/cifar100/ls/dkd_res32x4_res8x4.yaml": "configs/cifar100/dkd/resnet32x4_resnet8x4.yaml",
              "configs/cifar100/ls/mlkd_res32x4_res8x4.yaml": "configs/cifar100/mlkd/resnet32x4_resnet8x4.yaml"}
# this project's files at the mdistiller paths, which with the flags give the same run
SAME_RUN_WITH_FLAGS = {"configs/cifar100/kd/res32x4_res8x4.yaml": "configs/cifar100/kd/resnet32x4_resnet8x4.yaml",
                       "configs/cifar100/dkd/res32x4_res8x4.yaml": "configs/cifar100/dkd/resnet32x4_resnet8x4.yaml",
                       "configs/cifar100/mlkd/res32x4_res8x4.yaml": "configs/cifar100/mlkd/resnet32x4_resnet8x4.yaml"}


def expected(values):
    """``{our key: value}`` for LS's effective ``values``: the framework's sections and the
    method's own node, LS's keys translated into this project's."""
    method = values["DISTILLER.TYPE"]
    node = DISTILLERS[method].cfg_node
    moved = {k: v for k, v in DISTILLERS[method].legacy_keys.items() if v}
    out = {}
    for key, value in values.items():
        section = key.split(".")[0]
        if key in NOT_COMPARED or not (section in FRAMEWORK or section == node or key in moved):
            continue
        if key in moved:
            key = moved[key]
            if key.endswith("[0]"):
                key, value = key[:-3], [float(value)] + MLKD_TAIL
        out[key] = value
    return out


def differences(cfg, values):
    return {k: (get_key(cfg, k), v) for k, v in expected(values).items() if get_key(cfg, k) != v}


def load_ls_file(command, tmp_path, **ls_flags):
    path = tmp_path / os.path.basename(command["file"])
    path.write_text(command["text"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)  # EXPERIMENT.LOGIT_STAND is translated
        return load_cfg(str(path), ls_flags=ls_flags or None)


def test_record_holds_the_readme_commands():
    assert REF["commit"].startswith("f6e5aa5")
    assert sorted(COMMANDS) == sorted(["configs/cifar100/kd/resnet32x4_resnet8x4.yaml",
                                       "configs/cifar100/dkd/resnet32x4_resnet8x4.yaml",
                                       "configs/cifar100/mlkd/resnet32x4_resnet8x4.yaml",
                                       "configs/imagenet/r34_r18/kd.yaml"])
    assert all(c["command"].endswith(" ".join(FLAGS)) for c in REF["commands"])
    # LS's own defaults, which its no-flag commands run with
    assert REF["defaults"]["KD.TEMPERATURE"] == 2 and REF["defaults"]["KD.LOSS.KD_WEIGHT"] == 9
    # its ImageNet file's float weight against its int default: LS's loader refuses it
    assert "Type mismatch" in COMMANDS["configs/imagenet/r34_r18/kd.yaml"]["ls_load_error"]


@pytest.mark.parametrize("rel", sorted(COMMANDS))
def test_readme_command_gives_the_ls_values(rel, tmp_path):
    command = COMMANDS[rel]
    flags = command["flags"]
    cfg = load_ls_file(command, tmp_path, **flags)
    assert not differences(cfg, command["effective"])
    assert cfg.DISTILLER.LOGIT_STAND is True


def test_readme_values_of_dkd():
    eff = COMMANDS["configs/cifar100/dkd/resnet32x4_resnet8x4.yaml"]["effective"]
    assert (eff["DKD.ALPHA"], eff["DKD.BETA"], eff["DKD.T"], eff["EXPERIMENT.LOGIT_STAND"]) == (9.0, 72.0, 2.0, True)


@pytest.mark.parametrize("rel", sorted(COMMANDS))
def test_without_flags_only_ls_defaults_differ(rel, tmp_path):
    """LS's no-flag runs use its KD.TEMPERATURE 2 / KD_WEIGHT 9 where the file leaves them
    unset; here this project's defaults hold. Nothing else differs."""
    command = COMMANDS[rel]
    cfg = load_ls_file(command, tmp_path)
    assert cfg.DISTILLER.LOGIT_STAND is False
    ours_default = {"KD.TEMPERATURE": 4.0, "KD.LOSS.KD_WEIGHT": 0.9}
    unset = {k: v for k, v in ours_default.items() if k not in command["file_keys"]}
    if cfg.DISTILLER.TYPE == "MLKD":
        unset = {"MLKD.TEMPERATURES": [4.0] + MLKD_TAIL, "MLKD.KD_WEIGHT": 0.9}
    elif cfg.DISTILLER.TYPE != "KD":
        unset = {}
    diff = differences(cfg, command["effective_without_flags"])
    assert {k: ours for k, (ours, _) in diff.items()} == unset


@pytest.mark.parametrize("ours", sorted(SHIPPED_LS))
def test_shipped_ls_file_is_the_readme_recipe(ours):
    cfg = load_cfg(os.path.join(REPO_ROOT, ours))
    assert not differences(cfg, COMMANDS[SHIPPED_LS[ours]]["effective"])


def test_shipped_ls_dkd_resolves_to_the_ls_recipe():
    cfg = load_cfg(os.path.join(REPO_ROOT, "configs/cifar100/ls/dkd_res32x4_res8x4.yaml"))
    assert (cfg.DKD.ALPHA, cfg.DKD.BETA, cfg.DKD.T, cfg.DISTILLER.LOGIT_STAND) == (9.0, 72.0, 2.0, True)


@pytest.mark.parametrize("ours", sorted(SAME_RUN_WITH_FLAGS))
def test_mdistiller_path_with_flags_is_the_readme_run(ours):
    cfg = load_cfg(os.path.join(REPO_ROOT, ours),
                   ls_flags={"logit_stand": True, "base_temp": 2.0, "kd_weight": 9.0})
    assert not differences(cfg, COMMANDS[SAME_RUN_WITH_FLAGS[ours]]["effective"])


def test_flags_follow_the_key_value_pairs_and_use_their_defaults():
    """As in LS, the flags are applied after the KEY VALUE pairs; --logit-stand alone means 2 and 9."""
    cfg = load_cfg(os.path.join(REPO_ROOT, "configs/cifar100/dkd/res32x4_res8x4.yaml"),
                   ["DKD.BETA", "2.0", "DKD.T", "7.0"], ls_flags={"logit_stand": True})
    assert (cfg.DKD.ALPHA, cfg.DKD.BETA, cfg.DKD.T) == (9.0, 18.0, 2.0)
    cfg = load_cfg(os.path.join(REPO_ROOT, "configs/cifar100/kd/res32x4_res8x4.yaml"),
                   ls_flags={"logit_stand": True, "base_temp": 3.0, "kd_weight": 6.0})
    assert (cfg.KD.TEMPERATURE, cfg.KD.LOSS.KD_WEIGHT, cfg.DISTILLER.LOGIT_STAND) == (3.0, 6.0, True)


@pytest.mark.parametrize("rel,flags", [("configs/cifar100/sld/res32x4_res8x4.yaml", {"logit_stand": True}),
                                       ("configs/cifar100/vanilla/resnet8x4.yaml", {"logit_stand": True}),
                                       ("configs/cifar100/kd/res32x4_res8x4.yaml", {"kd_weight": 3.0}),
                                       ("configs/cifar100/dkd/res32x4_res8x4.yaml", {"base_temp": 3.0})])
def test_flags_change_nothing_elsewhere_and_say_so(rel, flags):
    plain = load_cfg(os.path.join(REPO_ROOT, rel))
    with pytest.warns(ConfigWarning, match="change"):
        cfg = load_cfg(os.path.join(REPO_ROOT, rel), ls_flags=flags)
    assert cfg_to_dict(cfg) == cfg_to_dict(plain)


def test_print_config_is_the_effective_config_and_nothing_else(tmp_path, capsys):
    """--print-config: the config.yaml a run would write, on stdout alone; no run folder made."""
    command = COMMANDS["configs/imagenet/r34_r18/kd.yaml"]
    path = tmp_path / "kd.yaml"
    path.write_text(command["text"])
    log = tmp_path / "out"
    argv = ["--cfg", str(path), *FLAGS, "--print-config", "LOG.PREFIX", str(log), "DATASET.ROOT", str(tmp_path / "no")]
    assert train_main(argv) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["KD"] == {"TEMPERATURE": 2.0, "LOSS": {"CE_WEIGHT": 1.0, "KD_WEIGHT": 9.0}}
    assert printed == cfg_to_dict(load_ls_file(command, tmp_path, **command["flags"])) | {
        "LOG": printed["LOG"], "DATASET": printed["DATASET"]}
    assert printed["LOG"]["PREFIX"] == str(log) and not log.exists()
    # a warning goes to stderr; stdout stays the YAML alone
    sld = os.path.join(REPO_ROOT, "configs/cifar100/sld/res32x4_res8x4.yaml")
    assert train_main(["--cfg", sld, "--print-config", "--logit-stand", "LOG.PREFIX", str(log)]) == 0
    out, err = capsys.readouterr()
    assert err.startswith("warning: --logit-stand") and len(err.splitlines()) == 1
    assert yaml.safe_load(out) == cfg_to_dict(load_cfg(sld, ["LOG.PREFIX", str(log)])) and not log.exists()


def test_print_config_bad_input_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("SOLVER:\n  LR: fast\n")
    assert train_main(["--cfg", str(bad), "--print-config"]) == 2
    with pytest.raises(SystemExit) as stop:
        train_main(["--cfg", str(bad), "--print-config", "--base-temp", "-1"])
    assert stop.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and [line.split(":")[0] for line in err.strip().splitlines()] == ["error", "error"]
    assert "SOLVER.LR" in err and "--base-temp" in err
