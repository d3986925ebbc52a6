"""MLKD: multi-level logit distillation (registered as MLKD and as the MLKD repository's KD_ours)."""


from ..utils.checks import check_non_negative, check_temperatures
from .logit import LogitDistiller, _temperatures
from .losses import mlkd_loss
from .registry import register_distiller


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
            "loss_ce": self.ce_loss_weight * (self.ce(s_weak, target) + self.ce(s_strong, target)),
            "loss_kd": w * instance,
            "loss_cc": w * cc,
            "loss_bc": w * bc,
        }


register_distiller("KD_ours", MLKD)  # the MLKD repository's name for it, so its YAML files run
