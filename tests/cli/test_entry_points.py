"""setup.py's console scripts name real ``main(argv)`` functions of mdistiller.cli, one per
tool of tools/, and they parse arguments like the wrappers."""

import ast
import importlib
import os

import pytest

from tests.conftest import REPO_ROOT


def console_scripts():
    with open(os.path.join(REPO_ROOT, "setup.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    value = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                 and any(getattr(t, "id", None) == "CONSOLE_SCRIPTS" for t in node.targets))
    return dict(tuple(part.strip() for part in entry.split("=")) for entry in ast.literal_eval(value))


SCRIPTS = console_scripts()


def test_the_listed_tools_have_commands():
    assert {"mdistiller-train", "mdistiller-eval", "mdistiller-sweep", "mdistiller-summarize",
            "mdistiller-download"} <= set(SCRIPTS)
    with open(os.path.join(REPO_ROOT, "requirements.txt"), encoding="utf-8") as f:
        assert "torch" in f.read()  # setup.py installs requirements.txt (the runtime list)


@pytest.mark.parametrize("command", sorted(SCRIPTS))
def test_each_command_is_a_main_taking_argv(command, capsys):
    module, func = SCRIPTS[command].split(":")
    main = getattr(importlib.import_module(module), func)
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "usage:" in capsys.readouterr().out
