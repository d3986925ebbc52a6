"""Logit distillers: NONE (vanilla), KD, DKD (and DKD_aug, on two views), MLKD and SLD.

Each declares and reads only its own config node (``KD``, ``DKD``, ``MLKD``, ``SLD``) and returns the
student's weak-view logits and its weighted loss terms. The student runs once per view
(train-mode BN normalises each view separately); the teacher runs once over all views
(:meth:`Distiller.teacher_logits`). Losses are computed with autocast off, on float32 (or
float64) copies of the logits, so they stay in full precision under AMP.
"""

import warnings

import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from ..utils.checks import check_at_least, check_non_negative, check_positive, check_temperatures
from ..utils.errors import ConfigError, ConfigWarning, DataError
from .registry import register_distiller
from .base import Distiller, Need, as_float
from .losses import dkd_loss, kd_loss, mlkd_loss, sld_loss, standardize


class LogitDistiller(Distiller):
    """Runs student and teacher on the batch's views and hands the logits to :meth:`losses`.

    A method listing ``Need.EPOCH`` in ``needs`` gets the epoch (``forward_train`` then
    requires ``epoch``). Built with ``cfg``, it follows the recipe keys of the ``DISTILLER``
    node:

    * ``DISTILLER.VIEWS`` (:meth:`views_for`): 0 = the method's :attr:`num_views`, 1 or 2
      overrides it. A method whose :meth:`losses` takes one view (``views_in_loss`` False)
      has it applied to each view and the terms summed (so the cross-entropy covers both
      views, as in MLKD and SLD); a method whose loss combines the views itself sets
      ``views_in_loss`` and gets them all; one that needs two views (``min_views = 2``)
      refuses ``DISTILLER.VIEWS 1``.
    * ``DISTILLER.LOGIT_STAND`` (:attr:`logit_stand`): methods with ``supports_logit_stand``
      standardize (:func:`~mdistiller.distillers.losses.standardize`) the logits of their
      distillation terms; the config check refuses it for the others.
    """

    #: the loss takes all views at once (else it is applied to each view and summed)
    views_in_loss = False
    #: fewest views the loss needs
    min_views = 1
    #: the method honours DISTILLER.LOGIT_STAND
    supports_logit_stand = False

    def __init__(self, student, teacher=None, cfg=None):
        super().__init__(student, teacher)
        self.logit_stand = bool(cfg is not None and cfg.DISTILLER.LOGIT_STAND)
        if cfg is not None:
            self.num_views = self.views_for(cfg)

    @classmethod
    def views_for(cls, cfg):
        return max(cfg.DISTILLER.VIEWS or cls.num_views, cls.min_views)

    @classmethod
    def build(cls, student, teacher, cfg, train_set=None):
        distiller = super().build(student, teacher, cfg, train_set)
        distiller.num_views = cls.views_for(cfg)  # also for plugins whose __init__ does not pass cfg
        return distiller

    def stand(self, z):
        """``z`` standardized when DISTILLER.LOGIT_STAND is on, else ``z``."""
        return standardize(z) if self.logit_stand else z

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
        self.check_epoch(epoch)
        views = self._views(image, image_weak, image_strong)
        student = [self.student(v)[0] for v in views]
        teacher = self.teacher_logits(*views) if self.teacher is not None else [None] * len(views)
        with torch.autocast(student[0].device.type, enabled=False):
            student = [as_float(z) for z in student]
            if self.views_in_loss or len(views) == 1:
                losses = self.losses(student, teacher, target, epoch)
            else:  # a one-view loss on each view, summed term by term
                parts = [self.losses([s], [t], target, epoch) for s, t in zip(student, teacher)]
                losses = {k: sum((p[k] for p in parts[1:]), parts[0][k]) for k in parts[0]}
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

    uses_teacher = False

    def __init__(self, student, teacher=None, cfg=None):
        super().__init__(student, None, cfg)

    def losses(self, student, teacher, target, epoch):
        return {"loss_ce": F.cross_entropy(student[0], target)}


@register_distiller("KD")
class KD(LogitDistiller):
    """Hinton et al., 2015: ``CE_WEIGHT · CE(z_s, y) + KD_WEIGHT · T² KL(σ(z_t/T) ‖ σ(z_s/T))``."""

    cfg_node = "KD"  # mdistiller's keys
    supports_logit_stand = True
    legacy_keys = {"EXPERIMENT.LOGIT_STAND": "DISTILLER.LOGIT_STAND"}  # the LS repository's key

    @staticmethod
    def defaults(c):
        c.TEMPERATURE = 4.0  # softmax temperature
        c.LOSS = CN()
        c.LOSS.CE_WEIGHT = 0.1  # weight of the cross-entropy term
        c.LOSS.KD_WEIGHT = 0.9  # weight of the KL term

    @classmethod
    def check_config(cls, cfg, used):
        check_non_negative(cfg.KD, "KD", ["LOSS.CE_WEIGHT", "LOSS.KD_WEIGHT"])
        check_positive(cfg.KD, "KD", ["TEMPERATURE"])

    def __init__(self, student, teacher, cfg):
        super().__init__(student, teacher, cfg)
        self.temperature = cfg.KD.TEMPERATURE
        self.ce_loss_weight = cfg.KD.LOSS.CE_WEIGHT
        self.kd_loss_weight = cfg.KD.LOSS.KD_WEIGHT

    def losses(self, student, teacher, target, epoch):
        (z_s,), (z_t,) = student, teacher
        return {
            "loss_ce": self.ce_loss_weight * F.cross_entropy(z_s, target),
            "loss_kd": self.kd_loss_weight * kd_loss(self.stand(z_s), self.stand(z_t), self.temperature),
        }


