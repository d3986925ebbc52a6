"""OFD: overhaul of feature distillation (Heo et al.), pre-ReLU features through connectors.

Declares and reads mdistiller's config node ``OFD``; its learnable modules keep
mdistiller's names, so mdistiller checkpoints load."""

import math

import torch
import torch.nn as nn

from yacs.config import CfgNode as CN

from ...utils.checks import check_at_least
from ...utils.errors import ConfigError
from ..registry import register_distiller
from . import losses
from .base import FeatureDistiller, loss_node, model_label, require_methods


# ---------------------------------------------------------------------------------------
# OFD
# ---------------------------------------------------------------------------------------
class ConnectorConvBN(nn.Module):
    """One (conv k x k, BN) connector per stage, from student to teacher channels."""

    def __init__(self, s_channels, t_channels, kernel_size=1):
        super().__init__()
        self.connectors = nn.ModuleList(self._connector(s, t, kernel_size) for s, t in zip(s_channels, t_channels))

    @staticmethod
    def _connector(s_channel, t_channel, kernel_size):
        conv = nn.Conv2d(s_channel, t_channel, kernel_size, stride=1, padding=(kernel_size - 1) // 2, bias=False)
        nn.init.normal_(conv.weight, 0, math.sqrt(2.0 / (kernel_size * kernel_size * t_channel)))
        return nn.Sequential(conv, nn.BatchNorm2d(t_channel))

    def forward(self, g_s):
        return [c(f) for c, f in zip(self.connectors, g_s)]


@register_distiller("OFD")
class OFD(FeatureDistiller):
    """Overhaul of feature distillation (Heo et al., ICCV 2019) on pre-ReLU stage outputs.

    Needs ``get_stage_channels()`` on both models and ``get_bn_before_relu()`` on the
    teacher; the margins come from the teacher's BN parameters when the distiller is built
    (so load the teacher's weights first, as mdistiller does). Like mdistiller, ``train()``
    also puts the teacher in train mode: its BN layers use batch statistics.
    """

    cfg_node = "OFD"

    @staticmethod
    def defaults(c):
        c.LOSS = loss_node(0.001)  # FEAT_WEIGHT: weight of the margin (partial L2) term
        c.CONNECTOR = CN()
        c.CONNECTOR.KERNEL_SIZE = 1  # kernel size of the student-to-teacher connector convs

    @classmethod
    def check_config(cls, cfg, used):
        super().check_config(cfg, used)
        check_at_least(cfg.OFD, "OFD", "CONNECTOR.KERNEL_SIZE", 1)
        if cfg.OFD.CONNECTOR.KERNEL_SIZE % 2 == 0:
            raise ConfigError(f"OFD.CONNECTOR.KERNEL_SIZE must be odd (the connectors keep the map size), "
                              f"got {cfg.OFD.CONNECTOR.KERNEL_SIZE}")

    def __init__(self, student, teacher, cfg):
        super().__init__(student, teacher, cfg)
        require_methods("OFD", cfg, "student", student, ["get_stage_channels"])
        require_methods("OFD", cfg, "teacher", teacher, ["get_stage_channels", "get_bn_before_relu"])
        t_channels, s_channels = self._align(teacher.get_stage_channels()[1:], student.get_stage_channels()[1:])
        bns = teacher.get_bn_before_relu()
        if len(bns) != len(t_channels):
            raise ConfigError(f"OFD cannot use {model_label(cfg, 'teacher')}: {len(bns)} BN layers before ReLU "
                              f"for {len(t_channels)} distilled stages; pick another teacher or method")
        self.connectors = ConnectorConvBN(s_channels, t_channels, self.opts.CONNECTOR.KERNEL_SIZE)
        # not in mdistiller's checkpoints: a fixed function of the teacher
        self.register_buffer("margins", torch.cat([losses.ofd_margin(bn.weight, bn.bias) for bn in bns]),
                             persistent=False)
        self.margin_sizes = [bn.num_features for bn in bns]

    @staticmethod
    def _align(*lists):
        """Keep the last ``min(len)`` entries of each list."""
        n = min(len(x) for x in lists)
        return [list(x)[len(x) - n:] for x in lists]

    def train(self, mode=True):
        # mdistiller's OFD trains with the teacher in train mode too (batch statistics)
        super().train(mode)
        self.teacher.train(mode)
        return self

    def feature_loss(self, feats_s, feats_t, **kwargs):
        g_s, g_t = self._align(feats_s["preact_feats"][1:], feats_t["preact_feats"][1:])
        margins = [m.view(1, -1, 1, 1) for m in self.margins.split(self.margin_sizes)]
        return losses.ofd_loss(self.connectors(g_s), g_t, margins)

