"""What the trainer does around its step: small hooks, each owning one concern.

The :class:`~mdistiller.engine.trainer.Trainer` runs the step and keeps the run's state
(optimizer, best accuracy, history); everything else is a hook (the detectron2
``HookBase`` / mmengine pattern). A hook sees the trainer as ``self.trainer`` and may
override any of these, called on every rank in the order the hooks are listed:

``before_train()``
    once, before the first epoch of this process.
``before_epoch(ep)``
    ``ep`` is the :class:`EpochState` (epoch, first step, device accumulators).
``after_step(ep)``
    after each optimisation step; ``ep.read`` is True every ``LOG.READ_FREQ`` steps and at
    the epoch's last step (the only steps where a hook may read device values on the host).
``after_steps(ep)``
    after the epoch's last step, before the statistics are reduced and the model validated.
``after_epoch(epoch, record)``
    after validation and the trainer's best/history update; ``record`` is the epoch's row of
    ``metrics.jsonl``.
``after_train()``
    when the last epoch ended normally.
``close()``
    always, last (also after an error or a stop): release what ``before_train`` took.

The standard hooks (:func:`default_hooks`): :class:`NanWatch` (a non-finite loss stops
the run with one line), :class:`EpochCheckpoint` (the atomic epoch commit, rank 0),
:class:`ProgressBar` (tqdm, rank 0), :class:`MetricsLog` (TensorBoard/wandb scalars,
worklog.txt and the epoch line, rank 0) and :class:`SignalStop` (SIGINT/SIGTERM save an
``interrupted`` checkpoint after the current step).
"""

import logging
import os
import signal
from dataclasses import dataclass, field
from typing import Optional

import torch

from ..utils.errors import NonFiniteLossError
from .checkpoint import save_checkpoint
from .selection import describe, report
from .utils import rng_state

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover - tqdm is a requirement
    tqdm = None

logger = logging.getLogger("mdistiller.train")


class HardStop(KeyboardInterrupt):
    """A second SIGINT/SIGTERM: stop at once without saving (the last commit is whole)."""


class StopRequested(Exception):
    """SIGINT/SIGTERM arrived; the run saved an ``interrupted`` checkpoint."""

    def __init__(self, path):
        super().__init__(path)
        self.path = path


@dataclass
class EpochState:
    """One epoch's position and device-side statistics (the trainer fills them without a
    host synchronisation; hooks read them on the host only when ``read`` is True)."""

    epoch: int
    start_step: int
    steps: int  # the epoch's last step number
    seen: torch.Tensor
    correct: torch.Tensor
    loss_sum: torch.Tensor
    term_sums: Optional[torch.Tensor] = None
    bad_step: Optional[torch.Tensor] = None
    bad_terms: Optional[torch.Tensor] = None
    names: Optional[list] = None
    step: int = 0
    batch_size: int = 0  # samples of the last step on this rank
    read: bool = False
    _values: Optional[dict] = field(default=None, repr=False)

    def values(self, lr):
        """The running training statistics (host floats, read once per read step)."""
        if self._values is None:
            s = max(self.seen.item(), 1.0)
            self._values = {f"train/{k}": v / s for k, v in zip(self.names, self.term_sums.tolist())}
            self._values.update({"train/acc": 100 * self.correct.item() / s, "train/lr": lr})
        return self._values

    def stats(self):
        """What an ``interrupted`` checkpoint keeps to finish this epoch exactly."""
        return dict(seen=self.seen, correct=self.correct, loss_sum=self.loss_sum, term_sums=self.term_sums)


class HookBase:
    """A trainer hook; see the module docstring for when each method runs."""

    trainer = None

    def before_train(self):
        pass

    def before_epoch(self, ep):
        pass

    def after_step(self, ep):
        pass

    def after_steps(self, ep):
        pass

    def after_epoch(self, epoch, record):
        pass

    def after_train(self):
        pass

    def close(self):
        pass


def check_finite(trainer, ep):
    """Raise :class:`NonFiniteLossError` (one line) if a step of ``ep`` had a non-finite loss."""
    if ep.names is None or ep.bad_step.item() < 0:
        return
    terms = ", ".join(f"{k}={v:.4g}" for k, v in zip(ep.names, ep.bad_terms.tolist()))
    latest = os.path.join(trainer.run_dir, "latest") if trainer.run_dir else None
    if latest and os.path.isfile(latest):
        saved = f"'{latest}' (epoch {ep.epoch - 1}) is intact"
    else:
        saved = "no checkpoint was saved yet, --resume starts the run again"
    raise NonFiniteLossError(
        f"non-finite loss at epoch {ep.epoch}, step {ep.bad_step.item()} ({terms}); the update was skipped and "
        f"{saved}; lower SOLVER.LR (e.g. SOLVER.LR {trainer.cfg.SOLVER.LR / 10:g}) or set SOLVER.AMP none, "
        f"or check the data, then run the same command with --resume and the new value"
    )


class NanWatch(HookBase):
    """A non-finite loss skipped its update on the device; at the next read the run stops
    with one line naming the step and the loss terms."""

    def after_step(self, ep):
        if ep.read:
            check_finite(self.trainer, ep)

    def after_steps(self, ep):
        check_finite(self.trainer, ep)