@register_distiller("DKD")
class DKD(LogitDistiller):
    """Decoupled KD (Zhao et al., CVPR 2022): ``CE_WEIGHT · CE`` plus
    ``min(epoch / WARMUP, 1) · T² (ALPHA · TCKD + BETA · NCKD)`` (see :func:`dkd_loss`)."""

    cfg_node = "DKD"  # mdistiller's keys
    needs = frozenset({Need.EPOCH})
    supports_logit_stand = True
    legacy_keys = {"EXPERIMENT.LOGIT_STAND": "DISTILLER.LOGIT_STAND"}  # the LS repository's key

    @staticmethod
    def defaults(c):
        c.CE_WEIGHT = 1.0  # weight of the cross-entropy term
        c.ALPHA = 1.0  # weight of target-class KD (TCKD)
        c.BETA = 8.0  # weight of non-target-class KD (NCKD)
        c.T = 4.0  # softmax temperature
        c.WARMUP = 20  # epochs of linear warm-up of the KD term (0 = none)

    @classmethod
    def check_config(cls, cfg, used):
        check_non_negative(cfg.DKD, "DKD", ["CE_WEIGHT", "ALPHA", "BETA"])
        check_positive(cfg.DKD, "DKD", ["T"])
        check_at_least(cfg.DKD, "DKD", "WARMUP", 0)

    def __init__(self, student, teacher, cfg):
        super().__init__(student, teacher, cfg)
        c = cfg.DKD
        self.ce_loss_weight, self.alpha, self.beta = c.CE_WEIGHT, c.ALPHA, c.BETA
        self.temperature, self.warmup = c.T, c.WARMUP

    def losses(self, student, teacher, target, epoch):
        (z_s,), (z_t,) = student, teacher
        ramp = min(epoch / self.warmup, 1.0) if self.warmup > 0 else 1.0
        return {
            "loss_ce": self.ce_loss_weight * F.cross_entropy(z_s, target),
            "loss_kd": ramp * dkd_loss(self.stand(z_s), self.stand(z_t), target, self.alpha, self.beta,
                                       self.temperature),
        }


@register_distiller("DKD_aug")
class DKDAug(DKD):
    """DKD on the weak and strong views by default (``DISTILLER.VIEWS 2``): each term is DKD's,
    summed over the two views.

    The SLD repository's ``configs/cifar100/dkd/res32x4_res8x4_aug.yaml`` names it (MLKD's
    "DKD with its augmentation" baseline); no reference repository defines the method. It is
    ``DKD`` with ``DISTILLER.VIEWS 2``."""

    num_views = 2


