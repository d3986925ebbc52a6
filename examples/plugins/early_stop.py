"""EARLY_STOP: a trainer hook kept outside the package, loaded as a plugin.

    python3 tools/train_ours.py --cfg configs/smoke/teacher.yaml \\
        EXPERIMENT.PLUGINS "['examples/plugins/early_stop.py']" EXPERIMENT.HOOKS "['EARLY_STOP']" \\
        EXPERIMENT.NAME teacher_early_stop SOLVER.EPOCHS 20

Stops the run (cleanly: the epoch is committed, exit code 0, ``--resume`` continues it) when
the test top-1 has not improved for ``PATIENCE`` epochs. Its count is part of every
checkpoint, so a resumed run counts on where it stopped. See mdistiller/engine/hooks.py for
the methods a hook may override.
"""

import logging

from mdistiller.engine.hooks import HookBase, register_hook

log = logging.getLogger("mdistiller.train")


@register_hook("EARLY_STOP")
class EarlyStop(HookBase):
    PATIENCE = 3  # epochs without a new best before stopping

    def __init__(self):
        self.waited = 0

    def after_val_epoch(self, metrics):
        t = self.trainer
        self.waited = 0 if t.best_epoch == t.epoch else self.waited + 1
        if self.waited >= self.PATIENCE:
            log.info(f"EARLY_STOP: no new best for {self.waited} epochs (best {t.best_acc:.2f} at epoch "
                     f"{t.best_epoch})")
            t.request_stop()

    def state_dict(self):
        return {"waited": self.waited}

    def load_state_dict(self, state):
        self.waited = state["waited"]
