"""Feature distillers without learnable modules: AT, NST, SP, RKD, PKT, KDSVD.

Each declares and reads mdistiller's config node of the same name and returns ``loss_ce`` and
``loss_kd`` (the weighted feature term).
"""

from yacs.config import CfgNode as CN

from ...utils.checks import check_at_least, check_non_negative, check_positive
from ...utils.errors import ConfigError
from ..registry import register_distiller
from . import losses
from .base import FeatureDistiller, loss_node, model_label, probe_features, probe_size


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


@register_distiller("NST")
class NST(FeatureDistiller):
    """Neuron selectivity transfer (Huang & Wang, 2017) on stages 1..n."""

    cfg_node = "NST"

    @staticmethod
    def defaults(c):
        c.LOSS = loss_node(50.0)  # FEAT_WEIGHT: weight of the neuron-selectivity (MMD) term

    def feature_loss(self, feats_s, feats_t, **kwargs):
        return losses.nst_loss(feats_s["feats"][1:], feats_t["feats"][1:])


@register_distiller("SP")
class SP(FeatureDistiller):
    """Similarity-preserving KD (Tung & Mori, ICCV 2019) on the last stage."""

    cfg_node = "SP"

    @staticmethod
    def defaults(c):
        c.LOSS = loss_node(3000.0)  # FEAT_WEIGHT: weight of the similarity-preserving term

    def feature_loss(self, feats_s, feats_t, **kwargs):
        return losses.sp_loss(feats_s["feats"][-1:], feats_t["feats"][-1:])


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


@register_distiller("PKT")
class PKT(FeatureDistiller):
    """Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018) on pooled features."""

    cfg_node = "PKT"

    @staticmethod
    def defaults(c):
        c.LOSS = loss_node(30000.0)  # FEAT_WEIGHT: weight of the probabilistic-transfer term

    def feature_loss(self, feats_s, feats_t, **kwargs):
        return losses.pkt_loss(feats_s["pooled_feat"], feats_t["pooled_feat"])


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
