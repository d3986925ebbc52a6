"""``tools/demo.py`` in-process, on synthetic data and one epoch per run: the wiring of the
demo (teacher first, then the students distilled from its checkpoint, then the table)."""

import os
import re
import warnings

from mdistiller.cli.demo import main as demo_main
from mdistiller.config.load import load_cfg
from tests.engine.helpers import TINY


def test_demo_trains_teacher_then_students_and_prints_the_table(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MDISTILLER_CACHE", str(tmp_path / "cache"))  # the latency cache
    out = tmp_path / "demo"
    # the demo's configs train on 1% of Fashion-MNIST; of the 48 synthetic images that is
    # less than a batch, which the trainer refuses: use them all
    assert demo_main(["--output", str(out), "--seed", "3"] + TINY + ["DATASET.SUBSET", "1.0"]) == 0
    text = capsys.readouterr().out
    rows = re.findall(r"^(teacher|vanilla|KD|SLD)\s+resnet8\s+1\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+[\d.]+"
                      r"\s+0\.078\s+25\.0\s+([\d.]+)$", text, re.M)  # resnet8: 78,042 parameters, 25.0 MFLOPs
    assert [r[0] for r in rows] == ["teacher", "vanilla", "KD", "SLD"]
    assert all(r[1] == r[2] == r[3] for r in rows)  # one epoch: selected = last = best
    assert all(float(r[4]) > 0 for r in rows) and "latency: batch 1, PyTorch, on" in text
    # the configs hold out part of the training set: no figure or teacher is selected on the test set
    assert "selected: selected on the holdout split of the training set (teacher, vanilla, KD, SLD)" in text
    assert "seed 3" in text
    root = out / "tests"
    teacher_ckpt = str(root / "teacher" / "student_best")
    assert os.path.isfile(teacher_ckpt)
    for name, method in (("vanilla", "NONE"), ("kd", "KD"), ("sld", "SLD")):
        with warnings.catch_warnings():  # SLD.GAMMA >= the one epoch run here
            warnings.simplefilter("ignore")
            cfg = load_cfg(str(root / name / "config.yaml"))
        assert cfg.DISTILLER.TYPE == method and cfg.EXPERIMENT.SEED == 3
        assert cfg.DISTILLER.TEACHER_CKPT == teacher_ckpt
