"""The learning-rate schedule (applied each epoch by the trainer's ``LRSchedule`` hook)."""


def lr_at(cfg, epoch):
    """mdistiller's step schedule: LR * RATE ** (number of stages strictly below epoch)."""
    steps = sum(epoch > s for s in cfg.SOLVER.LR_DECAY_STAGES)
    return cfg.SOLVER.LR * (cfg.SOLVER.LR_DECAY_RATE ** steps)
