"""Logit distillers: NONE (vanilla), KD, DKD (and DKD_aug, on two views), MLKD and SLD.

Each reads only its own config node (``KD``, ``DKD``, ``MLKD``, ``SLD``) and returns the
student's weak-view logits and its weighted loss terms. The student runs once per view
(train-mode BN normalises each view separately); the teacher runs once over all views
(:meth:`Distiller.teacher_logits`). Losses are computed with autocast off, on float32 (or
float64) copies of the logits, so they stay in full precision under AMP.
"""

import torch
import torch.nn.functional as F

from ..utils.errors import DataError
from . import register_distiller
from ._base import Distiller, as_float
from .losses import dkd_loss, kd_loss, mlkd_loss, sld_loss


class LogitDistiller(Distiller):
    """Runs student and teacher on the batch's views and hands the logits to :meth:`losses`."""

    #: the method's loss depends on the epoch (``forward_train`` then requires ``epoch``)
    needs_epoch = False

    def _views(self, image, image_weak, image_strong):
        """The batch's views, weak first: ``[image]`` or ``[image_weak, image_strong]``."""
        if self.num_views == 1:
            views = [image if image is not None else image_weak]
        else:
            views = [image_weak, image_strong]
        if any(v is None for v in views):
            given = [k for k, v in (("image", image), ("image_weak", image_weak),
                                    ("image_strong", image_strong)) if v is not None]
            need = "image" if self.num_views == 1 else "image_weak and image_strong"
            raise DataError(f"{type(self).__name__} trains on {need} but the batch has {given or 'no image'}; "
                            f"build the data pipeline with views_for(cfg) = {self.num_views}")
        return views

    def forward_train(self, target, epoch=None, image=None, image_weak=None, image_strong=None, **kwargs):
        if self.needs_epoch and epoch is None:
            raise TypeError(f"{type(self).__name__}.forward_train needs the epoch (epoch=...)")
        views = self._views(image, image_weak, image_strong)
        student = [self.student(v)[0] for v in views]
        teacher = self.teacher_logits(*views) if self.teacher is not None else []
        with torch.autocast(student[0].device.type, enabled=False):
            losses = self.losses([as_float(z) for z in student], teacher, target, epoch)
        return student[0], losses

    def losses(self, student, teacher, target, epoch):
        """Weighted loss terms from per-view student and teacher logits (lists, weak first)."""
        raise NotImplementedError


def _temperatures(values):
    """Configured temperatures as a tensor, registered as a non-persistent buffer: it follows
    ``.to(device)`` (no host-to-device copy per step) and stays out of checkpoints
    (mdistiller's state-dict layout). The losses cast it to the logits' dtype."""
    return torch.tensor(list(values), dtype=torch.get_default_dtype())


@register_distiller("NONE")
class Vanilla(LogitDistiller):
    """The student alone, trained with cross-entropy (``loss_ce``); the teacher is ignored."""

    def __init__(self, student, teacher=None, cfg=None):
        super().__init__(student)

    def losses(self, student, teacher, target, epoch):
        return {"loss_ce": F.cross_entropy(student[0], target)}


@register_distiller("KD")
class KD(LogitDistiller):
    """Hinton et al., 2015: ``CE_WEIGHT · CE(z_s, y) + KD_WEIGHT · T² KL(σ(z_t/T) ‖ σ(z_s/T))``."""

    def __init__(self, student, teacher, cfg):
        super().__init__(student, teacher)
        self.temperature = cfg.KD.TEMPERATURE
        self.ce_loss_weight = cfg.KD.LOSS.CE_WEIGHT
        self.kd_loss_weight = cfg.KD.LOSS.KD_WEIGHT

    def losses(self, student, teacher, target, epoch):
        (z_s,), (z_t,) = student, teacher
        return {
            "loss_ce": self.ce_loss_weight * F.cross_entropy(z_s, target),
            "loss_kd": self.kd_loss_weight * kd_loss(z_s, z_t, self.temperature),
        }


@register_distiller("DKD")
class DKD(LogitDistiller):
    """Decoupled KD (Zhao et al., CVPR 2022): ``CE_WEIGHT · CE`` plus
    ``min(epoch / WARMUP, 1) · T² (ALPHA · TCKD + BETA · NCKD)`` (see :func:`dkd_loss`)."""

    needs_epoch = True

    def __init__(self, student, teacher, cfg):
        super().__init__(student, teacher)
        c = cfg.DKD
        self.ce_loss_weight, self.alpha, self.beta = c.CE_WEIGHT, c.ALPHA, c.BETA
        self.temperature, self.warmup = c.T, c.WARMUP

    def losses(self, student, teacher, target, epoch):
        (z_s,), (z_t,) = student, teacher
        ramp = min(epoch / self.warmup, 1.0) if self.warmup > 0 else 1.0
        return {
            "loss_ce": self.ce_loss_weight * F.cross_entropy(z_s, target),
            "loss_kd": ramp * dkd_loss(z_s, z_t, target, self.alpha, self.beta, self.temperature),
        }


