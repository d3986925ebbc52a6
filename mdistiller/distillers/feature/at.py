"""AT: attention transfer (Zagoruyko & Komodakis), on the stages' attention maps.

Declares and reads mdistiller's config node ``AT``; returns ``loss_ce`` and ``loss_kd``."""

from ...utils.checks import check_positive
from ..registry import register_distiller
from . import losses
from .base import FeatureDistiller, loss_node


@register_distiller("AT")
class AT(FeatureDistiller):
    """Attention transfer (Zagoruyko & Komodakis, ICLR 2017) on stages 1..n (``AT.P``)."""

    cfg_node = "AT"

    @staticmethod
    def defaults(c):
        c.P = 2  # power of the activations in the attention map
        c.LOSS = loss_node(1000.0)  # FEAT_WEIGHT: weight of the attention-transfer term

    @classmethod
    def check_config(cls, cfg, used):
        super().check_config(cfg, used)
        check_positive(cfg.AT, "AT", ["P"])

    def feature_loss(self, feats_s, feats_t, **kwargs):
        return losses.at_loss(feats_s["feats"][1:], feats_t["feats"][1:], self.opts.P)
