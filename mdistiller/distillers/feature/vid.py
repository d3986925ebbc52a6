"""VID: variational information distillation (Ahn et al.), per-stage regressors with a learned variance.

Declares and reads mdistiller's config node ``VID``; its learnable modules keep
mdistiller's names, so mdistiller checkpoints load."""

import math

import torch
import torch.nn as nn

from ...utils.checks import check_positive, is_number
from ...utils.errors import ConfigError
from ..registry import register_distiller
from . import losses
from .base import FeatureDistiller, loss_node, probe_features
from .connectors import check_input_size


# ---------------------------------------------------------------------------------------
# VID
# ---------------------------------------------------------------------------------------
def _conv1x1(c_in, c_out):
    return nn.Conv2d(c_in, c_out, kernel_size=1, bias=False)


@register_distiller("VID")
class VID(FeatureDistiller):
    """Variational information distillation (Ahn et al., CVPR 2019) on stages 1..n.

    As in mdistiller the per-channel variance stays at its initial value
    ``softplus(log(exp(VID.INIT_PRED_VAR − VID.EPS) − 1)) + VID.EPS`` (computed in float32):
    the reference keeps the log-scales in a plain list, so they are neither trained nor saved.
    """

    cfg_node = "VID"

    @staticmethod
    def defaults(c):
        c.LOSS = loss_node(1.0)  # FEAT_WEIGHT: weight of the variational (Gaussian NLL) term
        c.EPS = 1e-5  # floor added to the predicted variance
        c.INIT_PRED_VAR = 5.0  # initial (and, as in mdistiller, fixed) predicted variance
        c.INPUT_SIZE = (32, 32)  # input size used to probe the feature shapes

    @classmethod
    def check_config(cls, cfg, used):
        super().check_config(cfg, used)
        check_positive(cfg.VID, "VID", ["EPS"])
        if not is_number(cfg.VID.INIT_PRED_VAR) or cfg.VID.INIT_PRED_VAR <= cfg.VID.EPS:
            raise ConfigError(f"VID.INIT_PRED_VAR must be a number above VID.EPS = {cfg.VID.EPS}, "
                              f"got {cfg.VID.INIT_PRED_VAR}")
        check_input_size(cfg, "VID")

    def __init__(self, student, teacher, cfg):
        super().__init__(student, teacher, cfg)
        size = self.opts.INPUT_SIZE
        s_channels, t_channels = ([f.shape[1] for f in probe_features(m, size)["feats"][1:]]
                                  for m in (student, teacher))
        self.regressors = nn.ModuleList(
            nn.Sequential(_conv1x1(s, t), nn.ReLU(), _conv1x1(t, t), nn.ReLU(), _conv1x1(t, t))
            for s, t in zip(s_channels, t_channels))
        self.var_sizes = t_channels[:len(self.regressors)]
        init = math.log(math.exp(self.opts.INIT_PRED_VAR - self.opts.EPS) - 1.0)
        log_scale = torch.full((sum(self.var_sizes),), init, dtype=torch.float32)
        self.register_buffer("pred_var", torch.log(1.0 + torch.exp(log_scale)) + self.opts.EPS, persistent=False)

    def feature_loss(self, feats_s, feats_t, **kwargs):
        total = 0
        for regressor, var, f_s, f_t in zip(self.regressors, self.pred_var.split(self.var_sizes),
                                            feats_s["feats"][1:], feats_t["feats"][1:]):
            f_s, f_t = losses.pool_to_smaller(f_s, f_t)
            total = total + losses.vid_loss(regressor(f_s), var, f_t)
        return total
