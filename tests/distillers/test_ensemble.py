"""Several teachers: the loss sees the (weighted) mean of the teachers' logits, each
teacher runs once per step over all views, BN-folded; lists checked in one line; a run
with two teachers trains and logs each teacher's and the ensemble's top-1; the recipe
files train one epoch."""

import json
import os
import re

import pytest
import torch

from mdistiller.config.load import load_cfg
from mdistiller.distillers import build_distiller
from mdistiller.distillers.ensemble import TeacherEnsemble
from mdistiller.models import build_model
from mdistiller.utils.errors import ConfigError

from tests.engine.helpers import make_teacher, metrics, run_dir, tiny_argv, train_main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def two_teachers():
    torch.manual_seed(1)
    a = build_model("resnet8", "cifar", 10).eval()
    torch.manual_seed(2)
    b = build_model("resnet14", "cifar", 10).eval()
    return a, b


@pytest.mark.parametrize("method,weights", [("KD", None), ("SLD", None), ("KD", [1.0, 3.0])])
def test_the_loss_sees_the_mean_of_the_teachers_logits(method, weights, monkeypatch):
    a, b = two_teachers()
    opts = ["DISTILLER.TYPE", method, "DISTILLER.TEACHER", "['resnet8', 'resnet14']"]
    if weights:
        opts += ["DISTILLER.TEACHER_WEIGHTS", str(weights)]
    cfg = load_cfg(None, opts)
    from mdistiller.distillers.ensemble import build_ensemble

    teacher = build_ensemble([a, b], cfg)
    assert isinstance(teacher, TeacherEnsemble)
    d = build_distiller(cfg, build_model("resnet8", "cifar", 10), teacher).train()
    seen, calls = [], {"a": 0, "b": 0}
    real = type(d).losses

    def losses(self, student, teacher, target, epoch):
        seen.append([t.clone() for t in teacher])
        return real(self, student, teacher, target, epoch)

    monkeypatch.setattr(type(d), "losses", losses)
    x = torch.randn(6, 3, 32, 32)
    views = {"image": x} if d.num_views == 1 else {"image_weak": x, "image_strong": x.flip(3)}
    d.forward_train(target=torch.arange(6) % 10, epoch=1, **views)
    w = [0.5, 0.5] if weights is None else [0.25, 0.75]
    for t, view in zip([t for s in seen for t in s], views.values()):
        with torch.no_grad():
            expected = w[0] * a(view)[0] + w[1] * b(view)[0]
        torch.testing.assert_close(t, expected, rtol=1e-4, atol=1e-4)  # BN-folded: equal up to rounding
    # one forward of each teacher per step, over all views at once
    folded = d._teacher_cache["model"]
    for i, m in enumerate(folded.teachers):
        m.register_forward_hook(lambda *_, k="ab"[i]: calls.__setitem__(k, calls[k] + 1))
    d.forward_train(target=torch.arange(6) % 10, epoch=1, **views)
    assert calls == {"a": 1, "b": 1}
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())  # each member folded


