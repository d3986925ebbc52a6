"""docs/new_method.md does what it says: its method file, saved from the document into a
temporary folder, is a method inside the package (dropped into the package's path) and as a
plugin (its command line, on the tiny synthetic run), and its test passes."""

import os
import re
import shlex

import torch

from mdistiller import distillers
from mdistiller.cli.train import main as train_main
from mdistiller.distillers import DISTILLERS
from mdistiller.config.load import CFG
from tests.conftest import REPO_ROOT
from tests.engine.helpers import make_teacher, metrics, tiny_argv

with open(os.path.join(REPO_ROOT, "docs", "new_method.md"), encoding="utf-8") as f:
    DOC = f.read()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", DOC, re.S)


def python_block(name):
    """The python block of the document that starts with ``# <name>``."""
    found = [code for lang, code in BLOCKS if lang == "python" and code.startswith(f"# {name}\n")]
    assert len(found) == 1, name
    return found[0]


def train_command():
    """The overrides of the document's plugin command (after its --cfg FILE)."""
    line = next(code for lang, code in BLOCKS if lang == "bash" and "EXPERIMENT.PLUGINS" in code).strip()
    words = shlex.split(line)
    assert words[:2] == ["python3", "tools/train_ours.py"] and words[2] == "--cfg"
    assert os.path.isfile(os.path.join(REPO_ROOT, words[3]))
    return words[4:]


def test_inside_the_package(tmp_path, monkeypatch, restore_methods):
    (tmp_path / "my_method.py").write_text(python_block("my_method.py"))
    monkeypatch.setattr(distillers, "__path__", [*distillers.__path__, str(tmp_path)])
    distillers.discover()  # what importing the package does with mdistiller/distillers/my_method.py
    assert DISTILLERS["SYMKD"].__module__ == "mdistiller.distillers.my_method"
    assert CFG.SYMKD.TEMPERATURE == 4.0 and CFG.SYMKD.WEIGHT == 1.0


def test_as_a_plugin_then_its_test(tmp_path, monkeypatch, restore_methods):
    (tmp_path / "my_method.py").write_text(python_block("my_method.py"))
    (tmp_path / "test_my_method.py").write_text(python_block("test_my_method.py"))
    make_teacher(tmp_path / "teacher.pth")
    monkeypatch.chdir(tmp_path)
    overrides = train_command()
    name = overrides[overrides.index("EXPERIMENT.NAME") + 1]
    # the document's overrides on the tiny synthetic run (its dataset and teacher replaced)
    argv = [*overrides, *tiny_argv(tmp_path, name, teacher=tmp_path / "teacher.pth")]
    assert train_main(argv) == 0
    assert DISTILLERS["SYMKD"].__module__.startswith("mdistiller_plugin_my_method_")
    assert len(metrics(tmp_path, name)) == 1 and torch.isfinite(torch.tensor(metrics(tmp_path, name)[0]["test_acc"]))
    namespace = {}
    exec(compile(python_block("test_my_method.py"), str(tmp_path / "test_my_method.py"), "exec"), namespace)
    tests = [fn for key, fn in namespace.items() if key.startswith("test_")]
    assert tests
    for test in tests:
        test()


def test_the_contract_table_is_the_one_in_the_base_module():
    """docs/new_method.md's table of declarations and the docstring of
    mdistiller/distillers/base.py (the one description of the contract) list the same."""
    from mdistiller.distillers import base

    first_cells = re.findall(r"^\| (`[^|]*)\|", DOC, re.M)
    doc_names = [re.findall(r"`(\w+)", cell)[0] for cell in first_cells]
    table = base.__doc__.split("What a method declares")[1]
    base_names = re.findall(r"^([a-z_]+) ", table, re.M)
    assert doc_names == base_names
