"""DKD: decoupled knowledge distillation (and DKD_aug, the same loss on two views)."""


from ..utils.checks import check_at_least, check_non_negative, check_positive
from .base import Need
from .logit import LogitDistiller
from .losses import dkd_loss
from .registry import register_distiller


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
            "loss_ce": self.ce_loss_weight * self.ce(z_s, target),
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
