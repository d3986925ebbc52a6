"""DOT, the distillation-oriented trainer (Zhao et al., ICCV 2023), as an optimizer.

Selected as upstream mdistiller selects it: ``SOLVER.TRAINER "dot"`` (or ``"crd_dot"``) with
``SOLVER.DOT.DELTA`` (0.075). SGD with two momentum buffers per parameter, one for the task
gradient (of ``loss_ce``) and one for the distillation gradient (of every other loss term),
kept apart as the paper describes. With ``m = SOLVER.MOMENTUM``, ``δ = DELTA``, weight decay
``λ`` and learning rate ``η``, a parameter that gets both gradients updates

    b_task ← (m − δ) · b_task + (g_task + λ·θ)
    b_kd   ← (m + δ) · b_kd   + g_kd
    θ      ← θ − η · b_task − η · b_kd

(buffers start at zero, i.e. the first step's buffer is the gradient). A parameter reached
by one of the two losses only uses the mean momentum ``((m − δ) + (m + δ)) / 2`` for its
buffer and takes the weight decay there; a parameter reached by neither is left alone.
These are upstream mdistiller's semantics (``mdistiller/engine/dot.py``), its state keys
(``momentum_buffer``, ``momentum_kd_buffer``) included, and so is its first step: a
parameter that only the distillation loss reaches fills its new ``momentum_kd_buffer``
with the bare distillation gradient, **without** weight decay (upstream clones the gradient
into a new buffer before adding the decay); from the second step on it takes
``g_kd + λ·θ``. (A first step skipped for a non-finite loss still creates the buffer, so
the decay then starts with the next step.)

Which loss terms are "distillation": **every term other than** ``loss_ce`` (``TASK_TERM``)
goes to the distillation momentum, summed: ``loss_kd``, and also the extra terms of
methods that return more than two (``DISTILLER.EXTRA`` combinations, a plugin's terms).
Upstream's trainer sends ``loss_kd`` alone to the distillation momentum and back-propagates
no other term, so for methods returning only ``loss_ce`` and ``loss_kd`` (KD, DKD and every
shipped DOT file) the two agree; with more terms, upstream would ignore the others.

The trainer hands the step's loss terms to :meth:`DOT.loss_for_backward`, which takes the
distillation gradient with ``torch.autograd.grad`` (the parameters' ``.grad`` stay
untouched) and returns what the trainer back-propagates: the task loss plus the detached
distillation terms, so the logged total is unchanged and ``.grad`` ends up holding the task
gradient. No host synchronisation: a non-finite step is skipped on the device through
``found_inf``, as with the fused SGD. DistributedDataParallel (the distillation gradient
would not be all-reduced) and fp16 with a GradScaler are refused by :func:`check_config`.
"""

import torch

from ..utils.errors import ConfigError

#: SOLVER.TRAINER values (upstream mdistiller's) that select DOT
DOT_TRAINERS = ("dot", "crd_dot")
#: the loss term whose gradient is the task gradient
TASK_TERM = "loss_ce"


def uses_dot(cfg):
    return cfg.SOLVER.TRAINER in DOT_TRAINERS


def check_config(cfg, world_size=1):
    """ConfigError for settings DOT does not support (called by the config loader and by
    :func:`build_dot` with the run's world size)."""
    if not uses_dot(cfg):
        return
    s = cfg.SOLVER
    if not 0 <= s.DOT.DELTA <= s.MOMENTUM:
        raise ConfigError(f"SOLVER.DOT.DELTA must be in [0, SOLVER.MOMENTUM = {s.MOMENTUM}] (the task momentum "
                          f"is MOMENTUM - DELTA), got {s.DOT.DELTA}")
    if s.AMP == "fp16":
        raise ConfigError("SOLVER.TRAINER dot does not support SOLVER.AMP fp16 (its GradScaler scales one backward); "
                          "use SOLVER.AMP bf16 or none")
    if s.CLIP_GRAD > 0:
        raise ConfigError("SOLVER.TRAINER dot does not support SOLVER.CLIP_GRAD (its distillation gradient is "
                          "applied apart from .grad); set SOLVER.CLIP_GRAD 0")
    if world_size > 1:
        raise ConfigError(f"SOLVER.TRAINER dot does not support DistributedDataParallel ({world_size} processes): "
                          f"its distillation gradient would not be all-reduced; train DOT in one process")


