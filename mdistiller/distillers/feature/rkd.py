"""RKD: relational knowledge distillation (Park et al.), distances and angles of the pooled features.

Declares and reads mdistiller's config node ``RKD``; returns ``loss_ce`` and ``loss_kd``."""

from yacs.config import CfgNode as CN

from ...utils.checks import check_non_negative
from ..registry import register_distiller
from . import losses
from .base import FeatureDistiller, loss_node


@register_distiller("RKD")
class RKD(FeatureDistiller):
    """Relational KD (Park et al., CVPR 2019): distance and angle terms on pooled features."""

    cfg_node = "RKD"

    @staticmethod
    def defaults(c):
        c.DISTANCE_WEIGHT = 25  # weight of the distance term inside the RKD loss
        c.ANGLE_WEIGHT = 50  # weight of the angle term inside the RKD loss
        c.LOSS = loss_node(1.0)  # FEAT_WEIGHT: weight of the RKD term
        c.PDIST = CN()
        c.PDIST.EPSILON = 1e-12  # squared distances are clamped at this value
        c.PDIST.SQUARED = False  # use squared distances

    @classmethod
    def check_config(cls, cfg, used):
        super().check_config(cfg, used)
        check_non_negative(cfg.RKD, "RKD", ["DISTANCE_WEIGHT", "ANGLE_WEIGHT", "PDIST.EPSILON"])

    def feature_loss(self, feats_s, feats_t, **kwargs):
        o = self.opts
        return losses.rkd_loss(feats_s["pooled_feat"], feats_t["pooled_feat"], o.PDIST.SQUARED,
                               o.PDIST.EPSILON, o.DISTANCE_WEIGHT, o.ANGLE_WEIGHT)
