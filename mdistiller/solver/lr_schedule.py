"""The learning-rate schedule (set before every step by the trainer's ``LRSchedule`` hook).

``SOLVER.SCHEDULER`` names a schedule of a registry: ``step`` (the reference's per-epoch
step schedule, :func:`lr_at`; ``multistep`` is the same), ``cosine`` and ``linear`` (per
step, from ``SOLVER.LR`` to ``SOLVER.MIN_LR``). ``SOLVER.WARMUP_EPOCHS`` puts a per-step
linear warmup from ``SOLVER.WARMUP_LR`` in front of any of them. With ``W`` warmup steps,
``S`` total steps and ``s`` the 0-based step of the run:

* warmup (``s < W``): ``WARMUP_LR + (LR - WARMUP_LR) * s / W``
* cosine: ``MIN_LR + (LR - MIN_LR) * (1 + cos(pi * (s - W) / (S - W))) / 2``
* linear: ``LR + (MIN_LR - LR) * (s - W) / (S - W)``
* step: ``LR * LR_DECAY_RATE ** (number of LR_DECAY_STAGES below the step's epoch)``

A plugin adds one with :func:`register_scheduler`: ``fn(cfg, s, W, S, steps_per_epoch)``
returns the learning rate (a Python float: setting it costs no host synchronisation) of
step ``s >= W``.
"""

import math

from ..utils.errors import ConfigError
from ..utils.registry import Registry

#: SOLVER.SCHEDULER -> fn(cfg, s, W, S, steps_per_epoch) -> learning rate of step s (s >= W)
SCHEDULERS = Registry("scheduler")


def register_scheduler(name, fn=None):
    """Register ``fn(cfg, s, W, S, steps_per_epoch)`` as ``SOLVER.SCHEDULER name``."""
    return SCHEDULERS.register(name, fn)


def lr_at(cfg, epoch):
    """mdistiller's step schedule: LR * RATE ** (number of stages strictly below epoch)."""
    steps = sum(epoch > s for s in cfg.SOLVER.LR_DECAY_STAGES)
    return cfg.SOLVER.LR * (cfg.SOLVER.LR_DECAY_RATE ** steps)


@register_scheduler("step")
def step_schedule(cfg, s, W, S, steps_per_epoch):
    return lr_at(cfg, s // steps_per_epoch + 1)


register_scheduler("multistep", step_schedule)


@register_scheduler("cosine")
def cosine_schedule(cfg, s, W, S, steps_per_epoch):
    lr, low = cfg.SOLVER.LR, cfg.SOLVER.MIN_LR
    return low + (lr - low) * (1 + math.cos(math.pi * (s - W) / max(S - W, 1))) / 2


@register_scheduler("linear")
def linear_schedule(cfg, s, W, S, steps_per_epoch):
    lr, low = cfg.SOLVER.LR, cfg.SOLVER.MIN_LR
    return lr + (low - lr) * (s - W) / max(S - W, 1)


def warmup_steps(cfg, steps_per_epoch):
    """``W``: SOLVER.WARMUP_EPOCHS (may be fractional) in steps, rounded half up."""
    return int(math.floor(cfg.SOLVER.WARMUP_EPOCHS * steps_per_epoch + 0.5))


def lr_at_step(cfg, s, steps_per_epoch):
    """The learning rate of the run's 0-based step ``s`` (see the module doc)."""
    W, S = warmup_steps(cfg, steps_per_epoch), cfg.SOLVER.EPOCHS * steps_per_epoch
    if s < W:
        return cfg.SOLVER.WARMUP_LR + (cfg.SOLVER.LR - cfg.SOLVER.WARMUP_LR) * s / W
    return SCHEDULERS[cfg.SOLVER.SCHEDULER](cfg, s, W, S, steps_per_epoch)


def check_schedule(cfg):
    """One-line ConfigErrors for SOLVER.SCHEDULER, WARMUP_EPOCHS, WARMUP_LR and MIN_LR."""
    s = cfg.SOLVER
    if s.SCHEDULER not in SCHEDULERS:
        raise ConfigError(f"SOLVER.SCHEDULER '{s.SCHEDULER}' is not a schedule; known: {', '.join(SCHEDULERS)} "
                          f"(a plugin adds one with mdistiller.solver.lr_schedule.register_scheduler)")
    if not 0 <= s.WARMUP_EPOCHS < s.EPOCHS:
        raise ConfigError(f"SOLVER.WARMUP_EPOCHS must be >= 0 and below SOLVER.EPOCHS = {s.EPOCHS}, "
                          f"got {s.WARMUP_EPOCHS}")
    if not 0 <= s.WARMUP_LR <= s.LR:
        raise ConfigError(f"SOLVER.WARMUP_LR must be in [0, SOLVER.LR = {s.LR}] (the warmup's first learning "
                          f"rate), got {s.WARMUP_LR}")
    if not 0 <= s.MIN_LR <= s.LR:
        raise ConfigError(f"SOLVER.MIN_LR must be in [0, SOLVER.LR = {s.LR}] (where cosine and linear end), "
                          f"got {s.MIN_LR}")
