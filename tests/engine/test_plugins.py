"""EXPERIMENT.PLUGINS: methods outside the package, imported before the config is read;
relative paths, module plugins, errors, repeated imports, and runs that resume and evaluate
in a fresh process (the run folder's config.yaml names the plugin)."""

import os
import re
import shutil

import pytest
import yaml

from mdistiller.cli.eval import main as eval_main
from mdistiller.distillers import DISTILLERS
from mdistiller.config.load import CFG, load_cfg
from mdistiller.utils.errors import ConfigError
from tests.conftest import REPO_ROOT
from tests.engine.helpers import make_teacher, metrics, run_dir, tiny_argv, train_main

EXAMPLE = os.path.join(REPO_ROOT, "examples", "plugins", "my_kd.py")
MYKD = ["DISTILLER.TYPE", "MYKD", "MYKD.TEMPERATURE", "2"]


def test_a_file_plugin_is_relative_to_the_config_file_naming_it(tmp_path, restore_methods):
    folder = tmp_path / "cfgs"
    (folder / "methods").mkdir(parents=True)
    (folder / "sub").mkdir()
    shutil.copy(EXAMPLE, folder / "methods" / "my_kd.py")
    (folder / "base.yaml").write_text("EXPERIMENT:\n  PLUGINS: ['methods/my_kd.py']\n")
    (folder / "sub" / "run.yaml").write_text(
        "_BASE_: ../base.yaml\nDISTILLER:\n  TYPE: MYKD\nMYKD:\n  TEMPERATURE: 2.0\n")
    cfg = load_cfg(str(folder / "sub" / "run.yaml"))
    assert list(cfg.EXPERIMENT.PLUGINS) == [str(folder / "methods" / "my_kd.py")]
    assert cfg.MYKD.TEMPERATURE == 2.0 and cfg.MYKD.WEIGHT == 1.0 and "MYKD" in CFG
    plugin = DISTILLERS["MYKD"]
    # loading again (a sweep, a second run in one process) imports nothing twice
    assert load_cfg(str(folder / "sub" / "run.yaml"), ["MYKD.WEIGHT", "0.5"]).MYKD.WEIGHT == 0.5
    assert DISTILLERS["MYKD"] is plugin


def test_an_override_is_relative_to_the_working_directory(monkeypatch, restore_methods):
    monkeypatch.chdir(REPO_ROOT)
    cfg = load_cfg(None, ["EXPERIMENT.PLUGINS", "['examples/plugins/my_kd.py']", *MYKD])
    assert list(cfg.EXPERIMENT.PLUGINS) == [EXAMPLE] and cfg.MYKD.TEMPERATURE == 2.0
    with pytest.raises(ConfigError, match="MYKD.TEMPERATURE must be positive, got 0"):
        load_cfg(None, ["EXPERIMENT.PLUGINS", "['examples/plugins/my_kd.py']", "MYKD.TEMPERATURE", "0"])


def test_a_module_plugin(tmp_path, monkeypatch, restore_methods):
    package = tmp_path / "plugin_test_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text(open(EXAMPLE).read().replace('"MYKD"', '"MODKD"').replace(".MYKD", ".MODKD"))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = load_cfg(None, ["EXPERIMENT.PLUGINS", "['plugin_test_pkg.mod']", "DISTILLER.TYPE", "MODKD"])
    assert cfg.MODKD.TEMPERATURE == 4.0 and DISTILLERS["MODKD"].__module__ == "plugin_test_pkg.mod"


@pytest.mark.parametrize("entry, message", [
    ("missing.py", r"plugin file '.*missing.py' does not exist; EXPERIMENT.PLUGINS takes"),
    ("plugin_test_nope", "plugin module 'plugin_test_nope' is not importable; install it"),
    ("bad.py", r"plugin '.*bad.py' failed to import: ZeroDivisionError: division by zero; fix the plugin"),
])
def test_a_bad_plugin_is_a_one_line_error(tmp_path, monkeypatch, capsys, restore_methods, entry, message):
    (tmp_path / "bad.py").write_text("x = 1 / 0\n")
    monkeypatch.chdir(tmp_path)
    assert train_main(["EXPERIMENT.PLUGINS", f"['{entry}']", "LOG.PREFIX", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_a_plugin_run_resumes_and_evaluates_in_a_fresh_process(tmp_path, monkeypatch, capsys, restore_methods):
    teacher = tmp_path / "teacher.pth"
    make_teacher(teacher)
    monkeypatch.chdir(REPO_ROOT)  # the command line, from the repository
    argv = tiny_argv(tmp_path, "mykd", "EXPERIMENT.PLUGINS", "['examples/plugins/my_kd.py']", *MYKD, teacher=teacher)
    assert train_main(argv) == 0
    folder = run_dir(tmp_path, "mykd")
    with open(os.path.join(folder, "config.yaml")) as f:
        assert yaml.safe_load(f)["EXPERIMENT"]["PLUGINS"] == [EXAMPLE]
    restore_methods.restore()  # a new process: MYKD is unknown until the plugin is imported again
    assert "MYKD" not in DISTILLERS and "MYKD" not in CFG
    assert train_main(["--resume"] + argv + ["SOLVER.EPOCHS", "2"]) == 0
    assert [r["epoch"] for r in metrics(tmp_path, "mykd")] == [1, 2]
    restore_methods.restore()
    monkeypatch.chdir(tmp_path)  # the run folder's config.yaml holds the plugin's absolute path
    capsys.readouterr()
    assert eval_main(["-c", folder, "--device", "cpu", "--workers", "0"]) == 0
    assert "student_best on synthetic" in capsys.readouterr().out
