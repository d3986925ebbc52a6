"""KDSVD: knowledge distillation with singular value decomposition (Lee et al.), on the stages.

Declares and reads mdistiller's config node ``KDSVD``; returns ``loss_ce`` and ``loss_kd``."""

from ...utils.checks import check_at_least
from ...utils.errors import ConfigError
from ..registry import register_distiller
from . import losses
from .base import FeatureDistiller, loss_node, model_label, probe_features, probe_size


@register_distiller("KDSVD")
class KDSVD(FeatureDistiller):
    """Self-supervised KD with SVD (Lee et al., ECCV 2018) on stages 1..n (``KDSVD.K``)."""

    cfg_node = "KDSVD"

    @staticmethod
    def defaults(c):
        c.K = 1  # number of teacher singular vectors compared
        c.LOSS = loss_node(1.0)  # FEAT_WEIGHT: weight of the SVD term

    @classmethod
    def check_config(cls, cfg, used):
        super().check_config(cfg, used)
        check_at_least(cfg.KDSVD, "KDSVD", "K", 1)

    def __init__(self, student, teacher, cfg):
        super().__init__(student, teacher, cfg)
        widths = [[f.shape[3] for f in probe_features(m, probe_size(cfg))["feats"][1:]] for m in (student, teacher)]
        if any(s != t for s, t in zip(*widths)):
            raise ConfigError(f"KDSVD cannot pair {model_label(cfg, 'student')} with {model_label(cfg, 'teacher')}: "
                              f"stage widths {widths[0]} vs {widths[1]} differ (the SVDs are compared "
                              f"column by column); pick a pair with equal stage sizes or another method")

    def feature_loss(self, feats_s, feats_t, **kwargs):
        return losses.kdsvd_loss(feats_s["feats"][1:], feats_t["feats"][1:], self.opts.K)