class DOT(torch.optim.Optimizer):
    """SGD with separate task and distillation momenta (see the module doc)."""

    def __init__(self, params, lr, momentum, delta, weight_decay=0.0):
        if not 0 <= delta <= momentum:
            raise ValueError(f"DOT needs 0 <= delta <= momentum, got delta {delta}, momentum {momentum}")
        # "fused": like the fused SGD, the step honours the trainer's device-side found_inf flag
        defaults = dict(lr=lr, momentum=momentum, delta=delta, weight_decay=weight_decay, fused=True)
        super().__init__(params, defaults)
        self.found_inf = None
        self._kd_grads = None

    def _params(self):
        return [p for g in self.param_groups for p in g["params"]]

    def loss_for_backward(self, losses):
        """Take the distillation gradient of ``losses`` now; return the task loss plus the
        detached distillation terms (its backward leaves the task gradient in ``.grad``)."""
        kd_terms = [v for k, v in losses.items() if k != TASK_TERM]
        params = self._params()
        kd = sum(kd_terms) if kd_terms else None
        if kd is not None and kd.requires_grad:
            self._kd_grads = torch.autograd.grad(kd, params, retain_graph=True, allow_unused=True)
        else:
            self._kd_grads = [None] * len(params)
        task = losses.get(TASK_TERM)
        detached = [t.detach() for t in kd_terms]
        return sum(detached, task) if task is not None else sum(detached)

    @torch.no_grad()
    def step(self, closure=None):
        kd_grads = self._kd_grads if self._kd_grads is not None else [None] * len(self._params())
        skip = None if self.found_inf is None else self.found_inf > 0  # device flag: True = skip this step
        i = 0
        for group in self.param_groups:
            lr, m, delta, wd = group["lr"], group["momentum"], group["delta"], group["weight_decay"]
            m_task, m_kd = m - delta, m + delta
            m_one = (m_task + m_kd) / 2.0
            for p in group["params"]:
                g_task, g_kd = p.grad, kd_grads[i]
                i += 1
                if g_task is None and g_kd is None:
                    continue
                state = self.state[p]
                new_p = p
                if g_task is not None:
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    buf = state["momentum_buffer"]
                    new_buf = buf * (m_task if g_kd is not None else m_one) + (g_task + wd * p if wd else g_task)
                    new_p = new_p - lr * new_buf
                    buf.copy_(new_buf if skip is None else torch.where(skip, buf, new_buf))
                if g_kd is not None:
                    first = "momentum_kd_buffer" not in state  # upstream: no weight decay on the first step
                    if first:
                        state["momentum_kd_buffer"] = torch.zeros_like(p)
                    kbuf = state["momentum_kd_buffer"]
                    d_kd = g_kd if g_task is not None or not wd or first else g_kd + wd * p
                    new_kbuf = kbuf * (m_kd if g_task is not None else m_one) + d_kd
                    new_p = new_p - lr * new_kbuf
                    kbuf.copy_(new_kbuf if skip is None else torch.where(skip, kbuf, new_kbuf))
                p.copy_(new_p if skip is None else torch.where(skip, p, new_p))
        self._kd_grads = None
        return None


def build_dot(cfg, params):
    """The DOT optimizer of ``cfg`` (``SOLVER.LR``, ``MOMENTUM``, ``DOT.DELTA``, ``WEIGHT_DECAY``);
    ConfigError under DistributedDataParallel."""
    dist = torch.distributed
    check_config(cfg, dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1)
    s = cfg.SOLVER
    return DOT(params, lr=s.LR, momentum=s.MOMENTUM, delta=s.DOT.DELTA, weight_decay=s.WEIGHT_DECAY)
