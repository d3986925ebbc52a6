"""SP: similarity-preserving distillation (Tung & Mori), on the last stage's batch similarities.

Declares and reads mdistiller's config node ``SP``; returns ``loss_ce`` and ``loss_kd``."""

from ..registry import register_distiller
from . import losses
from .base import FeatureDistiller, loss_node


@register_distiller("SP")
class SP(FeatureDistiller):
    """Similarity-preserving KD (Tung & Mori, ICCV 2019) on the last stage."""

    cfg_node = "SP"

    @staticmethod
    def defaults(c):
        c.LOSS = loss_node(3000.0)  # FEAT_WEIGHT: weight of the similarity-preserving term

    def feature_loss(self, feats_s, feats_t, **kwargs):
        return losses.sp_loss(feats_s["feats"][-1:], feats_t["feats"][-1:])
