"""SOLVER.EMA, CLIP_GRAD and LABEL_SMOOTHING: the EMA hook against a hand-computed average,
clipping against torch's, label smoothing in the CE term; a run with AdamW + cosine + warmup +
EMA + clip + label smoothing killed mid-epoch and resumed ends bit for bit as the straight
run; student_ema is written and read by tools/eval.py --checkpoint ema."""

import os
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from mdistiller.config.load import load_cfg
from mdistiller.engine.hooks import EMA
from mdistiller.runs.checkpoint import load_checkpoint

from tests.engine.helpers import make_teacher, metrics, run_dir, stop_after_steps, tiny_argv, train_main


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "teacher.pth"
    make_teacher(path)
    return path


def test_ema_equals_a_hand_computed_average_after_three_steps():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    d = 0.9
    trainer = SimpleNamespace(distiller=SimpleNamespace(student=student),
                              cfg=load_cfg(None, ["SOLVER.EMA", str(d)]))
    hook = EMA()
    hook.trainer = trainer
    hook.before_train()
    w0 = {k: v.clone() for k, v in student.state_dict().items()}
    expected = {k: v.clone() for k, v in w0.items() if v.is_floating_point()}
    for t in range(3):
        with torch.no_grad():  # an "optimizer step" and a BN update
            for p in student.parameters():
                p.add_(torch.randn_like(p))
            student.train()(torch.randn(8, 3))
        hook.after_train_iter()
        for k, v in student.state_dict().items():
            if k in expected:
                expected[k] = d * expected[k] + (1 - d) * v
    ema = hook.model.state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(ema[k], v, rtol=1e-6, atol=1e-7)
    assert ema["1.num_batches_tracked"] == student[1].num_batches_tracked == 3  # integer buffers copied
    assert not any(p.requires_grad for p in hook.model.parameters())
    # the average lives in its own tensors: the student's are untouched by it
    assert not torch.equal(ema["0.weight"], student[0].weight)


def test_clip_grad_bounds_the_global_norm(tmp_path, teacher_ckpt, monkeypatch):
    """SOLVER.CLIP_GRAD: after the trainer's clip, the gradients' global norm is at most the
    value (a tiny value binds on every step)."""
    from mdistiller.engine import trainer as trainer_mod

    norms = []
    real = trainer_mod.Trainer.clip_grad

    def clip(self):
        real(self)
        norms.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in self.clip_params
                                                           if p.grad is not None])).item())

    monkeypatch.setattr(trainer_mod.Trainer, "clip_grad", clip)
    argv = tiny_argv(tmp_path, "clip", "DISTILLER.TYPE", "KD", "SOLVER.CLIP_GRAD", "0.01", teacher=teacher_ckpt)
    assert train_main(argv) == 0
    assert len(norms) == 3 and all(n <= 0.01 * (1 + 1e-5) for n in norms) and max(norms) > 0.009


@pytest.mark.parametrize("method", ["NONE", "KD", "SLD", "FITNET"])
def test_label_smoothing_reaches_every_methods_ce_term(method):
    from mdistiller.distillers import build_distiller
    from mdistiller.models import build_model

    torch.manual_seed(0)
    for ls in (0.0, 0.3):
        cfg = load_cfg(None, ["DISTILLER.TYPE", method, "SOLVER.LABEL_SMOOTHING", str(ls)])
        student, teacher = build_model("resnet8", "cifar", 10), build_model("resnet8", "cifar", 10)
        d = build_distiller(cfg, student, teacher if method != "NONE" else None)
        assert d.label_smoothing == ls
        z, y = torch.randn(4, 10), torch.tensor([1, 2, 3, 4])
        assert torch.equal(d.ce(z, y), nn.functional.cross_entropy(z, y, label_smoothing=ls))


RECIPE = ["DISTILLER.TYPE", "KD", "EXPERIMENT.DETERMINISTIC", "True", "SOLVER.EPOCHS", "2",
          "SOLVER.TYPE", "AdamW", "SOLVER.LR", "0.001", "SOLVER.WEIGHT_DECAY", "0.05",
          "SOLVER.WEIGHT_DECAY_NORM_BIAS", "False", "SOLVER.SCHEDULER", "cosine", "SOLVER.WARMUP_EPOCHS", "0.5",
          "SOLVER.WARMUP_LR", "0.0001", "SOLVER.MIN_LR", "0.00001", "SOLVER.EMA", "0.9", "SOLVER.CLIP_GRAD", "1.0",
          "SOLVER.LABEL_SMOOTHING", "0.1"]