@register_distiller("MLKD")
class MLKD(LogitDistiller):
    """Multi-level logit distillation (Jin et al., CVPR 2023) on weak and strong views.

    ``loss_ce = CE_WEIGHT · (CE_weak + CE_strong)``; ``loss_kd``, ``loss_cc``, ``loss_bc`` are
    ``KD_WEIGHT`` times the instance, class-correlation and batch-correlation terms of
    :func:`mlkd_loss` over ``MLKD.TEMPERATURES``. ``MLKD.PAPER_MODE`` switches from the
    reference code's behaviour to the paper's masking (documented there).
    """

    cfg_node = "MLKD"
    num_views = min_views = 2
    views_in_loss = supports_logit_stand = True
    # the MLKD (and LS) repositories' files set these keys
    legacy_keys = {"KD.LOSS.CE_WEIGHT": "MLKD.CE_WEIGHT", "KD.LOSS.KD_WEIGHT": "MLKD.KD_WEIGHT",
                   "KD.TEMPERATURE": "MLKD.TEMPERATURES[0]", "EXPERIMENT.LOGIT_STAND": "DISTILLER.LOGIT_STAND"}

    @staticmethod
    def defaults(c):
        c.TEMPERATURES = [4.0, 3.0, 5.0, 2.0, 6.0]  # temperatures, in the reference's order
        c.CE_WEIGHT = 0.1  # weight of the cross-entropy term (each view)
        c.KD_WEIGHT = 0.9  # weight of the instance, class and batch terms
        c.PAPER_MODE = False  # True = the paper's formulas instead of the reference code's quirks

    @classmethod
    def check_config(cls, cfg, used):
        check_non_negative(cfg.MLKD, "MLKD", ["CE_WEIGHT", "KD_WEIGHT"])
        check_temperatures(cfg.MLKD, "MLKD")

    def __init__(self, student, teacher, cfg):
        super().__init__(student, teacher, cfg)
        c = cfg.MLKD
        self.ce_loss_weight, self.kd_loss_weight, self.paper_mode = c.CE_WEIGHT, c.KD_WEIGHT, c.PAPER_MODE
        self.register_buffer("temperatures", _temperatures(c.TEMPERATURES), persistent=False)

    def losses(self, student, teacher, target, epoch):
        (s_weak, s_strong), (t_weak, t_strong) = student, teacher
        instance, cc, bc = mlkd_loss(s_weak, t_weak, s_strong, t_strong, self.temperatures, self.paper_mode,
                                  self.logit_stand)
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
    """Swapped Logit Distillation, per view (``SLD.VIEWS`` or ``DISTILLER.VIEWS``: weak +
    strong, or weak only):

    ``loss_ce = CE_WEIGHT · Σ_views CE(z_s, y)`` and
    ``loss_kd = KD_WEIGHT · Σ_views sld_loss(z_s, z_t)`` over ``SLD.TEMPERATURES``, with the
    student's own swapped logits as a second target once ``epoch > SLD.GAMMA`` (strictly),
    detached when ``SLD.DETACH_PSEUDO_TEACHER`` (see :func:`sld_loss`). With
    ``DISTILLER.LOGIT_STAND`` both logits are standardized first and then swapped (teacher
    and pseudo-teacher alike; the cross-entropy stays on the raw logits).
    """

    cfg_node = "SLD"
    num_views = 2
    needs = frozenset({Need.EPOCH})
    views_in_loss = supports_logit_stand = True
    # the SLD repository's files set these KD.* keys; it ignores KD.TEMPERATURE
    legacy_keys = {"KD.LOSS.CE_WEIGHT": "SLD.CE_WEIGHT", "KD.LOSS.KD_WEIGHT": "SLD.KD_WEIGHT",
                   "KD.TEMPERATURE": None, "EXPERIMENT.LOGIT_STAND": "DISTILLER.LOGIT_STAND"}

    @staticmethod
    def defaults(c):
        c.GAMMA = 150  # the student (pseudo-teacher) swap loss is active for epoch > GAMMA
        c.TEMPERATURES = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # temperatures summed over
        c.CE_WEIGHT = 0.1  # weight of the cross-entropy term (each view)
        c.KD_WEIGHT = 0.9  # weight of each swapped-logit KL term
        c.DETACH_PSEUDO_TEACHER = False  # True = no gradient through the student's swapped targets
        c.VIEWS = 0  # 0 = DISTILLER.VIEWS (whose 0 is the reference's 2 = weak + strong); 1 = weak view only

    @classmethod
    def check_config(cls, cfg, used):
        c = cfg.SLD
        check_non_negative(c, "SLD", ["CE_WEIGHT", "KD_WEIGHT"])
        check_temperatures(c, "SLD")
        if c.GAMMA < 0:
            raise ConfigError(f"SLD.GAMMA must be >= 0 (the student swap loss starts after epoch GAMMA), got {c.GAMMA}")
        if c.VIEWS not in (0, 1, 2):
            raise ConfigError(f"SLD.VIEWS must be 0 (= DISTILLER.VIEWS), 1 or 2, got {c.VIEWS}")
        if c.VIEWS and cfg.DISTILLER.VIEWS and c.VIEWS != cfg.DISTILLER.VIEWS:
            raise ConfigError(f"SLD.VIEWS = {c.VIEWS} and DISTILLER.VIEWS = {cfg.DISTILLER.VIEWS} disagree; "
                              f"keep only DISTILLER.VIEWS")
        if used and c.GAMMA >= cfg.SOLVER.EPOCHS:
            warnings.warn(
                f"SLD.GAMMA = {c.GAMMA} >= SOLVER.EPOCHS = {cfg.SOLVER.EPOCHS}: the student swap loss "
                f"(active for epoch > GAMMA) will never run; lower SLD.GAMMA to use it",
                ConfigWarning,
                stacklevel=4,
            )

    def __init__(self, student, teacher, cfg):
        super().__init__(student, teacher, cfg)
        c = cfg.SLD
        self.ce_loss_weight, self.kd_loss_weight = c.CE_WEIGHT, c.KD_WEIGHT
        self.gamma, self.detach_pseudo_teacher = c.GAMMA, c.DETACH_PSEUDO_TEACHER
        self.register_buffer("temperatures", _temperatures(c.TEMPERATURES), persistent=False)

    @classmethod
    def views_for(cls, cfg):
        return cfg.SLD.VIEWS or super().views_for(cfg)

    def losses(self, student, teacher, target, epoch):
        student_swap = epoch > self.gamma
        # standardize, then swap: the swap permutes values, so the two orders agree in exact
        # arithmetic; standardizing the raw logits keeps the row statistics independent of the swap
        kd = sum(sld_loss(self.stand(z_s), self.stand(z_t), target, self.temperatures, student_swap,
                          self.detach_pseudo_teacher) for z_s, z_t in zip(student, teacher))
        return {
            "loss_ce": self.ce_loss_weight * sum(F.cross_entropy(z_s, target) for z_s in student),
            "loss_kd": self.kd_loss_weight * kd,
        }
