"""``scripts/gpu_check.sh`` (mdistiller.cli.gpu_check) in its CPU dry mode, in-process."""

import json

import pytest

from mdistiller.cli.gpu_check import EPOCHS, REFERENCE_INPUT_LIMIT, main, projection


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
