"""tools/eval.py on a run folder and on a checkpoint file, with mdistiller's flags."""

import os
import re

import pytest

from mdistiller.cli.eval import main as eval_main
from mdistiller.cli.train import main as train_main
from tests.engine.helpers import metrics, run_dir, tiny_argv


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evalrun")
    assert train_main(tiny_argv(tmp, "ev", "SOLVER.EPOCHS", "2")) == 0
    return tmp


def _top1(out):
    return float(re.search(r"top-1 ([\d.]+)", out).group(1))


def test_eval_on_a_run_folder_uses_student_best(finished_run, capsys):
    d = run_dir(finished_run, "ev")
    assert eval_main(["-c", d, "--device", "cpu", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert f"{os.path.join(d, 'student_best')} on synthetic" in out and "(12 images)" in out
    best = max(metrics(finished_run, "ev"), key=lambda r: (r["test_acc"], r["epoch"]))  # ties: the latest
    assert out.strip().endswith(f"; epoch {best['epoch']}, selected on the test set (optimistic)")
    assert _top1(out) == pytest.approx(max(r["test_acc"] for r in metrics(finished_run, "ev")), abs=0.005)  # printed with two decimals


def test_eval_on_a_checkpoint_file_with_mdistiller_flags(finished_run, capsys):
    d = run_dir(finished_run, "ev")
    latest = metrics(finished_run, "ev")[-1]["test_acc"]
    code = eval_main(["-m", "resnet8", "-c", os.path.join(d, "student_latest"), "-d", "synthetic", "-bs", "5",
                      "--device", "cpu", "--workers", "0", "DATASET.SYNTHETIC_SIZE", "48"])
    assert code == 0
    assert _top1(capsys.readouterr().out) == pytest.approx(latest, abs=0.005)  # printed with two decimals
    # the distiller checkpoint 'latest' (student. prefixes) evaluates the same student
    assert eval_main(["-m", "resnet8", "-c", os.path.join(d, "latest"), "-d", "synthetic", "--device", "cpu",
                      "--workers", "0", "DATASET.SYNTHETIC_SIZE", "48"]) == 0
    assert _top1(capsys.readouterr().out) == pytest.approx(latest, abs=0.005)  # printed with two decimals
