"""Tiny runs on synthetic data for trainer and tool tests."""

import os

import torch

from mdistiller.runs.loggers import read_metrics

TINY = [
    "DATASET.TYPE", "synthetic", "DATASET.SYNTHETIC_SIZE", "48", "DATASET.SYNTHETIC_CLASSES", "10",
    "DATASET.NUM_WORKERS", "0", "DATASET.TEST.BATCH_SIZE", "16",
    "SOLVER.BATCH_SIZE", "16", "SOLVER.EPOCHS", "1", "SOLVER.LR", "0.05", "SOLVER.LR_DECAY_STAGES", "[100]",
    "SOLVER.DEVICE", "cpu", "LOG.WANDB", "False", "LOG.PROGRESS", "False", "LOG.READ_FREQ", "2",
    "DISTILLER.TEACHER", "resnet8", "DISTILLER.STUDENT", "resnet8", "EXPERIMENT.PROJECT", "tests",
]


def make_teacher(path, name="resnet8", num_classes=10, seed=0, layout="plain"):
    """Write a teacher checkpoint: ``plain`` = {"model": sd}; ``distiller`` = an mdistiller
    distiller checkpoint (``module.student.`` / ``module.teacher.`` keys)."""
    from mdistiller.models import build_model

    torch.manual_seed(seed)
    model = build_model(name, "cifar", num_classes)
    sd = model.state_dict()
    if layout == "distiller":
        obj = {"model": {**{f"module.student.{k}": v for k, v in sd.items()},
                         **{f"module.teacher.{k}": torch.zeros_like(v) for k, v in sd.items()}},
               "epoch": 240, "best_acc": 50.0}
    else:
        obj = {"model": sd}
    torch.save(obj, path)
    return model


def tiny_argv(tmp_path, name, *extra, teacher=None):
    argv = TINY + ["LOG.PREFIX", str(tmp_path / "out"), "EXPERIMENT.NAME", name]
    if teacher is not None:
        argv += ["DISTILLER.TEACHER_CKPT", str(teacher)]
    return argv + [str(x) for x in extra]


def run_dir(tmp_path, name):
    return os.path.join(str(tmp_path / "out"), "tests", name)


def metrics(tmp_path, name):
    return read_metrics(run_dir(tmp_path, name))


def train_main(argv):
    """A run through the composition root (:func:`mdistiller.engine.run.train`): ``argv`` is
    an optional leading ``--resume`` and KEY VALUE pairs (as :func:`tiny_argv` makes)."""
    from mdistiller.engine.run import train

    resume = list(argv[:1]) == ["--resume"]
    return train(None, list(argv[1:] if resume else argv), resume=resume)


def train_straight_and_resumed(tmp_path, common, epochs, teacher, stop_after=1):
    """Train ``common`` for ``epochs`` epochs in one go (run ``straight``) and again stopped
    after ``stop_after`` epochs, then resumed to ``epochs`` (run ``resumed``); both exit 0."""
    assert train_main(tiny_argv(tmp_path, "straight", *common, "SOLVER.EPOCHS", epochs, teacher=teacher)) == 0
    assert train_main(tiny_argv(tmp_path, "resumed", *common, "SOLVER.EPOCHS", stop_after, teacher=teacher)) == 0
    assert train_main(["--resume"] + tiny_argv(tmp_path, "resumed", *common, "SOLVER.EPOCHS", epochs,
                                               teacher=teacher)) == 0


def stop_after_steps(monkeypatch, n):
    """Make the trainer request a stop (as SIGTERM does) after its ``n``-th step; returns
    the real ``train_step`` (set it back to resume normally)."""
    from mdistiller.engine import trainer as trainer_mod

    real_step = trainer_mod.Trainer.train_step
    calls = {"n": 0}

    def step(self, batch, epoch):
        out = real_step(self, batch, epoch)
        calls["n"] += 1
        if calls["n"] == n:
            self._stop = True
        return out

    monkeypatch.setattr(trainer_mod.Trainer, "train_step", step)
    return real_step
