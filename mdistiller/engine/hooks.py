"""What the trainer does around its step: hooks, each owning one concern and its state.

The :class:`~mdistiller.engine.trainer.Trainer` runs the step and calls the hooks (the
detectron2 ``HookBase`` / mmengine pattern, with mmengine's method names). A hook sees the
trainer as ``self.trainer`` (``epoch``, 1-based, the epoch running or just finished; ``cfg``;
``run_dir``; ``lr``; ``epoch_state``, the running epoch's :class:`EpochState`;
``request_stop()``) and may override any of these, called on every rank in the order of the
hooks' ``priority`` (lower first; equal priorities in the order they were added):

``before_train()``
    once, before the first epoch of this process.
``before_train_epoch()``
    before the epoch's first step (``trainer.epoch_state`` is set).
``before_train_iter()``
    before each optimisation step (``trainer.epoch_state.step`` steps of the epoch are done;
    the learning rate is set here, :class:`LRSchedule`); never read device values here.
``after_train_iter()``
    after each optimisation step; ``trainer.epoch_state.read`` is True every
    ``LOG.READ_FREQ`` steps and at the epoch's last step: the only steps where a hook may
    read device values on the host (anything else would synchronise every step).
``after_train_epoch()``
    after the epoch's last step and the reduction of its statistics; the validation runs
    here (:class:`Evaluation`), then the best epoch is updated (:class:`BestEpoch`).
``after_val_epoch(metrics)``
    ``metrics`` is the epoch's record (the row of ``metrics.jsonl``: ``epoch``, ``lr``,
    ``train_acc``, ``test_acc``, ``best_acc``...). The epoch is committed (:class:`Checkpointer`,
    priority :data:`COMMIT`) only after every other hook ran this.
``after_train()``
    when the last epoch ended normally (not after a stop).
``side_files(metrics)``
    ``{file name: object}`` the epoch's commit writes with ``latest`` (rank 0, all or none;
    e.g. :class:`EMA`'s ``student_ema``).
``state_dict()`` / ``load_state_dict(state)``
    what the hook keeps across ``--resume``: saved in every checkpoint under
    ``hooks[<name>]`` and given back before ``before_train`` of a resumed run.
``close()``
    always, last (also after an error or a stop): release what ``before_train`` took.

A hook of a plugin (an ``EXPERIMENT.PLUGINS`` file) is registered by name and switched on
by ``EXPERIMENT.HOOKS``; it is built with no arguments and runs after the built-in hooks::

    from mdistiller.engine.hooks import HookBase, register_hook

    @register_hook("STOP_AT_90")
    class StopAt90(HookBase):
        def after_val_epoch(self, metrics):
            if metrics["test_acc"] >= 90:
                self.trainer.request_stop()  # ends after this epoch is committed; exit 0

The built-in hooks: :class:`LRSchedule` (the learning rate of each epoch),
:class:`Evaluation` (validation), :class:`BestEpoch` (best accuracy and the history), which
every trainer has (:func:`loop_hooks`), and :func:`default_hooks`: :class:`NanWatch` (a
non-finite loss stops the run with one line), :class:`ProgressBar` (rank 0),
:class:`Checkpointer` (the atomic epoch commit, rank 0), :class:`MetricsLog` (TensorBoard/wandb
scalars, worklog.txt and the epoch line, rank 0) and :class:`SignalStop` (SIGINT/SIGTERM
save an ``interrupted`` checkpoint after the current step).
"""

import copy
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from ..runs.checkpoint import save_checkpoint
from ..runs.folder import EpochCommit
from ..solver.lr_schedule import lr_at_step
from ..utils.errors import ConfigError, NonFiniteLossError
from ..utils.registry import Registry
from ..utils.runtime import rng_state
from ..runs.selection import describe, improves, report, selection_key

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


#: priorities (lower runs first): the built-ins' places around a plugin hook's default
FIRST, PROGRESS, EVALUATION, BEST, NORMAL, COMMIT, LOG, LAST = 0, 20, 40, 45, 50, 90, 92, 95