class EpochCheckpoint(HookBase):
    """Commit the epoch (rank 0): ``latest`` with the metrics history, and mdistiller's
    side files student_latest, epoch_N/student_N every SAVE_CHECKPOINT_FREQ epochs,
    best/student_best when the epoch is selected (:mod:`~mdistiller.engine.selection`; the
    student files say on which split, ``selected_on``), all or none
    (:class:`~mdistiller.engine.runfolder.EpochCommit`)."""

    def after_epoch(self, epoch, record):
        from .runfolder import EpochCommit

        t = self.trainer
        if not t.ctx.is_main or t.run_dir is None:
            return
        state = t.state(epoch)
        student = {"model": t.distiller.student.state_dict(), "epoch": epoch, "acc": record["test_acc"],
                   "selected_on": t.selected_on}
        if "val_acc" in record:
            student["val_acc"] = record["val_acc"]
        side = {"student_latest": student}
        if epoch % t.cfg.LOG.SAVE_CHECKPOINT_FREQ == 0:
            side.update({f"epoch_{epoch}": state, f"student_{epoch}": student})
        if t.best_epoch == epoch:
            side.update({"best": state, "student_best": student})
        EpochCommit(t.run_dir, save_checkpoint)(epoch, state, side)


class ProgressBar(HookBase):
    """A tqdm bar per epoch on rank 0 (``LOG.PROGRESS``), with the running statistics."""

    def __init__(self):
        self.bar = None

    def before_epoch(self, ep):
        t = self.trainer
        if not (t.cfg.LOG.PROGRESS and t.ctx.is_main and tqdm is not None):
            return
        total = len(t.train_loader.dataset)
        self.bar = tqdm(total=total, initial=min(ep.start_step * t.cfg.SOLVER.BATCH_SIZE, total),
                        desc=f"epoch {ep.epoch}/{t.cfg.SOLVER.EPOCHS}", unit="img", dynamic_ncols=True, leave=False)

    def after_step(self, ep):
        if self.bar is None:
            return
        self.bar.update(ep.batch_size * self.trainer.ctx.world_size)
        if ep.read:
            values = ep.values(self.trainer.lr)
            self.bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in values.items() if k != "train/lr"})

    def after_steps(self, ep):
        self.close()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class MetricsLog(HookBase):
    """Rank 0's records: step scalars at each read, the epoch's worklog.txt block and
    scalars, its one-line summary (``logging``), and the best accuracy at the end."""

    def __init__(self, run_logger=None):
        self.run_logger = run_logger

    def after_step(self, ep):
        if ep.read and self.run_logger is not None:
            self.run_logger.scalars(ep.values(self.trainer.lr), self.trainer.global_step)

    def after_epoch(self, epoch, record):
        t = self.trainer
        if self.run_logger is not None:
            self.run_logger.epoch(epoch, record["lr"], record, t.global_step)
        if t.ctx.is_main and t.run_dir:
            held = f"val_acc {record['val_acc']:.2f} " if "val_acc" in record else ""
            logger.info(f"epoch {epoch}: train_acc {record['train_acc']:.2f} train_loss {record['train_loss']:.4f} "
                        f"{held}test_acc {record['test_acc']:.2f} test_acc_top5 {record['test_acc_top5']:.2f} "
                        f"best {t.best_acc:.2f} (epoch {t.best_epoch}, {describe(t.selected_on)})")

    def after_train(self):
        if self.run_logger is not None:
            t = self.trainer
            self.run_logger.text(f"best_acc\t{t.best_acc:.2f}")
            self.run_logger.text(report(t.best_acc, t.best_epoch, t.selected_on))


class SignalStop(HookBase):
    """SIGINT/SIGTERM ask the loop to stop after the current step (all ranks agree) and
    save every rank's position in one ``interrupted`` file (rank 0 writes); a second
    signal stops at once (:class:`HardStop`). The request is ``trainer._stop``."""

    def __init__(self, run_logger=None):
        self.run_logger = run_logger
        self.old = {}

    def before_train(self):
        def handler(signum, frame):
            if self.trainer._stop:  # second signal: stop now
                raise HardStop
            self.trainer._stop = True
            if self.run_logger is not None:
                self.run_logger.text(f"received signal {signum}: stopping after this step")

        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: no handlers
            pass

    def after_step(self, ep):
        t = self.trainer
        if t.ctx.agree(t._stop):
            check_finite(t, ep)
            path = os.path.join(t.run_dir, "interrupted") if t.run_dir else None
            ranks = t.ctx.gather_objects({"rng": rng_state(t.generator),
                                          "stats": {k: v.cpu() for k, v in ep.stats().items() if v is not None}})
            if t.ctx.is_main and path:
                save_checkpoint(t.state(ep.epoch - 1, interrupted={"epoch": ep.epoch, "step": ep.step,
                                                                    "ranks": ranks}), path)
            t.ctx.barrier()
            raise StopRequested(path)

    def close(self):
        for sig, h in self.old.items():
            signal.signal(sig, h)
        self.old = {}


def default_hooks(run_logger=None):
    """The standard hooks, in their order (the NaN check before anything reads or saves)."""
    return [NanWatch(), EpochCheckpoint(), ProgressBar(), MetricsLog(run_logger), SignalStop(run_logger)]
