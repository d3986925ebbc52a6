"""A test plugin: the SLOW_EPOCH hook sleeps MDISTILLER_TEST_SLOW seconds after each epoch
(unset: no sleep), after the epoch is committed, so a test can kill a run between two epochs."""

import os
import time

from mdistiller.engine.hooks import HookBase, register_hook


@register_hook("SLOW_EPOCH")
class SlowEpoch(HookBase):
    priority = 99  # after the epoch's commit: metrics.jsonl has the epoch while it sleeps

    def after_val_epoch(self, metrics):
        time.sleep(float(os.environ.get("MDISTILLER_TEST_SLOW", "0")))