class HookBase:
    """A trainer hook; see the module docstring for when each method runs. ``priority``
    orders the hooks (lower first); ``name`` keys its state in the checkpoint (default: the
    class name; a registered hook's is its registered name)."""

    trainer = None
    priority = NORMAL
    name = None

    def before_train(self):
        pass

    def before_train_epoch(self):
        pass

    def before_train_iter(self):
        pass

    def after_train_iter(self):
        pass

    def after_train_epoch(self):
        pass

    def after_val_epoch(self, metrics):
        pass

    def after_train(self):
        pass

    def side_files(self, metrics):
        """``{file name: object}`` saved with this epoch's commit (rank 0); default none."""
        return {}

    def state_dict(self):
        """What this hook keeps across ``--resume`` (picklable; default: nothing)."""
        return {}

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned."""

    def close(self):
        pass

    @property
    def state_key(self):
        return self.name or type(self).__name__


#: hooks of plugins, switched on by name with ``EXPERIMENT.HOOKS``
HOOKS = Registry("hook")


def register_hook(name=None, cls=None):
    """Register the hook class ``cls`` (a :class:`HookBase` built with no arguments) under
    ``name`` (default: its class name) for ``EXPERIMENT.HOOKS``; without ``cls``, return a
    class decorator."""

    def deco(c):
        if not (isinstance(c, type) and issubclass(c, HookBase)):
            raise TypeError(f"register_hook takes a HookBase subclass, not {c!r}")
        c.name = name or c.__name__
        HOOKS.register(c.name, c)
        return c

    return deco if cls is None else deco(cls)


def check_hook_names(names):
    """ConfigError (one line, with the known names) unless every name is a registered hook."""
    for n in names:
        if n not in HOOKS:
            known = ", ".join(sorted(HOOKS, key=str.lower)) or "none (register one with @register_hook in an " \
                                                                 "EXPERIMENT.PLUGINS file)"
            raise ConfigError(f"EXPERIMENT.HOOKS: unknown hook '{n}'; known hooks: {known}")
    if len(set(names)) != len(names):
        raise ConfigError(f"EXPERIMENT.HOOKS names a hook twice ({list(names)}); list each once")


def plugin_hooks(cfg):
    """The hooks ``EXPERIMENT.HOOKS`` switches on, built with no arguments, in its order."""
    check_hook_names(list(cfg.EXPERIMENT.HOOKS))
    return [HOOKS[n]() for n in cfg.EXPERIMENT.HOOKS]


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


class LRSchedule(HookBase):
    """Sets the learning rate of every parameter group before each step
    (:func:`~mdistiller.solver.lr_schedule.lr_at_step`: ``SOLVER.SCHEDULER`` with
    ``SOLVER.WARMUP_EPOCHS``; the default ``step`` schedule gives each step its epoch's
    :func:`~mdistiller.solver.lr_schedule.lr_at`). A Python float per step: no host
    synchronisation. The step number follows from the epoch and the step within it, so a
    run resumed mid-epoch continues the schedule exactly."""

    priority = FIRST

    def before_train_epoch(self):
        self.before_train_iter()

    def before_train_iter(self):
        t, ep = self.trainer, self.trainer.epoch_state
        lr = lr_at_step(t.cfg, (ep.epoch - 1) * ep.steps + ep.step, max(ep.steps, 1))
        for g in t.optimizer.param_groups:
            g["lr"] = lr


class EMA(HookBase):
    """``SOLVER.EMA`` (decay ``d`` > 0): an exponential moving average of the student, on its
    device: ``ema_0 = w_0``, then ``ema_t = d * ema_(t-1) + (1 - d) * w_t`` after each optimizer
    step for the parameters and floating-point buffers (integer buffers, e.g. BN's
    ``num_batches_tracked``, are copied). Validated after every epoch (``ema_acc``; with a
    holdout, ``ema_val_acc``), kept in every checkpoint (exact ``--resume``) and saved as
    ``student_ema`` with each commit (``tools/eval.py --checkpoint ema``,
    ``tools/export.py --checkpoint ema``)."""

    priority = EVALUATION + 1  # after the student's validation, before the best epoch

    def __init__(self):
        self.model = None

    def before_train(self):
        if self.model is None:
            self.model = self._copy()
        self._pairs()

    def _copy(self):
        model = copy.deepcopy(self.trainer.distiller.student).eval().requires_grad_(False)
        model._compiled_call_impl = None  # SOLVER.COMPILE: the copy must not call the student's graph
        return model

    def _pairs(self):
        student = self.trainer.distiller.student
        src = dict(student.named_parameters())
        src.update(dict(student.named_buffers()))
        dst = dict(self.model.named_parameters())
        dst.update(dict(self.model.named_buffers()))
        names = [n for n in dst if n in src]
        floats = [n for n in names if dst[n].is_floating_point()]
        self.avg = ([dst[n] for n in floats], [src[n] for n in floats])
        ints = [n for n in names if not dst[n].is_floating_point()]
        self.copy = ([dst[n] for n in ints], [src[n] for n in ints])

    @torch.no_grad()
    def after_train_iter(self):
        d = self.trainer.cfg.SOLVER.EMA
        ema, w = self.avg
        torch._foreach_mul_(ema, d)
        torch._foreach_add_(ema, w, alpha=1.0 - d)  # under no_grad: the parameters themselves
        if self.copy[0]:
            torch._foreach_copy_(*self.copy)

    def after_train_epoch(self):
        t = self.trainer
        t.ctx.broadcast_buffers(self.model)  # every rank validates rank 0's average
        t.metrics["ema_acc"] = t.evaluate(self.forward)["top1"]
        if t.holdout_loader is not None:
            t.metrics["ema_val_acc"] = t.evaluate(self.forward, loader=t.holdout_loader)["top1"]

    def forward(self, x):
        return self.model(x)[0]

    def side_files(self, metrics):
        """``student_ema`` every epoch; with SOLVER.EMA_SELECT, ``student_best`` holds the
        average too (the selected model)."""
        t = self.trainer
        ema = {"model": self.model.state_dict(), "epoch": t.epoch, "acc": metrics.get("ema_acc"),
               "ema_decay": t.cfg.SOLVER.EMA, "selected_on": t.selected_on}
        if "ema_val_acc" in metrics:
            ema["val_acc"] = metrics["ema_val_acc"]
        files = {"student_ema": ema}
        if t.cfg.SOLVER.EMA_SELECT and t.best_epoch == t.epoch:
            files["student_best"] = dict(ema, weights="ema")
        return files

    def state_dict(self):
        return {"model": self.model.state_dict()} if self.model is not None else {}

    def load_state_dict(self, state):
        if "model" in state:
            if self.model is None:
                self.model = self._copy()
            self.model.load_state_dict(state["model"])


class Evaluation(HookBase):
    """Validates the student after each epoch (``trainer.evaluate()``, summed over ranks)
    and puts ``test_acc``, ``test_acc_top5`` and ``test_loss`` in the epoch's metrics; with a
    holdout (``DATASET.HOLDOUT``), also its top-1 and loss as ``val_acc`` and ``val_loss``."""

    priority = EVALUATION

    def after_train_epoch(self):
        t = self.trainer
        val = t.evaluate()
        t.metrics.update({"test_acc": val["top1"], "test_acc_top5": val["top5"], "test_loss": val["loss"]})
        if t.holdout_loader is not None:  # holdout top-1 and loss, beside the test's
            held = t.evaluate(loader=t.holdout_loader)
            t.metrics.update(val_acc=held["top1"], val_loss=held["loss"])


class BestEpoch(HookBase):
    """The run's record of finished epochs, on every rank: the selected epoch so far
    (:mod:`mdistiller.runs.selection`: the highest ``val_acc`` with a holdout, ties to the
    earliest; else the highest ``test_acc``, ties to the latest), its test top-1 as
    ``best_acc``, its selection score ``best_score``, and the history of metrics kept in
    every checkpoint. Puts ``best_acc`` and ``selected_epoch`` in the epoch's metrics."""

    priority = BEST

    def __init__(self):
        self.best_acc, self.best_score, self.best_epoch, self.history = -1.0, -1.0, 0, []

    def after_train_epoch(self):
        t, m = self.trainer, self.trainer.metrics
        ema = t.cfg.SOLVER.EMA_SELECT  # select (and report) the EMA of the student
        score = m[selection_key(t.holdout_loader is not None, ema=ema)]
        if improves(score, self.best_score, t.selected_on):
            self.best_score, self.best_acc, self.best_epoch = score, m["ema_acc" if ema else "test_acc"], t.epoch
        m["best_acc"], m["selected_epoch"] = self.best_acc, self.best_epoch
        self.history = [r for r in self.history if r["epoch"] < t.epoch] + [m]

    def state_dict(self):
        return {"best_acc": self.best_acc, "best_score": self.best_score, "best_epoch": self.best_epoch,
                "history": list(self.history)}

    def load_state_dict(self, state):
        self.best_acc = state.get("best_acc", -1.0)
        self.best_score = state.get("best_score", self.best_acc)
        self.best_epoch, self.history = state.get("best_epoch", 0), list(state.get("history", []))


