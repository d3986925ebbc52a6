"""Every tools/*.py runs the checkout it lives in, even when another mdistiller is
importable first (an installed copy, another checkout on PYTHONPATH)."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

TOOLS = sorted(f for f in os.listdir(os.path.join(REPO_ROOT, "tools")) if f.endswith(".py"))


@pytest.fixture(scope="module")
def decoy(tmp_path_factory):
    """A PYTHONPATH whose mdistiller fails on import."""
    root = tmp_path_factory.mktemp("decoy")
    (root / "mdistiller").mkdir()
    (root / "mdistiller" / "__init__.py").write_text("raise ImportError('the decoy mdistiller was imported')\n")
    return str(root)


@pytest.mark.parametrize("tool", [t for t in TOOLS if t in ("sweep.py", "summarize.py", "download_ckpts.py",
                                                             "eval.py", "train_ours.py")])
def test_tool_imports_its_own_checkout(decoy, tool):
    env = dict(os.environ, PYTHONPATH=decoy, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools", tool), "--help"], capture_output=True,
                         text=True, env=env, timeout=120, cwd=decoy)
    assert res.returncode == 0 and "usage" in res.stdout.lower(), res.stderr
    assert "decoy" not in res.stderr


def test_every_tool_puts_its_checkout_first():
    for tool in TOOLS:
        text = open(os.path.join(REPO_ROOT, "tools", tool)).read()
        assert "sys.path.insert(0" in text or "runpy.run_path" in text, tool
        assert "find_spec" not in text and "except ImportError" not in text, tool
