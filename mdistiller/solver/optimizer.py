"""The optimizer of a run: SGD (fused where available), or DOT (:mod:`.dot`)."""

import torch

from .dot import build_dot, uses_dot


def sum_losses(losses):
    return sum(losses.values())


def build_optimizer(cfg, params, device):
    """SGD; fused where available so a device-side ``found_inf`` flag can skip a step.
    ``SOLVER.TRAINER dot``: DOT (:mod:`mdistiller.solver.dot`)."""
    if uses_dot(cfg):
        return build_dot(cfg, params)
    fused = device.type in ("cpu", "cuda")
    return torch.optim.SGD(params, lr=cfg.SOLVER.LR, momentum=cfg.SOLVER.MOMENTUM,
                           weight_decay=cfg.SOLVER.WEIGHT_DECAY, fused=fused or None)
