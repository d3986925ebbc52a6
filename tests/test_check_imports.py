"""The package's import graph (scripts/check_imports.py): layers one way, no circles, no
imports inside functions; and the old import paths users have keep working."""

import os
import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_the_import_graph_has_no_problems():
    out = subprocess.run([sys.executable, "scripts/check_imports.py"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    assert " 0 problem(s)" in out.stderr


def test_the_checker_finds_a_circle_and_an_upward_import(tmp_path):
    sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))
    try:
        import check_imports
    finally:
        sys.path.pop(0)
    pkg = tmp_path / "mdistiller"
    (pkg / "models").mkdir(parents=True)
    (pkg / "engine").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "engine" / "__init__.py").write_text("")
    (pkg / "engine" / "trainer.py").write_text("import torch\n")
    (pkg / "models" / "__init__.py").write_text("from . import net\n")
    (pkg / "models" / "net.py").write_text("from . import register\nfrom ..engine import trainer\n\n\n"
                                           "def f():\n    from ..engine import trainer\n")
    _, problems = check_imports.graph(str(tmp_path))
    text = "\n".join(problems)
    assert "import circle: mdistiller.models -> mdistiller.models.net -> mdistiller.models" in text
    assert "mdistiller.models.net (layer 2) imports mdistiller.engine.trainer (layer 6)" in text
    assert "import inside a function" in text


def test_old_import_paths_still_work():
    from mdistiller.config.defaults import CFG as defaults
    from mdistiller.distillers import distiller_dict
    from mdistiller.engine.cfg import CFG
    from mdistiller.engine.runfolder import EpochCommit  # noqa: F401 (moved to mdistiller.runs.folder)
    from mdistiller.models import cifar_model_dict

    assert CFG is defaults and "SLD" in distiller_dict and "resnet8x4" in cifar_model_dict
