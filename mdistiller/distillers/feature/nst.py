"""NST: neuron selectivity transfer (Huang & Wang), an MMD between the stages' activations.

Declares and reads mdistiller's config node ``NST``; returns ``loss_ce`` and ``loss_kd``."""

from ..registry import register_distiller
from . import losses
from .base import FeatureDistiller, loss_node


@register_distiller("NST")
class NST(FeatureDistiller):
    """Neuron selectivity transfer (Huang & Wang, 2017) on stages 1..n."""

    cfg_node = "NST"

    @staticmethod
    def defaults(c):
        c.LOSS = loss_node(50.0)  # FEAT_WEIGHT: weight of the neuron-selectivity (MMD) term

    def feature_loss(self, feats_s, feats_t, **kwargs):
        return losses.nst_loss(feats_s["feats"][1:], feats_t["feats"][1:])
