"""SOLVER.SCHEDULER: every schedule's per-step learning rate against its closed form (the
issue's formulas, written out again here), through the function and through a run."""

import math

import pytest

from mdistiller.config.load import load_cfg
from mdistiller.solver.lr_schedule import SCHEDULERS, lr_at, lr_at_step, register_scheduler
from mdistiller.utils.errors import ConfigError

from tests.engine.helpers import metrics, tiny_argv, train_main

LR, WARMUP_LR, MIN_LR = 0.1, 0.01, 0.001


def closed_form(name, s, W, S, per_epoch, stages=(2,), rate=0.1):
    if s < W:
        return WARMUP_LR + (LR - WARMUP_LR) * s / W
    if name == "cosine":
        return MIN_LR + (LR - MIN_LR) * (1 + math.cos(math.pi * (s - W) / (S - W))) / 2
    if name == "linear":
        return LR + (MIN_LR - LR) * (s - W) / (S - W)
    epoch = s // per_epoch + 1
    return LR * rate ** sum(epoch > e for e in stages)


def cfg_for(name, warmup, epochs=4):
    return load_cfg(None, ["SOLVER.SCHEDULER", name, "SOLVER.LR", LR, "SOLVER.WARMUP_LR", WARMUP_LR,
                           "SOLVER.MIN_LR", MIN_LR, "SOLVER.WARMUP_EPOCHS", warmup, "SOLVER.EPOCHS", epochs,
                           "SOLVER.LR_DECAY_STAGES", "[2]"])


@pytest.mark.parametrize("name", ["step", "multistep", "cosine", "linear"])
@pytest.mark.parametrize("warmup", [0.0, 1.5])
def test_every_step_matches_the_closed_form(name, warmup):
    per_epoch, epochs = 5, 4
    cfg = cfg_for(name, warmup, epochs)
    W, S = int(math.floor(warmup * per_epoch + 0.5)), epochs * per_epoch
    for s in range(S):
        assert lr_at_step(cfg, s, per_epoch) == pytest.approx(closed_form(name, s, W, S, per_epoch), rel=1e-12), s
    if name in ("cosine", "linear"):
        assert lr_at_step(cfg, W, per_epoch) == pytest.approx(LR)


def test_step_without_warmup_is_the_reference_schedule():
    cfg = load_cfg(None, ["SOLVER.LR_DECAY_STAGES", "[150, 180, 210]"])
    for s in range(0, 240 * 3, 7):
        assert lr_at_step(cfg, s, 3) == lr_at(cfg, s // 3 + 1)  # the same float, bit for bit


def test_a_plugin_registers_a_schedule():
    register_scheduler("constant_test", lambda cfg, s, W, S, n: cfg.SOLVER.LR / 2)
    try:
        cfg = load_cfg(None, ["SOLVER.SCHEDULER", "constant_test", "SOLVER.WARMUP_EPOCHS", 1.0])
        assert lr_at_step(cfg, 0, 4) == 0.0 and lr_at_step(cfg, 4, 4) == cfg.SOLVER.LR / 2
    finally:
        SCHEDULERS._items.pop("constant_test")


@pytest.mark.parametrize("opts,message", [
    (["SOLVER.SCHEDULER", "cosin"], "SOLVER.SCHEDULER 'cosin' is not a schedule"),
    (["SOLVER.WARMUP_EPOCHS", "-1"], "SOLVER.WARMUP_EPOCHS must be >= 0 and below"),
    (["SOLVER.WARMUP_EPOCHS", "5", "SOLVER.EPOCHS", "5"], "SOLVER.WARMUP_EPOCHS must be >= 0 and below"),
    (["SOLVER.WARMUP_LR", "1.0", "SOLVER.LR", "0.1"], "SOLVER.WARMUP_LR must be in"),
    (["SOLVER.MIN_LR", "-0.1"], "SOLVER.MIN_LR must be in"),
])
def test_bad_schedule_keys_are_one_line_errors(opts, message):
    with pytest.raises(ConfigError, match=message):
        load_cfg(None, opts)


@pytest.mark.parametrize("name", ["step", "cosine", "linear"])
def test_a_run_sets_every_steps_lr_and_records_the_last(tmp_path, monkeypatch, name):
    """Through the trainer: the LRSchedule hook gives each step its closed-form LR (3 steps
    per epoch, 3 epochs, 1 warmup epoch), and metrics.jsonl's lr is the epoch's last step's."""
    from mdistiller.engine import trainer as trainer_mod

    seen = []
    real = trainer_mod.Trainer.train_step

    def step(self, batch, epoch):
        seen.append(self.optimizer.param_groups[0]["lr"])
        assert all(g["lr"] == seen[-1] for g in self.optimizer.param_groups)
        return real(self, batch, epoch)

    monkeypatch.setattr(trainer_mod.Trainer, "train_step", step)
    argv = tiny_argv(tmp_path, name, "SOLVER.SCHEDULER", name, "SOLVER.LR", LR, "SOLVER.WARMUP_LR", WARMUP_LR,
                     "SOLVER.MIN_LR", MIN_LR, "SOLVER.WARMUP_EPOCHS", 1.0, "SOLVER.EPOCHS", 3,
                     "SOLVER.LR_DECAY_STAGES", "[2]", "DISTILLER.TYPE", "NONE")
    assert train_main(argv) == 0
    per_epoch = 3  # 48 images in batches of 16
    assert seen == pytest.approx([closed_form(name, s, 3, 9, per_epoch) for s in range(9)], rel=1e-12)
    assert [r["lr"] for r in metrics(tmp_path, name)] == [seen[2], seen[5], seen[8]]
