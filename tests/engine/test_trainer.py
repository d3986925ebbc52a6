"""The trainer on synthetic data: every distiller, one and two views, exact resume,
atomic checkpoints, teacher formats, non-finite losses, logging."""

import glob
import json
import os

import pytest
import torch

from mdistiller.distillers import DISTILLERS
from mdistiller.runs import checkpoint as ckpt_mod
from mdistiller.runs.checkpoint import load_checkpoint
from mdistiller.utils.errors import CheckpointError

from tests.engine.helpers import (make_teacher, metrics, run_dir, stop_after_steps, tiny_argv, train_main,
                                  train_straight_and_resumed)

LOGIT = ["NONE", "KD", "DKD", "MLKD", "SLD"]


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "teacher.pth"
    make_teacher(path)
    return path


@pytest.mark.parametrize("method,views", [(m, None) for m in LOGIT] + [("SLD", 1)])
def test_every_logit_distiller_trains(tmp_path, teacher_ckpt, method, views):
    extra = ["DISTILLER.TYPE", method, "SLD.GAMMA", "0", "SOLVER.EPOCHS", "2"]
    if views:
        extra += ["SLD.VIEWS", str(views)]
    assert train_main(tiny_argv(tmp_path, method, *extra, teacher=teacher_ckpt)) == 0
    recs = metrics(tmp_path, method)
    assert [r["epoch"] for r in recs] == [1, 2]
    names = set(recs[0]["losses"])
    assert "loss_ce" in names and (method == "NONE" or "loss_kd" in names)
    d = run_dir(tmp_path, method)
    for f in ["latest", "best", "student_latest", "student_best", "config.yaml", "provenance.json", "worklog.txt"]:
        assert os.path.isfile(os.path.join(d, f)), f
    state = load_checkpoint(os.path.join(d, "latest"))
    assert state["epoch"] == 2 and not any(k.startswith("module.") for k in state["model"])
    if method != "NONE":  # the teacher is frozen: its weights are the checkpoint's
        teacher = torch.load(teacher_ckpt)["model"]
        for k, v in teacher.items():
            assert torch.equal(state["model"][f"teacher.{k}"], v), k
    prov = json.load(open(os.path.join(d, "provenance.json")))
    assert prov["seed"] == 0 and "torch" in prov["versions"]
    assert "epoch: 2" in open(os.path.join(d, "worklog.txt")).read()


def test_views_follow_the_distiller(teacher_ckpt):
    from mdistiller.config.load import load_cfg

    assert DISTILLERS["SLD"].views_for(load_cfg(None, [])) == 2
    assert DISTILLERS["SLD"].views_for(load_cfg(None, ["SLD.VIEWS", "1"])) == 1
    assert DISTILLERS["MLKD"].views_for(load_cfg(None, [])) == 2
    assert DISTILLERS["KD"].views_for(load_cfg(None, [])) == 1


