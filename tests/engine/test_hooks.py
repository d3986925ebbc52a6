"""The trainer's hooks (mdistiller.engine.hooks): the order of the calls, a trainer
without hooks writes nothing, the NaN watch's one line, the signal hook's handlers."""

import os
import signal

import pytest
import torch

from mdistiller.engine.build import build_run
from mdistiller.config.load import load_cfg
from mdistiller.utils.dist import DistContext
from mdistiller.engine.hooks import EpochState, HookBase, NanWatch, SignalStop, check_finite, default_hooks
from mdistiller.engine.trainer import Trainer
from mdistiller.utils.errors import NonFiniteLossError
from tests.engine.helpers import TINY


class Recorder(HookBase):
    def __init__(self):
        self.calls = []

    def before_train(self):
        self.calls.append("before_train")

    def before_train_epoch(self):
        self.calls.append(f"before_epoch {self.trainer.epoch_state.epoch}")

    def after_train_iter(self):
        ep = self.trainer.epoch_state
        self.calls.append(f"step {ep.epoch}.{ep.step}" + (" read" if ep.read else ""))

    def after_train_epoch(self):
        self.calls.append(f"after_steps {self.trainer.epoch}")

    def after_val_epoch(self, record):
        assert record["best_acc"] == self.trainer.best_acc  # the trainer's record is updated first
        self.calls.append(f"after_epoch {record['epoch']}")

    def after_train(self):
        self.calls.append("after_train")

    def close(self):
        self.calls.append("close")


def tiny_trainer(tmp_path, hooks, *extra):
    opts = TINY + ["DISTILLER.TYPE", "NONE", "SOLVER.EPOCHS", "2", "LOG.PREFIX", str(tmp_path)] + list(extra)
    cfg = load_cfg(None, opts)
    ctx = DistContext(device=torch.device("cpu"))
    _, distiller, loaders, transforms, generator = build_run(cfg, ctx)
    return Trainer(cfg, distiller, loaders, transforms, ctx, run_dir=str(tmp_path), generator=generator, hooks=hooks)


def test_hooks_are_called_in_order_and_a_trainer_without_hooks_writes_nothing(tmp_path):
    rec = Recorder()
    trainer = tiny_trainer(tmp_path, [rec])  # 48 images, batch 16: 3 steps, read every 2 and at the last
    assert trainer.hooks == [rec] and rec.trainer is trainer
    best = trainer.train()
    per_epoch = lambda e: [f"before_epoch {e}", f"step {e}.1", f"step {e}.2 read", f"step {e}.3 read",  # noqa: E731
                           f"after_steps {e}", f"after_epoch {e}"]
    assert rec.calls == ["before_train"] + per_epoch(1) + per_epoch(2) + ["after_train", "close"]
    assert best == trainer.best_acc and [r["epoch"] for r in trainer.history] == [1, 2]
    assert os.listdir(tmp_path) == []  # checkpoints and logs are hooks: none here


def test_default_hooks_commit_epochs_and_close_on_error(tmp_path):
    trainer = tiny_trainer(tmp_path, None)
    assert [type(h).__name__ for h in trainer.hooks] == [type(h).__name__ for h in default_hooks()]
    rec = Recorder()

    class Boom(HookBase):
        def after_val_epoch(self, record):
            if record["epoch"] == 2:  # epoch 1 is committed: the commit waits for every hook
                raise RuntimeError("boom")

    trainer.register_hooks([rec, Boom()])
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.train()
    assert rec.calls[-1] == "close" and "after_train" not in rec.calls
    assert signal.getsignal(signal.SIGTERM) is before  # SignalStop restored the handlers
    assert {"latest", "student_latest", "best", "student_best", "metrics.jsonl"} <= set(os.listdir(tmp_path))


def test_signal_hook_sets_the_stop_request_and_restores_handlers(tmp_path):
    trainer = tiny_trainer(tmp_path, [SignalStop()])
    hook = trainer.hooks[0]
    before = signal.getsignal(signal.SIGINT)
    hook.before_train()
    signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
    assert trainer._stop
    hook.close()
    assert signal.getsignal(signal.SIGINT) is before


def test_nan_watch_names_the_step_and_terms(tmp_path):
    trainer = tiny_trainer(tmp_path, [NanWatch()])
    zero = torch.zeros((), dtype=torch.float64)
    ep = EpochState(epoch=3, start_step=0, steps=5, seen=zero, correct=zero, loss_sum=zero,
                    bad_step=torch.tensor(-1), bad_terms=torch.tensor([float("nan"), 1.0]),
                    names=["loss_ce", "loss_kd"])
    check_finite(trainer, ep)  # no bad step: nothing
    ep.bad_step = torch.tensor(4)
    ep.read = False
    trainer.epoch_state = ep
    trainer.hooks[0].after_train_iter()  # reads only at read steps
    ep.read = True
    with pytest.raises(NonFiniteLossError, match=r"epoch 3, step 4 \(loss_ce=nan, loss_kd=1\).*no checkpoint"):
        trainer.hooks[0].after_train_iter()


def test_progress_to_a_file_is_lines_not_carriage_returns(tmp_path):
    import io

    from mdistiller.engine.hooks import ProgressBar

    out = io.StringIO()  # not a terminal, as a log file
    trainer = tiny_trainer(tmp_path, [ProgressBar(stream=out)], "LOG.PROGRESS", "True", "SOLVER.EPOCHS", "1")
    trainer.train()
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines and all(line.startswith("epoch 1/1 ") and "%" in line and "img/s" in line for line in lines)
    assert len(lines) <= 100 // ProgressBar.LINE_PERCENT  # a line every few percent at most


def test_an_empty_loader_is_evaluated_as_empty_not_as_the_test_set(tmp_path):
    """A rank whose holdout shard holds no batch contributes nothing; it never falls back to
    the validation (test) loader, which a DataLoader's len() of 0 made falsy."""
    from torch.utils.data import DataLoader

    trainer = tiny_trainer(tmp_path, [])
    empty = DataLoader(trainer.val_loader.dataset, batch_size=4, sampler=[])
    assert len(empty) == 0 and not empty
    nothing, test = trainer.evaluate(loader=empty), trainer.evaluate()
    assert nothing["loss"] == nothing["top1"] == 0 and test["loss"] > 0 and test["count"] > 1