class NanWatch(HookBase):
    """A non-finite loss skipped its update on the device; at the next read the run stops
    with one line naming the step and the loss terms."""

    priority = FIRST

    def after_train_iter(self):
        ep = self.trainer.epoch_state
        if ep.read:
            check_finite(self.trainer, ep)

    def after_train_epoch(self):
        check_finite(self.trainer, self.trainer.epoch_state)


class Checkpointer(HookBase):
    """Commit the epoch (rank 0), after every other hook ran ``after_val_epoch``: ``latest``
    with the metrics history and every hook's state, and mdistiller's side files
    student_latest, epoch_N/student_N every SAVE_CHECKPOINT_FREQ epochs, best/student_best
    when the epoch is selected (:mod:`~mdistiller.runs.selection`; the student files say on
    which split, ``selected_on``), all or none (:class:`~mdistiller.runs.folder.EpochCommit`)."""

    priority = COMMIT

    def after_val_epoch(self, metrics):
        t, epoch = self.trainer, self.trainer.epoch
        if not t.ctx.is_main or t.run_dir is None:
            return
        state = t.state(epoch)
        student = {"model": t.distiller.student.state_dict(), "epoch": epoch, "acc": metrics["test_acc"],
                   "selected_on": t.selected_on}
        if "val_acc" in metrics:
            student["val_acc"] = metrics["val_acc"]
        side = {"student_latest": student}
        if epoch % t.cfg.LOG.SAVE_CHECKPOINT_FREQ == 0:
            side.update({f"epoch_{epoch}": state, f"student_{epoch}": student})
        if t.best_epoch == epoch:
            side.update({"best": state, "student_best": student})
        for h in t._order:
            side.update(h.side_files(metrics))
        EpochCommit(t.run_dir, save_checkpoint)(epoch, state, side)


