"""Plugin hooks: ``@register_hook`` in an EXPERIMENT.PLUGINS file, switched on by
EXPERIMENT.HOOKS; the hook runs after the built-ins, can stop the run cleanly (exit 0,
resumable), and its state survives --resume; an unknown name is a one-line error."""

import json
import os

import pytest

from mdistiller.engine import hooks as hooks_mod
from mdistiller.runs.checkpoint import load_checkpoint
from tests.engine.helpers import metrics, run_dir, tiny_argv, train_main

PLUGIN = '''
import json
import os

from mdistiller.engine.hooks import HookBase, register_hook


@register_hook("COUNT_AND_STOP")
class CountAndStop(HookBase):
    """Counts the epochs it saw (kept across --resume) and stops the run once, after epoch 2."""

    def __init__(self):
        self.seen, self.stopped = [], False

    def before_train(self):
        names = [type(h).__name__ for h in self.trainer._order]
        assert names.index("CountAndStop") > names.index("BestEpoch")  # after the built-ins...
        assert names.index("CountAndStop") < names.index("Checkpointer")  # ...and before the commit

    def after_val_epoch(self, metrics):
        t = self.trainer
        assert metrics["epoch"] == t.epoch and metrics["best_acc"] == t.best_acc and t.lr > 0
        self.seen.append([t.epoch, metrics["test_acc"]])
        with open(os.path.join(t.run_dir, "hook_seen.json"), "w") as f:
            json.dump(self.seen, f)
        if t.epoch == 2 and not self.stopped:
            self.stopped = True
            t.request_stop()

    def state_dict(self):
        return {"seen": [list(s) for s in self.seen], "stopped": self.stopped}

    def load_state_dict(self, state):
        self.seen, self.stopped = [list(s) for s in state["seen"]], state["stopped"]
'''


@pytest.fixture
def restore_hooks():
    saved = dict(hooks_mod.HOOKS._items)
    yield
    hooks_mod.HOOKS._items.clear()
    hooks_mod.HOOKS._items.update(saved)


def test_a_plugin_hook_runs_stops_the_run_and_its_state_resumes(tmp_path, restore_hooks, caplog):
    plugin = tmp_path / "count_hook.py"
    plugin.write_text(PLUGIN)
    argv = tiny_argv(tmp_path, "hooked", "DISTILLER.TYPE", "NONE", "SOLVER.EPOCHS", "3",
                     "EXPERIMENT.PLUGINS", f"['{plugin}']", "EXPERIMENT.HOOKS", "['COUNT_AND_STOP']")
    assert train_main(argv) == 0  # the hook's stop request ends the run cleanly after epoch 2
    d = run_dir(tmp_path, "hooked")
    latest = load_checkpoint(os.path.join(d, "latest"))
    assert latest["epoch"] == 2  # committed after the hook ran
    assert latest["hooks"]["COUNT_AND_STOP"] == {"seen": json.load(open(os.path.join(d, "hook_seen.json"))),
                                                 "stopped": True}
    assert [r["epoch"] for r in metrics(tmp_path, "hooked")] == [1, 2]
    assert "stopped after epoch 2 at a hook's request" in caplog.text and "--resume" in caplog.text

    assert train_main(["--resume"] + argv) == 0  # epoch 3; the hook's state came back
    seen = json.load(open(os.path.join(d, "hook_seen.json")))
    assert [s[0] for s in seen] == [1, 2, 3]
    assert [s[1] for s in seen] == [r["test_acc"] for r in metrics(tmp_path, "hooked")]
    latest = load_checkpoint(os.path.join(d, "latest"))
    assert latest["epoch"] == 3 and latest["hooks"]["COUNT_AND_STOP"]["seen"] == seen
    assert latest["hooks"]["BestEpoch"]["best_acc"] == latest["best_acc"]


def test_an_unknown_hook_is_a_one_line_error_naming_the_known_ones(tmp_path, restore_hooks, capsys):
    @hooks_mod.register_hook("KNOWN_ONE")
    class Known(hooks_mod.HookBase):
        pass

    code = train_main(tiny_argv(tmp_path, "typo", "DISTILLER.TYPE", "NONE", "EXPERIMENT.HOOKS", "['KNOWN_ONR']"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: EXPERIMENT.HOOKS: unknown hook 'KNOWN_ONR'") and "KNOWN_ONE" in err[0]
    assert not os.path.exists(run_dir(tmp_path, "typo"))  # nothing half-created
