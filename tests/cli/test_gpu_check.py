"""``scripts/gpu_check.sh`` (mdistiller.cli.gpu_check) in its CPU dry mode, in-process."""

import json
import os
import subprocess
import sys

import pytest

from mdistiller.cli.gpu_check import EPOCHS, REFERENCE_INPUT_LIMIT, main, projection
from mdistiller.engine.utils import REPO_ROOT


def test_dry_mode_times_the_cases_and_writes_json(tmp_path, capsys):
    out = tmp_path / "check.json"
    assert main(["--dry", "--skip-tests", "--steps", "1", "--cases", "SLD/fp32,KD/fp32+cl", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["mode"] == "dry (CPU)" and result["cpu"]["isa"] and "tests" not in result
    assert [f["name"] for f in result["steps"]] == result["setup"]["cases"] == ["SLD/fp32", "KD/fp32+cl"]
    assert all(f["value"] > 0 and f["batch_size"] == 8 and f["peak_memory_mb"] is None for f in result["steps"])
    p = result["projection"]
    assert p["input_images_per_s"] > 0 and p["by_batch"]["8"]["projected_hours"] > 0
    printed = capsys.readouterr().out
    assert "KD/fp32+cl" in printed and "projected" in printed and str(out) in printed
    assert {f["name"] for f in result["imagenet"]} >= {"imagenet/reference", "imagenet/cpu", "imagenet/device"}
    assert "imagenet/device:" in printed and "per worker core" in printed and result["complete"]
    assert printed.index("SLD/fp32") < printed.index("imagenet/reference")  # printed in the order measured


def test_cases_that_do_not_fit_the_budget_are_skipped_and_named(tmp_path, capsys):
    out = tmp_path / "check.json"
    assert main(["--dry", "--skip-tests", "--steps", "1", "--cases", "KD/fp32,KD/fp32+compile", "--budget", "1",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["steps"] == [] and [s["name"] for s in result["skipped"]] == ["KD/fp32", "KD/fp32+compile"]
    assert "would take about" in result["skipped"][0]["reason"] and result["imagenet"]
    assert "skipped KD/fp32+compile (batch 8): would take about 120 s" in capsys.readouterr().out


@pytest.mark.parametrize("budget", ["-1", "nan"])
def test_a_negative_budget_is_a_usage_error(budget, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--dry", "--budget", budget])
    assert e.value.code == 2 and "--budget must be a number of seconds >= 0" in capsys.readouterr().err


def fake_python(tmp_path, pip_works):
    """A python3 stand-in for scripts/gpu_check.sh: torch "imports", the test requirements do
    not until pip ran (which fails, or succeeds and leaves a marker); the tool itself runs for real."""
    marker = tmp_path / "installed"
    script = tmp_path / "python3"
    pip = f"touch {marker}; exit 0" if pip_works else \
        'echo "ERROR: No matching distribution found for pytest>=7 (network unreachable)" >&2; exit 1'
    script.write_text(f"""#!/bin/sh
case "$*" in
  *"pip install"*) {pip} ;;
  *"import pytest"*) [ -f {marker} ] && exit 0 || exit 1 ;;
  *"import torch, torchvision"*) exit 0 ;;
esac
exec {sys.executable} "$@"
""")
    script.chmod(0o755)
    return str(script)


@pytest.mark.parametrize("pip_works", [False, True])
def test_the_script_installs_its_test_requirements_or_says_why_not(tmp_path, pip_works):
    env = dict(os.environ, PYTHON=fake_python(tmp_path, pip_works))
    done = subprocess.run(["bash", os.path.join(REPO_ROOT, "scripts", "gpu_check.sh"), "--help"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert "installing the test requirements" in done.stdout
    if pip_works:
        assert done.returncode == 0 and "--budget" in done.stdout
    else:
        err = done.stderr.strip()
        assert done.returncode == 2 and "\n" not in err and err.startswith("error:")
        assert "network unreachable" in err and "scripts/setup.sh --test" in err


def test_tests_are_run_and_a_failure_is_reported(tmp_path, capsys):
    bad = tmp_path / "test_bad.py"
    bad.write_text("def test_ok():\n    assert True\n\ndef test_bad():\n    assert 1 == 2\n")
    out = tmp_path / "check.json"
    assert main(["--dry", "--skip-speed", "--pytest-args", str(bad), "--out", str(out)]) == 1
    tests = json.loads(out.read_text())["tests"]
    assert (tests["passed"], tests["failed"], tests["ok"]) == (1, 1, False)
    assert "tests: FAILED: 1 passed, 1 failed" in capsys.readouterr().out
    bad.write_text("def test_ok():\n    assert True\n")
    assert main(["--dry", "--skip-speed", "--pytest-args", str(bad), "--out", str(out)]) == 0


def test_projection_and_loader_bound_verdict():
    steps = [{"name": "a", "batch_size": 64, "value": 5000.0}, {"name": "b", "batch_size": 64, "value": 9000.0},
             {"name": "a", "batch_size": 256, "value": 2000.0}]
    p = projection(steps, per_worker=3000.0, workers=2)
    assert p["input_images_per_s"] == 6000.0
    b64, b256 = p["by_batch"]["64"], p["by_batch"]["256"]
    assert b64["best_case"] == "b" and b64["loader_bound"] and not b256["loader_bound"]
    assert b64["projected_hours"] == pytest.approx(EPOCHS * 50_000 / 6000.0 / 3600)  # capped by the loader
    assert b256["projected_hours"] == pytest.approx(EPOCHS * 50_000 / 2000.0 / 3600)
    assert p["reference_hours_floor"] == pytest.approx(EPOCHS * 50_000 / REFERENCE_INPUT_LIMIT / 3600)
