"""SLD: Swapped Logit Distillation, the flagship method (its variant SWAPKD is :mod:`.swapkd`)."""

import warnings


from ..utils.checks import check_non_negative, check_temperatures
from ..utils.errors import ConfigError, ConfigWarning
from .base import Need
from .logit import LogitDistiller, _temperatures
from .losses import sld_loss
from .registry import register_distiller


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
            "loss_ce": self.ce_loss_weight * sum(self.ce(z_s, target) for z_s in student),
            "loss_kd": self.kd_loss_weight * kd,
        }
