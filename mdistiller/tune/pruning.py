"""The ``TUNE_PRUNING`` engine hook: every epoch's holdout top-1 (``val_acc``) goes to the
running Optuna trial, and a trial its pruner gives up on stops cleanly.

A tuning trial's config switches it on (``EXPERIMENT.PLUGINS ['mdistiller.tune.pruning']``,
``EXPERIMENT.HOOKS ['TUNE_PRUNING']``); the worker running the trial sets :data:`ACTIVE`. Run
outside a worker (e.g. ``train_ours.py --resume`` on a trial's folder) the hook does nothing.
A pruned run ends through ``trainer.request_stop()``: its epoch is committed, its folder kept,
and the worker records the pruning (``trial.json`` in the folder, the trial's state PRUNED).
"""

from ..engine.hooks import HookBase, register_hook

NAME = "TUNE_PRUNING"
MODULE = __name__

#: the running trial's :class:`Reporter` (set by the worker, one trial at a time per process)
ACTIVE = None


class Reporter:
    """Reports values to an Optuna trial and asks its pruner."""

    def __init__(self, trial):
        self.trial = trial
        self.pruned_after = None  # the epoch after which the pruner stopped the run

    def report(self, value, epoch):
        """Report ``value`` at ``epoch``; True when the run should stop (pruned)."""
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            self.pruned_after = epoch
            return True
        return False


@register_hook(NAME)
class TunePruning(HookBase):
    def after_val_epoch(self, metrics):
        reporter = ACTIVE
        value = metrics.get("val_acc")
        if reporter is None or value is None or not self.trainer.ctx.is_main:
            return
        if reporter.report(value, self.trainer.epoch):
            self.trainer.request_stop()
