"""PKT: probabilistic knowledge transfer (Passalis & Tefas), on the pooled features.

Declares and reads mdistiller's config node ``PKT``; returns ``loss_ce`` and ``loss_kd``."""

from ..registry import register_distiller
from . import losses
from .base import FeatureDistiller, loss_node


@register_distiller("PKT")
class PKT(FeatureDistiller):
    """Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018) on pooled features."""

    cfg_node = "PKT"

    @staticmethod
    def defaults(c):
        c.LOSS = loss_node(30000.0)  # FEAT_WEIGHT: weight of the probabilistic-transfer term

    def feature_loss(self, feats_s, feats_t, **kwargs):
        return losses.pkt_loss(feats_s["pooled_feat"], feats_t["pooled_feat"])