def test_epochs_are_numbered_from_one_and_sld_gate_starts_after_gamma(tmp_path, teacher_ckpt, monkeypatch):
    """The trainer passes epochs 1..EPOCHS, and SLD's student swap term first changes the
    loss in epoch GAMMA + 1."""
    epochs = []
    cls = DISTILLERS["SLD"]
    real_fwd = cls.forward_train
    captured = {}

    def fwd(self, **kw):
        epochs.append(kw["epoch"])
        captured.setdefault("batch", {k: v for k, v in kw.items() if k != "epoch"})
        captured["distiller"] = self
        return real_fwd(self, **kw)

    monkeypatch.setattr(cls, "forward_train", fwd)
    argv = tiny_argv(tmp_path, "gate", "DISTILLER.TYPE", "SLD", "SLD.GAMMA", "1", "SOLVER.EPOCHS", "2",
                     teacher=teacher_ckpt)
    assert train_main(argv) == 0
    steps = len(epochs) - 1  # the first call is the start-up check (no update)
    assert epochs[1:] == [1] * (steps // 2) + [2] * (steps // 2)
    d, batch = captured["distiller"], captured["batch"]
    d.eval()  # fixed BN statistics, so only the epoch changes between calls
    with torch.no_grad():
        kd = [real_fwd(d, epoch=e, **batch)[1]["loss_kd"] for e in (0, 1, 2, 3)]
    assert torch.equal(kd[0], kd[1]) and torch.equal(kd[2], kd[3]) and not torch.equal(kd[1], kd[2])


def _student_weights(d, name="student_latest"):
    return load_checkpoint(os.path.join(d, name))["model"]


def test_resume_is_exact(tmp_path, teacher_ckpt):
    common = ["DISTILLER.TYPE", "SLD", "SLD.GAMMA", "1", "EXPERIMENT.DETERMINISTIC", "True",
              "SOLVER.LR_DECAY_STAGES", "[2]"]
    train_straight_and_resumed(tmp_path, common, 3, teacher_ckpt)
    a, b = _student_weights(run_dir(tmp_path, "straight")), _student_weights(run_dir(tmp_path, "resumed"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["epoch"] for r in metrics(tmp_path, "resumed")] == [1, 2, 3]
    assert [r["test_acc"] for r in metrics(tmp_path, "resumed")] == [r["test_acc"] for r in metrics(tmp_path, "straight")]


def test_mid_epoch_interrupt_and_resume_is_exact(tmp_path, teacher_ckpt, monkeypatch):
    """A stop request mid-epoch saves 'interrupted'; --resume continues without replaying
    or skipping samples and ends with the weights of an uninterrupted run."""
    from mdistiller.engine import trainer as trainer_mod

    common = ["DISTILLER.TYPE", "KD", "EXPERIMENT.DETERMINISTIC", "True", "SOLVER.EPOCHS", "2"]
    assert train_main(tiny_argv(tmp_path, "straight", *common, teacher=teacher_ckpt)) == 0
    real_step = stop_after_steps(monkeypatch, 5)  # epoch 2, step 2 (3 steps per epoch)
    code = train_main(tiny_argv(tmp_path, "cut", *common, teacher=teacher_ckpt))
    assert code == 130
    d = run_dir(tmp_path, "cut")
    inter = load_checkpoint(os.path.join(d, "interrupted"))
    assert inter["interrupted"]["epoch"] == 2 and inter["interrupted"]["step"] == 2
    assert load_checkpoint(os.path.join(d, "latest"))["epoch"] == 1  # epoch-end checkpoint keeps its meaning
    monkeypatch.setattr(trainer_mod.Trainer, "train_step", real_step)
    assert train_main(["--resume"] + tiny_argv(tmp_path, "cut", *common, teacher=teacher_ckpt)) == 0
    assert not os.path.exists(os.path.join(d, "interrupted"))
    a, b = _student_weights(run_dir(tmp_path, "straight")), _student_weights(d)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert metrics(tmp_path, "cut")[-1]["train_loss"] == pytest.approx(metrics(tmp_path, "straight")[-1]["train_loss"])


@pytest.mark.parametrize("layout", ["plain", "distiller"])
def test_teacher_checkpoint_layouts(tmp_path, layout):
    path = tmp_path / f"{layout}.pth"
    model = make_teacher(path, seed=3, layout=layout)
    argv = tiny_argv(tmp_path, layout, "DISTILLER.TYPE", "KD", teacher=path)
    assert train_main(argv) == 0
    state = load_checkpoint(os.path.join(run_dir(tmp_path, layout), "latest"))["model"]
    for k, v in model.state_dict().items():
        assert torch.equal(state[f"teacher.{k}"], v)


def test_teacher_accuracy_is_logged_once(tmp_path, teacher_ckpt, capsys):
    assert train_main(tiny_argv(tmp_path, "tacc", "DISTILLER.TYPE", "KD", teacher=teacher_ckpt)) == 0
    out = capsys.readouterr().out
    assert out.count("teacher resnet8 test top-1") == 1
    assert "teacher resnet8 test top-1" in open(os.path.join(run_dir(tmp_path, "tacc"), "worklog.txt")).read()


def test_checkpoint_write_failure_keeps_previous(tmp_path, monkeypatch):
    target = tmp_path / "latest"
    ckpt_mod.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, str(target))

    def failing_save(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt_mod.torch, "save", failing_save)
    with pytest.raises(CheckpointError, match="no space left on device.*intact"):
        ckpt_mod.save_checkpoint({"epoch": 2}, str(target))
    monkeypatch.undo()
    assert load_checkpoint(str(target))["epoch"] == 1
    assert os.listdir(tmp_path) == ["latest"]  # no temporary file left behind


def test_nonfinite_loss_stops_and_keeps_last_checkpoint(tmp_path, teacher_ckpt, monkeypatch, capsys):
    from mdistiller.engine import trainer as trainer_mod

    argv = tiny_argv(tmp_path, "nan", "DISTILLER.TYPE", "KD", "SOLVER.EPOCHS", "3", teacher=teacher_ckpt)
    real_step = trainer_mod.Trainer.train_step
    calls = {"n": 0}

    def poisoned(self, batch, epoch):
        calls["n"] += 1
        if calls["n"] == 5:  # epoch 2, step 2
            self.distiller.student.fc.weight.data.view(-1)[0] = float("nan")
            before = {k: v.clone() for k, v in self.distiller.student.state_dict().items()}
            out = real_step(self, batch, epoch)
            after = self.distiller.student.state_dict()
            # the update of the non-finite step was skipped on the device
            assert all(torch.equal(before[k], after[k]) or before[k].is_floating_point() and
                       torch.isnan(before[k]).any() for k in before if "running" not in k and "num_batches" not in k)
            return out
        return real_step(self, batch, epoch)

    monkeypatch.setattr(trainer_mod.Trainer, "train_step", poisoned)
    assert train_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: non-finite loss at epoch 2, step 2") and "loss_kd=nan" in err
    assert len(err.strip().splitlines()) == 1
    latest = load_checkpoint(os.path.join(run_dir(tmp_path, "nan"), "latest"))
    assert latest["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in latest["model"].values() if v.is_floating_point())


def test_wandb_offline(tmp_path, teacher_ckpt, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    argv = tiny_argv(tmp_path, "wb", "DISTILLER.TYPE", "KD", "LOG.WANDB", "True", teacher=teacher_ckpt)
    assert train_main(argv) == 0
    runs = glob.glob(os.path.join(run_dir(tmp_path, "wb"), "wandb", "offline-run-*"))
    assert runs, "no offline wandb run written"
    assert glob.glob(os.path.join(runs[0], "*.wandb"))


def test_tensorboard_scalars(tmp_path, teacher_ckpt):
    assert train_main(tiny_argv(tmp_path, "tb", "DISTILLER.TYPE", "SLD", teacher=teacher_ckpt)) == 0
    events = glob.glob(os.path.join(run_dir(tmp_path, "tb"), "train.events", "events.*"))
    assert events and os.path.getsize(events[0]) > 0
    from tensorboardX.proto import event_pb2  # parse the records: each loss term is logged
    import struct

    tags = set()
    with open(events[0], "rb") as f:
        while True:
            header = f.read(8)
            if len(header) < 8:
                break
            (length,) = struct.unpack("Q", header)
            f.read(4)
            data = f.read(length)
            f.read(4)
            ev = event_pb2.Event()
            ev.ParseFromString(data)
            tags.update(v.tag for v in ev.summary.value)
    assert {"train/loss_ce", "train/loss_kd", "train/acc", "train/lr", "epoch/test_acc", "teacher/top1"} <= tags