#: a hook's old name (before the hooks took mmengine's method names)
EpochCheckpoint = Checkpointer


class ProgressBar(HookBase):
    """Progress of each epoch on rank 0 (``LOG.PROGRESS``): a tqdm bar with the running
    statistics on a terminal; when its stream is not a terminal (a log file), one line every
    :attr:`LINE_PERCENT` percent of the epoch instead of carriage-return updates."""

    priority = PROGRESS
    LINE_PERCENT = 10

    def __init__(self, stream=None):
        self.bar = None
        self.stream = stream  # None: tqdm's own (stderr)
        self.lines = False
        self.done = self.next_line = 0

    def before_train_epoch(self):
        t, ep = self.trainer, self.trainer.epoch_state
        if not (t.cfg.LOG.PROGRESS and t.ctx.is_main and tqdm is not None):
            return
        total = len(t.train_loader.dataset)
        stream = self.stream if self.stream is not None else sys.stderr
        self.lines = not (hasattr(stream, "isatty") and stream.isatty())
        self.total, self.done = total, min(ep.start_step * t.cfg.SOLVER.BATCH_SIZE, total)
        if self.lines:
            self.next_line = (100 * self.done // total // self.LINE_PERCENT + 1) * self.LINE_PERCENT
            self.t0 = time.time()
            return
        self.bar = tqdm(total=total, initial=self.done, desc=f"epoch {ep.epoch}/{t.cfg.SOLVER.EPOCHS}", unit="img",
                        dynamic_ncols=True, leave=False, file=self.stream)

    def after_train_iter(self):
        t, ep = self.trainer, self.trainer.epoch_state
        if self.lines:
            self.done = min(self.done + ep.batch_size * t.ctx.world_size, self.total)
            percent = 100 * self.done / self.total
            if ep.read and percent >= self.next_line and ep.step < ep.steps:  # the epoch line ends the epoch
                values = ep.values(t.lr)
                stats = " ".join(f"{k.split('/')[-1]} {v:.3g}" for k, v in values.items() if k != "train/lr")
                rate = self.done / max(time.time() - self.t0, 1e-9)
                print(f"epoch {ep.epoch}/{t.cfg.SOLVER.EPOCHS} {percent:3.0f}% ({self.done}/{self.total} img, "
                      f"{rate:.0f} img/s) {stats}", file=self.stream or sys.stderr, flush=True)
                self.next_line = (int(percent) // self.LINE_PERCENT + 1) * self.LINE_PERCENT
            return
        if self.bar is None:
            return
        self.bar.update(ep.batch_size * t.ctx.world_size)
        if ep.read:
            values = ep.values(t.lr)
            self.bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in values.items() if k != "train/lr"})

    def after_train_epoch(self):
        self.close()

    def close(self):
        self.lines = False
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class MetricsLog(HookBase):
    """Rank 0's records: step scalars at each read, the epoch's worklog.txt block and
    scalars, its one-line summary (``logging``), and the selected epoch's accuracy at the end."""

    priority = LOG

    def __init__(self, run_logger=None):
        self.run_logger = run_logger

    def after_train_iter(self):
        ep = self.trainer.epoch_state
        if ep.read and self.run_logger is not None:
            self.run_logger.scalars(ep.values(self.trainer.lr), self.trainer.global_step)

    def after_val_epoch(self, metrics):
        t, epoch = self.trainer, self.trainer.epoch
        if self.run_logger is not None:
            self.run_logger.epoch(epoch, metrics["lr"], metrics, t.global_step)
        if t.ctx.is_main and t.run_dir:
            held = f"val_acc {metrics['val_acc']:.2f} " if "val_acc" in metrics else ""
            ema = f"ema_acc {metrics['ema_acc']:.2f} " if "ema_acc" in metrics else ""
            logger.info(f"epoch {epoch}: train_acc {metrics['train_acc']:.2f} train_loss {metrics['train_loss']:.4f} "
                        f"{held}test_acc {metrics['test_acc']:.2f} test_acc_top5 {metrics['test_acc_top5']:.2f} {ema}"
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

    priority = LAST

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

    def after_train_iter(self):
        t, ep = self.trainer, self.trainer.epoch_state
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


def loop_hooks(cfg):
    """The hooks every trainer has: the learning rate, the validation, the EMA of the
    student when ``SOLVER.EMA`` > 0, the best epoch and history (:attr:`Trainer.loop_hooks`)."""
    ema = [EMA()] if cfg.SOLVER.EMA > 0 else []
    return [LRSchedule(), Evaluation()] + ema + [BestEpoch()]


def default_hooks(run_logger=None):
    """The standard hooks around the loop (the NaN check before anything reads or saves)."""
    return [NanWatch(), Checkpointer(), ProgressBar(), MetricsLog(run_logger), SignalStop(run_logger)]