def test_recipe_killed_mid_epoch_and_resumed_is_bit_for_bit_the_straight_run(tmp_path, teacher_ckpt, monkeypatch,
                                                                              capsys):
    from mdistiller.cli import eval as eval_cli
    from mdistiller.engine import trainer as trainer_mod

    assert train_main(tiny_argv(tmp_path, "straight", *RECIPE, teacher=teacher_ckpt)) == 0
    real_step = stop_after_steps(monkeypatch, 5)  # epoch 2, step 2 of 3
    assert train_main(tiny_argv(tmp_path, "cut", *RECIPE, teacher=teacher_ckpt)) == 130
    d = run_dir(tmp_path, "cut")
    assert load_checkpoint(os.path.join(d, "interrupted"))["interrupted"]["step"] == 2
    monkeypatch.setattr(trainer_mod.Trainer, "train_step", real_step)
    assert train_main(["--resume"] + tiny_argv(tmp_path, "cut", *RECIPE, teacher=teacher_ckpt)) == 0
    s = run_dir(tmp_path, "straight")
    for name in ("student_latest", "student_ema"):
        a, b = load_checkpoint(os.path.join(s, name))["model"], load_checkpoint(os.path.join(d, name))["model"]
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    opt_a, opt_b = (load_checkpoint(os.path.join(x, "latest"))["optimizer"]["state"] for x in (s, d))
    for k in opt_a:
        for n in opt_a[k]:
            assert torch.equal(opt_a[k][n], opt_b[k][n]), (k, n)
    ma, mb = metrics(tmp_path, "straight"), metrics(tmp_path, "cut")
    for key in ("lr", "ema_acc", "test_acc", "train_loss"):
        assert [r[key] for r in ma] == [r[key] for r in mb], key
    # the EMA differs from the raw student, and eval --checkpoint ema reads student_ema
    ema, raw = load_checkpoint(os.path.join(s, "student_ema")), load_checkpoint(os.path.join(s, "student_latest"))
    assert ema["epoch"] == 2 and ema["ema_decay"] == 0.9
    assert not torch.equal(ema["model"]["fc.weight"], raw["model"]["fc.weight"])
    capsys.readouterr()
    assert eval_cli.main(["-c", s, "--checkpoint", "ema", "--device", "cpu", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "student_ema" in out and "the EMA of the student" in out and f"top-1 {ma[-1]['ema_acc']:.2f}" in out


def test_ema_select_picks_the_epoch_on_the_emas_holdout_accuracy(tmp_path, teacher_ckpt):
    argv = tiny_argv(tmp_path, "sel", "DISTILLER.TYPE", "KD", "SOLVER.EMA", "0.5", "SOLVER.EMA_SELECT", "True",
                     "DATASET.HOLDOUT", "0.25", "SOLVER.EPOCHS", "2", "SOLVER.BATCH_SIZE", "12", teacher=teacher_ckpt)
    assert train_main(argv) == 0
    recs = metrics(tmp_path, "sel")
    assert all("ema_val_acc" in r and "ema_acc" in r for r in recs)
    best = max(recs, key=lambda r: (r["ema_val_acc"], -r["epoch"]))  # ties: the earliest epoch
    assert recs[-1]["selected_epoch"] == best["epoch"] and recs[-1]["best_acc"] == best["ema_acc"]
    sb = load_checkpoint(os.path.join(run_dir(tmp_path, "sel"), "student_best"))
    assert sb["weights"] == "ema" and sb["epoch"] == best["epoch"]
    from mdistiller.cli.summarize import load_run

    assert load_run(run_dir(tmp_path, "sel")).stat("selected_top1") == best["ema_acc"]  # summarize agrees


def test_eval_checkpoint_ema_of_a_run_without_ema_is_one_line(tmp_path, teacher_ckpt, capsys):
    from mdistiller.cli import eval as eval_cli

    assert train_main(tiny_argv(tmp_path, "plain", "DISTILLER.TYPE", "NONE")) == 0
    assert not os.path.exists(os.path.join(run_dir(tmp_path, "plain"), "student_ema"))  # defaults: no EMA file
    capsys.readouterr()
    assert eval_cli.main(["-c", run_dir(tmp_path, "plain"), "--checkpoint", "ema", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "SOLVER.EMA" in err and "\n" not in err


def test_a_checkpoint_without_the_new_keys_resumes(tmp_path, teacher_ckpt):
    """A run saved before these keys existed (its config lacks them) resumes with their
    defaults; a new value for one of them is still refused."""
    from mdistiller.runs.checkpoint import save_checkpoint

    argv = tiny_argv(tmp_path, "old", "DISTILLER.TYPE", "KD", teacher=teacher_ckpt)
    assert train_main(argv) == 0
    latest = os.path.join(run_dir(tmp_path, "old"), "latest")
    state = load_checkpoint(latest)
    for key in ("BETAS", "EPS", "SCHEDULER", "WARMUP_EPOCHS", "WARMUP_LR", "MIN_LR", "LABEL_SMOOTHING",
                "WEIGHT_DECAY_NORM_BIAS", "CLIP_GRAD", "EMA", "EMA_SELECT"):
        del state["config"]["SOLVER"][key]
    del state["config"]["DISTILLER"]["TEACHER_WEIGHTS"]
    save_checkpoint(state, latest)
    assert train_main(["--resume"] + argv + ["SOLVER.EMA", "0.9", "SOLVER.EPOCHS", "2"]) == 2
    assert train_main(["--resume"] + argv + ["SOLVER.EPOCHS", "2"]) == 0
    assert [r["epoch"] for r in metrics(tmp_path, "old")] == [1, 2]
