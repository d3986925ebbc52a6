"""SWAPKD: the SLD repository's ``KD`` ("KD with the swap mechanisms"), one temperature.

The SLD code registers this loss under the name ``KD``; here ``KD`` stays mdistiller's
Hinton KD, and the swap variant is its own method and node, so both baselines can run.
"""


from ..utils.checks import check_non_negative, check_positive
from ..utils.errors import ConfigError
from .registry import register_distiller
from .base import Need
from .logit import LogitDistiller, _temperatures
from .losses import sld_loss


@register_distiller("SWAPKD")
class SwapKD(LogitDistiller):
    """``loss_ce = CE_WEIGHT · CE(z_s, y)`` and
    ``loss_kd = KD_WEIGHT · T² [KL(σ(swap(z_t)/T) ‖ σ(z_s/T)) + [epoch > GAMMA] · KL(σ(swap(z_s)/T) ‖ σ(z_s/T))]``,
    batch means of per-sample sums, the student's swapped logits not detached (the
    reference's); :func:`~mdistiller.distillers.losses.sld_loss` at the one temperature
    ``SWAPKD.TEMPERATURE``. One view by default (``DISTILLER.VIEWS 2``: both views, summed);
    ``DISTILLER.LOGIT_STAND`` standardizes, then swaps, as SLD does.
    """

    cfg_node = "SWAPKD"
    needs = frozenset({Need.EPOCH})
    supports_logit_stand = True
    # the SLD repository's KD files: its KD weight (4.0) is hard-coded, KD.LOSS.KD_WEIGHT unread
    legacy_keys = {"KD.TEMPERATURE": "SWAPKD.TEMPERATURE", "KD.LOSS.CE_WEIGHT": "SWAPKD.CE_WEIGHT",
                   "KD.LOSS.KD_WEIGHT": None, "EXPERIMENT.LOGIT_STAND": "DISTILLER.LOGIT_STAND"}

    @staticmethod
    def defaults(c):
        c.TEMPERATURE = 4.0  # softmax temperature (the reference's KD.TEMPERATURE)
        c.CE_WEIGHT = 0.1  # weight of the cross-entropy term
        c.KD_WEIGHT = 4.0  # weight of the swapped KL terms (hard-coded 4.0 in the reference)
        c.GAMMA = 150  # the student (pseudo-teacher) swap term is active for epoch > GAMMA

    @classmethod
    def check_config(cls, cfg, used):
        check_non_negative(cfg.SWAPKD, "SWAPKD", ["CE_WEIGHT", "KD_WEIGHT"])
        check_positive(cfg.SWAPKD, "SWAPKD", ["TEMPERATURE"])
        if cfg.SWAPKD.GAMMA < 0:
            raise ConfigError(f"SWAPKD.GAMMA must be >= 0 (the student swap term starts after epoch GAMMA), "
                              f"got {cfg.SWAPKD.GAMMA}")

    def __init__(self, student, teacher, cfg):
        super().__init__(student, teacher, cfg)
        c = cfg.SWAPKD
        self.ce_loss_weight, self.kd_loss_weight, self.gamma = c.CE_WEIGHT, c.KD_WEIGHT, c.GAMMA
        self.register_buffer("temperatures", _temperatures([c.TEMPERATURE]), persistent=False)

    def losses(self, student, teacher, target, epoch):
        (z_s,), (z_t,) = student, teacher
        kd = sld_loss(self.stand(z_s), self.stand(z_t), target, self.temperatures, epoch > self.gamma)
        return {"loss_ce": self.ce_loss_weight * self.ce(z_s, target), "loss_kd": self.kd_loss_weight * kd}
