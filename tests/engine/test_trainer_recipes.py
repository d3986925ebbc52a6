"""DISTILLER.LOGIT_STAND, SWAPKD and DISTILLER.VIEWS train through the trainer and resume
exactly (tiny synthetic data)."""

import os

import pytest
import torch

from mdistiller.config.load import get_key, load_cfg
from mdistiller.runs.checkpoint import load_checkpoint
from mdistiller.runs.loggers import read_metrics

from tests.engine.helpers import make_teacher, run_dir, train_straight_and_resumed


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "teacher.pth"
    make_teacher(path)
    return path


@pytest.mark.parametrize("opts", [
    ["DISTILLER.TYPE", "KD", "DISTILLER.LOGIT_STAND", "True"],
    ["DISTILLER.TYPE", "SWAPKD", "SWAPKD.GAMMA", "1"],  # the student swap term starts in epoch 2, after the resume
    ["DISTILLER.TYPE", "DKD", "DISTILLER.VIEWS", "2"],
], ids=["kd_logit_stand", "swapkd", "dkd_two_views"])
def test_recipe_trains_and_resumes_exactly(tmp_path, teacher_ckpt, opts):
    common = opts + ["EXPERIMENT.DETERMINISTIC", "True", "DATASET.SYNTHETIC_SIZE", "32"]
    train_straight_and_resumed(tmp_path, common, 2, teacher_ckpt)
    a, b = (load_checkpoint(os.path.join(run_dir(tmp_path, n), "student_latest"))["model"] for n in ("straight", "resumed"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    recs = read_metrics(run_dir(tmp_path, "resumed"))
    assert [r["epoch"] for r in recs] == [1, 2] and {"loss_ce", "loss_kd"} <= set(recs[0]["losses"])
    saved = load_cfg(os.path.join(run_dir(tmp_path, "resumed"), "config.yaml"))
    assert all(str(get_key(saved, k)) == v for k, v in zip(opts[2::2], opts[3::2]))