@register_distiller("DKD_aug")
class DKDAug(DKD):
    """DKD on the weak and strong views: each term is DKD's, summed over the two views.

    The SLD repository's ``configs/cifar100/dkd/res32x4_res8x4_aug.yaml`` names it (MLKD's
    "DKD with its augmentation" baseline); no reference repository defines the method."""

    num_views = 2

    def losses(self, student, teacher, target, epoch):
        per_view = [super(DKDAug, self).losses([z_s], [z_t], target, epoch) for z_s, z_t in zip(student, teacher)]
        return {k: sum(terms[k] for terms in per_view) for k in per_view[0]}


@register_distiller("MLKD")
class MLKD(LogitDistiller):
    """Multi-level logit distillation (Jin et al., CVPR 2023) on weak and strong views.

    ``loss_ce = CE_WEIGHT · (CE_weak + CE_strong)``; ``loss_kd``, ``loss_cc``, ``loss_bc`` are
    ``KD_WEIGHT`` times the instance, class-correlation and batch-correlation terms of
    :func:`mlkd_loss` over ``MLKD.TEMPERATURES``. ``MLKD.PAPER_MODE`` switches from the
    reference code's behaviour to the paper's masking (documented there).
    """

    num_views = 2

    def __init__(self, student, teacher, cfg):
        super().__init__(student, teacher)
        c = cfg.MLKD
        self.ce_loss_weight, self.kd_loss_weight, self.paper_mode = c.CE_WEIGHT, c.KD_WEIGHT, c.PAPER_MODE
        self.register_buffer("temperatures", _temperatures(c.TEMPERATURES), persistent=False)

    def losses(self, student, teacher, target, epoch):
        (s_weak, s_strong), (t_weak, t_strong) = student, teacher
        instance, cc, bc = mlkd_loss(s_weak, t_weak, s_strong, t_strong, self.temperatures, self.paper_mode)
        w = self.kd_loss_weight
        return {
            "loss_ce": self.ce_loss_weight * (F.cross_entropy(s_weak, target) + F.cross_entropy(s_strong, target)),
            "loss_kd": w * instance,
            "loss_cc": w * cc,
            "loss_bc": w * bc,
        }


register_distiller("KD_ours", MLKD)  # the MLKD repository's name for it, so its YAML files run


@register_distiller("SLD")
class SLD(LogitDistiller):
    """Swapped Logit Distillation, per view (``SLD.VIEWS``: weak + strong, or weak only):

    ``loss_ce = CE_WEIGHT · Σ_views CE(z_s, y)`` and
    ``loss_kd = KD_WEIGHT · Σ_views sld_loss(z_s, z_t)`` over ``SLD.TEMPERATURES``, with the
    student's own swapped logits as a second target once ``epoch > SLD.GAMMA`` (strictly),
    detached when ``SLD.DETACH_PSEUDO_TEACHER`` (see :func:`sld_loss`).
    """

    needs_epoch = True

    def __init__(self, student, teacher, cfg):
        super().__init__(student, teacher)
        c = cfg.SLD
        self.num_views = self.views_for(cfg)
        self.ce_loss_weight, self.kd_loss_weight = c.CE_WEIGHT, c.KD_WEIGHT
        self.gamma, self.detach_pseudo_teacher = c.GAMMA, c.DETACH_PSEUDO_TEACHER
        self.register_buffer("temperatures", _temperatures(c.TEMPERATURES), persistent=False)

    @classmethod
    def views_for(cls, cfg):
        return cfg.SLD.VIEWS

    def losses(self, student, teacher, target, epoch):
        student_swap = epoch > self.gamma
        kd = sum(sld_loss(z_s, z_t, target, self.temperatures, student_swap, self.detach_pseudo_teacher)
                 for z_s, z_t in zip(student, teacher))
        return {
            "loss_ce": self.ce_loss_weight * sum(F.cross_entropy(z_s, target) for z_s in student),
            "loss_kd": self.kd_loss_weight * kd,
        }
