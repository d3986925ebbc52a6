"""KD: Hinton et al.'s knowledge distillation (mdistiller's ``KD`` keys)."""

from yacs.config import CfgNode as CN

from ..utils.checks import check_non_negative, check_positive
from .logit import LogitDistiller
from .losses import kd_loss
from .registry import register_distiller


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
            "loss_ce": self.ce_loss_weight * self.ce(z_s, target),
            "loss_kd": self.kd_loss_weight * kd_loss(self.stand(z_s), self.stand(z_t), self.temperature),
        }
