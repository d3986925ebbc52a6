"""The optimizer of a run: ``SOLVER.TYPE`` from a registry (SGD, the reference's, AdamW,
Adam, RMSprop: torch's own classes, fused where torch offers it, else foreach), or DOT
(:mod:`.dot`, ``SOLVER.TRAINER dot``, SGD only).

A plugin adds an optimizer with :func:`register_optimizer`; the builder gets the run's
config, its parameter groups (``[{"params": [...], "weight_decay": wd}, ...]``) and the
device, and returns a ``torch.optim.Optimizer``::

    from mdistiller.solver.optimizer import register_optimizer

    @register_optimizer("LAMB")
    def lamb(cfg, groups, device):
        import timm.optim
        return timm.optim.Lamb(groups, lr=cfg.SOLVER.LR, betas=tuple(cfg.SOLVER.BETAS))

An optimizer whose ``defaults["fused"]`` is True honours the trainer's device-side
``found_inf`` flag (a non-finite step is skipped without a host synchronisation, as
GradScaler does); for the others the trainer zeroes that step's gradients.

``SOLVER.WEIGHT_DECAY_NORM_BIAS`` False puts the 1-D parameters (norm scales, biases) and
the names of timm's ``no_weight_decay()`` (position embeddings, class tokens) in a group
without weight decay (:func:`param_groups`).
"""

import torch

from ..utils.errors import ConfigError
from ..utils.registry import Registry
from .dot import build_dot, uses_dot

#: SOLVER.TYPE -> builder(cfg, param_groups, device) -> torch.optim.Optimizer
OPTIMIZERS = Registry("optimizer")


def register_optimizer(name, fn=None):
    """Register ``fn(cfg, groups, device)`` as ``SOLVER.TYPE name`` (a decorator without ``fn``)."""
    return OPTIMIZERS.register(name, fn)


def sum_losses(losses):
    return sum(losses.values())


def _fused(device):
    """torch's fused kernels exist for the CPU and CUDA."""
    return True if device.type in ("cpu", "cuda") else None


def _foreach(device):
    return None if device.type in ("cpu", "cuda") else False


@register_optimizer("SGD")
def sgd(cfg, groups, device):
    s = cfg.SOLVER
    return torch.optim.SGD(groups, lr=s.LR, momentum=s.MOMENTUM, weight_decay=s.WEIGHT_DECAY, fused=_fused(device))


@register_optimizer("AdamW")
def adamw(cfg, groups, device):
    s = cfg.SOLVER
    return torch.optim.AdamW(groups, lr=s.LR, betas=tuple(s.BETAS), eps=s.EPS, weight_decay=s.WEIGHT_DECAY,
                             fused=_fused(device))


@register_optimizer("Adam")
def adam(cfg, groups, device):
    s = cfg.SOLVER
    return torch.optim.Adam(groups, lr=s.LR, betas=tuple(s.BETAS), eps=s.EPS, weight_decay=s.WEIGHT_DECAY,
                            fused=_fused(device))


@register_optimizer("RMSprop")
def rmsprop(cfg, groups, device):
    """torch's RMSprop (its smoothing constant alpha 0.99; momentum SOLVER.MOMENTUM); torch has
    no fused RMSprop, so the foreach implementation."""
    s = cfg.SOLVER
    return torch.optim.RMSprop(groups, lr=s.LR, eps=s.EPS, weight_decay=s.WEIGHT_DECAY, momentum=s.MOMENTUM,
                               foreach=_foreach(device))


def check_optimizer(cfg):
    """One-line ConfigErrors for SOLVER.TYPE, SOLVER.BETAS and SOLVER.EPS."""
    s = cfg.SOLVER
    if s.TYPE not in OPTIMIZERS:
        raise ConfigError(f"SOLVER.TYPE '{s.TYPE}' is not an optimizer; known: {', '.join(OPTIMIZERS)} (a plugin "
                          f"adds one with mdistiller.solver.optimizer.register_optimizer)")
    if uses_dot(cfg) and s.TYPE != "SGD":
        raise ConfigError(f"SOLVER.TRAINER {s.TRAINER} (DOT) is SGD with two momenta and needs SOLVER.TYPE SGD, "
                          f"not {s.TYPE}; set SOLVER.TYPE SGD or SOLVER.TRAINER base")
    betas = list(s.BETAS)
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ConfigError(f"SOLVER.BETAS must be two numbers in [0, 1) (Adam's, e.g. [0.9, 0.999]), got {betas}")
    if not s.EPS > 0:
        raise ConfigError(f"SOLVER.EPS must be a positive number (e.g. 1e-8), got {s.EPS}")


def no_weight_decay_names(module):
    """Full parameter names of ``module`` that timm's ``no_weight_decay()`` lists (on the
    module or any submodule, e.g. a ViT student's ``pos_embed`` and ``cls_token``)."""
    names = set()
    for prefix, m in module.named_modules():
        fn = getattr(m, "no_weight_decay", None)
        if callable(fn):
            try:
                listed = fn()
            except TypeError:
                continue
            names |= {f"{prefix}.{n}" if prefix else n for n in listed}
    return names


def param_groups(cfg, named_params, module=None):
    """The optimizer's parameter groups of ``named_params`` (``(name, param)`` pairs): one
    group (the reference's) unless ``SOLVER.WEIGHT_DECAY_NORM_BIAS`` is False, then a second
    group without weight decay for 1-D parameters and ``module``'s ``no_weight_decay()``
    names (checked against ``named_params``' names)."""
    named_params = list(named_params)
    if cfg.SOLVER.WEIGHT_DECAY_NORM_BIAS:
        return [{"params": [p for _, p in named_params]}]
    skip = no_weight_decay_names(module) if module is not None else set()
    decay, no_decay = [], []
    for n, p in named_params:
        (no_decay if p.ndim <= 1 or n in skip else decay).append(p)
    return [g for g in ({"params": decay}, {"params": no_decay, "weight_decay": 0.0}) if g["params"]]


def build_optimizer(cfg, params, device, module=None):
    """The ``SOLVER.TYPE`` optimizer of ``params`` (a list of parameters, or of ``(name,
    param)`` pairs of ``module``, which WEIGHT_DECAY_NORM_BIAS False needs to find 1-D and
    ``no_weight_decay()`` parameters). ``SOLVER.TRAINER dot``: DOT (:mod:`mdistiller.solver.dot`)."""
    params = list(params)
    named = params if params and isinstance(params[0], tuple) else [(str(i), p) for i, p in enumerate(params)]
    check_optimizer(cfg)
    groups = param_groups(cfg, named, module)
    if uses_dot(cfg):
        return build_dot(cfg, groups)
    return OPTIMIZERS[cfg.SOLVER.TYPE](cfg, groups, device)