@pytest.mark.parametrize("opts,message", [
    (["DISTILLER.TEACHER", "['resnet8', 'resnet14']", "DISTILLER.TEACHER_CKPT", "['a.pth']"],
     "TEACHER_CKPT has 1 entries for 2 teachers"),
    (["DISTILLER.TEACHER", "resnet8", "DISTILLER.TEACHER_CKPT", "['a.pth', 'b.pth']"],
     "lists 2 checkpoints for one teacher"),
    (["DISTILLER.TEACHER", "['resnet8', 'resnet14']", "DISTILLER.TEACHER_WEIGHTS", "[1.0]"],
     "TEACHER_WEIGHTS must be 2 numbers"),
    (["DISTILLER.TEACHER", "['resnet8', 'resnet14']", "DISTILLER.TEACHER_WEIGHTS", "[1.0, -1.0]"],
     "TEACHER_WEIGHTS must be 2 numbers"),
    (["DISTILLER.TEACHER", "[]"], "must name a teacher"),
    (["DISTILLER.TEACHER", "[1, 2]"], "expects a list of str"),
    (["DISTILLER.TYPE", "FITNET", "DISTILLER.TEACHER", "['resnet8', 'resnet14']"],
     "reads one teacher's features and cannot distil from 2 teachers"),
])
def test_bad_teacher_lists_are_one_line_errors(opts, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")) as e:
        load_cfg(None, ["DISTILLER.TYPE", "KD"] + opts if opts[0] != "DISTILLER.TYPE" else opts)
    assert "\n" not in str(e.value)


def test_two_teachers_train_and_each_top1_is_logged(tmp_path, caplog):
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    make_teacher(a, seed=1)
    make_teacher(b, name="resnet14", seed=2)
    argv = tiny_argv(tmp_path, "two", "DISTILLER.TYPE", "KD", "DISTILLER.TEACHER", "['resnet8', 'resnet14']",
                     "DISTILLER.TEACHER_CKPT", f"['{a}', '{b}']", "SOLVER.EPOCHS", 2)
    with caplog.at_level("INFO", logger="mdistiller"):
        assert train_main(argv) == 0
    log = open(os.path.join(run_dir(tmp_path, "two"), "worklog.txt")).read()
    for line in ("teacher resnet8 test top-1", "teacher resnet14 test top-1",
                 "teacher ensemble resnet8+resnet14 test top-1"):
        assert log.count(line) == 1, line
    assert [r["epoch"] for r in metrics(tmp_path, "two")] == [1, 2]
    state = torch.load(os.path.join(run_dir(tmp_path, "two"), "latest"), weights_only=False)["model"]
    assert any(k.startswith("teacher.teachers.1.") for k in state)
    # defaults: one teacher stays the plain module (checkpoint keys unchanged)
    assert train_main(tiny_argv(tmp_path, "one", "DISTILLER.TYPE", "KD", teacher=a)) == 0
    state = torch.load(os.path.join(run_dir(tmp_path, "one"), "latest"), weights_only=False)["model"]
    assert "teacher.fc.weight" in state and not any(".teachers." in k for k in state)


def test_a_replaced_member_of_the_ensemble_is_refused_on_resume(tmp_path, capsys):
    """teacher.json records every teacher's file; --resume refuses a member replaced at the
    same path, in one line naming it, and --new-teacher accepts it (config_history.jsonl)."""
    from mdistiller.cli.train import main as train_cli

    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    make_teacher(a, seed=1)
    make_teacher(b, name="resnet14", seed=2)
    argv = tiny_argv(tmp_path, "two", "DISTILLER.TYPE", "KD", "DISTILLER.TEACHER", "['resnet8', 'resnet14']",
                     "DISTILLER.TEACHER_CKPT", f"['{a}', '{b}']", "SOLVER.EPOCHS", 1)
    assert train_main(argv) == 0
    folder = run_dir(tmp_path, "two")
    recorded = json.load(open(os.path.join(folder, "teacher.json")))["teachers"]
    assert [r["path"] for r in recorded] == [str(a), str(b)]
    make_teacher(b, name="resnet14", seed=3)  # another teacher, same path
    resume = ["--resume"] + argv + ["SOLVER.EPOCHS", "2"]
    capsys.readouterr()
    assert train_cli(resume) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(r"teacher checkpoint '.*b.pth' is not the file this run started with .*"
                                       r"--new-teacher", err[0]), err
    assert [r["epoch"] for r in metrics(tmp_path, "two")] == [1]
    assert train_cli(["--new-teacher"] + resume) == 0
    history = [json.loads(line) for line in open(os.path.join(folder, "config_history.jsonl"))]
    now = json.load(open(os.path.join(folder, "teacher.json")))["teachers"]
    assert history[-1]["changed"]["teacher_sha256"] == [[r["sha256"] for r in recorded], [r["sha256"] for r in now]]
    assert now[0] == recorded[0] and now[1]["sha256"] != recorded[1]["sha256"]


def test_the_recipe_files_train_one_epoch(tmp_path):
    from tests.dataset.test_folders import write_folder

    from mdistiller.engine.run import train

    # the DeiT-style recipe: a timm ViT from a timm CNN teacher on an image folder (tiny sizes)
    root = tmp_path / "folder"
    write_folder(root, classes=("a", "b"), per_class=6, size=(36, 36))  # train/ and val/
    torch.manual_seed(0)
    teacher = tmp_path / "cnn.pth"
    torch.save({"model": build_model("timm:resnet10t", "imagenet", 2, 32).state_dict()}, teacher)
    tiny = ["DATASET.ROOT", str(root), "DATASET.IMAGE_SIZE", "32", "DATASET.NUM_WORKERS", "0",
            "DATASET.TEST.BATCH_SIZE", "4", "SOLVER.BATCH_SIZE", "4", "SOLVER.EPOCHS", "2",
            "SOLVER.WARMUP_EPOCHS", "1", "SOLVER.DEVICE", "cpu", "LOG.PREFIX", str(tmp_path / "out"),
            "LOG.PROGRESS", "False", "LOG.WANDB", "False", "DISTILLER.TEACHER_CKPT", str(teacher),
            "DISTILLER.STUDENT", "timm:test_vit", "EXPERIMENT.NAME", "deit"]
    assert train(os.path.join(REPO, "configs/recipes/deit_vit_from_cnn.yaml"), tiny) == 0
    recs = [r for r in _read(tmp_path / "out" / "imagefolder" / "deit")]
    assert len(recs) == 2 and "ema_acc" in recs[0]
    assert recs[0]["lr"] == pytest.approx(1e-6 + (0.000125 - 1e-6) * 2 / 3)  # warmup: last of 3 steps
    # the two-teacher KD file (tiny sizes: synthetic data, two small teachers)
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    make_teacher(a, seed=1)
    make_teacher(b, name="resnet14", seed=2)
    tiny = tiny_argv(tmp_path, "two", "DISTILLER.TEACHER", "['resnet8', 'resnet14']", "DISTILLER.STUDENT", "resnet8",
                     "DISTILLER.TEACHER_CKPT", f"['{a}', '{b}']")
    assert train(os.path.join(REPO, "configs/recipes/kd_two_teachers.yaml"), tiny) == 0
    assert len(metrics(tmp_path, "two")) == 1


def _read(folder):
    from mdistiller.runs.loggers import read_metrics

    return read_metrics(str(folder))
