"""Feature distillers with learnable connectors: FITNET, OFD, VID, REVIEWKD.

The connectors are submodules named as in mdistiller (``conv_reg``, ``connectors``,
``regressors``, ``abfs``), so mdistiller distiller checkpoints load and the optimizer
finds them through ``get_learnable_parameters()``. Shapes come from one probe forward of
each model at construction; a pair the method cannot connect raises ``ConfigError``.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from yacs.config import CfgNode as CN

from ...utils.checks import check_at_least, check_positive, is_number
from ...utils.errors import ConfigError
from ..registry import register_distiller
from ..base import Need
from . import losses
from .base import ConvReg, FeatureDistiller, loss_node, model_label, probe_features, probe_size, require_methods


def check_input_size(cfg, name):
    """``name.INPUT_SIZE`` is a pair of positive ints (the feature-shape probe's input)."""
    size = list(cfg[name].INPUT_SIZE)
    if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size):
        raise ConfigError(f"{name}.INPUT_SIZE must be two positive integers (height, width), got {size}")


# ---------------------------------------------------------------------------------------
# FitNet
# ---------------------------------------------------------------------------------------
@register_distiller("FITNET")
class FitNet(FeatureDistiller):
    """FitNets (Romero et al., ICLR 2015): regress stage ``FITNET.HINT_LAYER`` to the teacher's."""

    cfg_node = "FITNET"

    @staticmethod
    def defaults(c):
        c.HINT_LAYER = 2  # index into feats["feats"] of the hinted stage (0..4)
        c.INPUT_SIZE = (32, 32)  # input size used to probe the feature shapes
        c.LOSS = loss_node(100.0)  # FEAT_WEIGHT: weight of the hint (MSE) term

    @classmethod
    def check_config(cls, cfg, used):
        super().check_config(cfg, used)
        check_input_size(cfg, "FITNET")

    def __init__(self, student, teacher, cfg):
        super().__init__(student, teacher, cfg)
        self.hint_layer = self.opts.HINT_LAYER
        shapes = [[f.shape for f in probe_features(m, self.opts.INPUT_SIZE)["feats"]] for m in (student, teacher)]
        if not -len(shapes[0]) <= self.hint_layer < min(map(len, shapes)):
            raise ConfigError(f"FITNET.HINT_LAYER = {self.hint_layer} is out of range for the "
                              f"{len(shapes[0])}-stage student; use 0..{min(map(len, shapes)) - 1}")
        s, t = (sh[self.hint_layer] for sh in shapes)
        try:
            self.conv_reg = ConvReg(s, t)
        except ValueError as e:
            raise ConfigError(f"FITNET cannot pair {model_label(cfg, 'student')} with {model_label(cfg, 'teacher')} "
                              f"at HINT_LAYER {self.hint_layer}: {e}; choose another FITNET.HINT_LAYER") from None

    def feature_loss(self, feats_s, feats_t, **kwargs):
        f_s = self.conv_reg(feats_s["feats"][self.hint_layer])
        return losses.fitnet_loss(f_s, feats_t["feats"][self.hint_layer])


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


# ---------------------------------------------------------------------------------------
# ReviewKD
# ---------------------------------------------------------------------------------------
class ABF(nn.Module):
    """ReviewKD's attention-based fusion: 1x1 conv + BN, optional fusion with the upsampled
    residual of the deeper stage (two sigmoid attention maps), 3x3 conv + BN output."""

    def __init__(self, in_channel, mid_channel, out_channel, fuse):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channel, mid_channel, kernel_size=1, bias=False),
                                   nn.BatchNorm2d(mid_channel))
        self.conv2 = nn.Sequential(nn.Conv2d(mid_channel, out_channel, kernel_size=3, padding=1, bias=False),
                                   nn.BatchNorm2d(out_channel))
        self.att_conv = nn.Sequential(nn.Conv2d(mid_channel * 2, 2, kernel_size=1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x, y=None, shape=None, out_shape=None):
        """Returns ``(output, residual)``; ``y`` is the deeper stage's residual."""
        x = self.conv1(x)
        if self.att_conv is not None:
            y = F.interpolate(y, (shape, shape), mode="nearest")
            z = self.att_conv(torch.cat([x, y], dim=1))
            x = x * z[:, :1] + y * z[:, 1:2]
        if x.shape[-1] != out_shape:
            x = F.interpolate(x, (out_shape, out_shape), mode="nearest")
        return self.conv2(x), x


@register_distiller("REVIEWKD")
class ReviewKD(FeatureDistiller):
    """Knowledge review (Chen et al., CVPR 2021): fused student stages regress the teacher's
    pre-ReLU stages and pooled feature under the hierarchical context loss, with a linear
    warm-up over ``REVIEWKD.WARMUP_EPOCHS``. The mid width is ``min(MAX_MID_CHANNEL,
    IN_CHANNELS[-1])`` (mdistiller hard-codes 512, the default)."""

    cfg_node = "REVIEWKD"
    needs = frozenset({Need.EPOCH})  # the warm-up
    loss_keys = ("CE_WEIGHT", "REVIEWKD_WEIGHT")

    @staticmethod
    def defaults(c):
        c.CE_WEIGHT = 1.0  # weight of the cross-entropy term
        c.REVIEWKD_WEIGHT = 1.0  # weight of the review (HCL) term
        c.WARMUP_EPOCHS = 20  # epochs of linear warm-up of the review term
        c.SHAPES = [1, 8, 16, 32]  # student fusion sizes, deepest (pooled) first
        c.OUT_SHAPES = [1, 8, 16, 32]  # output sizes, deepest (pooled) first
        c.IN_CHANNELS = [64, 128, 256, 256]  # student channels, shallowest first (last = pooled)
        c.OUT_CHANNELS = [64, 128, 256, 256]  # teacher channels, shallowest first (last = pooled)
        c.MAX_MID_CHANNEL = 512  # cap on the fusion width
        c.STU_PREACT = False  # fuse the student's pre-ReLU stage outputs

    @classmethod
    def check_config(cls, cfg, used):
        super().check_config(cfg, used)
        c = cfg.REVIEWKD
        check_at_least(c, "REVIEWKD", "WARMUP_EPOCHS", 1)
        check_at_least(c, "REVIEWKD", "MAX_MID_CHANNEL", 1)
        lengths = {k: len(c[k]) for k in ("SHAPES", "OUT_SHAPES", "IN_CHANNELS", "OUT_CHANNELS")}
        if len(set(lengths.values())) != 1 or not c.SHAPES:
            raise ConfigError(f"REVIEWKD.SHAPES, OUT_SHAPES, IN_CHANNELS and OUT_CHANNELS must be non-empty lists "
                              f"of one length (one entry per fused stage), got lengths {lengths}")

    def __init__(self, student, teacher, cfg):
        super().__init__(student, teacher, cfg)
        o = self.opts
        self.shapes, self.out_shapes = list(o.SHAPES), list(o.OUT_SHAPES)
        self.warmup_epochs, self.stu_preact = o.WARMUP_EPOCHS, o.STU_PREACT
        mid = min(o.MAX_MID_CHANNEL, o.IN_CHANNELS[-1])
        n = len(o.IN_CHANNELS)
        self.abfs = nn.ModuleList(ABF(o.IN_CHANNELS[i], mid, o.OUT_CHANNELS[i], i < n - 1) for i in reversed(range(n)))
        self._check(cfg, probe_features(student, probe_size(cfg)), probe_features(teacher, probe_size(cfg)))

    def _student_inputs(self, feats):
        """Student stages (post- or pre-ReLU) and the pooled feature, deepest first."""
        x = feats["preact_feats" if self.stu_preact else "feats"]
        return [feats["pooled_feat"][..., None, None], *x[::-1]]

    @staticmethod
    def _teacher_targets(feats):
        return [*feats["preact_feats"][1:], feats["pooled_feat"][..., None, None]]

    def _check(self, cfg, feats_s, feats_t):
        """ConfigError unless the features fit IN/OUT_CHANNELS and (OUT_)SHAPES."""
        o, n = self.opts, len(self.abfs)
        # student input i (deepest first) is fused at size SHAPES[i] (the first is not fused)
        got_s = [(f.shape[1], f.shape[2] if i else 1) for i, f in enumerate(self._student_inputs(feats_s)[:n])]
        want_s = [(c, s if i else 1) for i, (c, s) in enumerate(zip(o.IN_CHANNELS[::-1], self.shapes))]
        got_t = [(f.shape[1], f.shape[2]) for f in self._teacher_targets(feats_t)]
        want_t = list(zip(o.OUT_CHANNELS, self.out_shapes[::-1]))
        for role, got, want, keys in (("student", got_s, want_s, "IN_CHANNELS/SHAPES"),
                                      ("teacher", got_t, want_t, "OUT_CHANNELS/OUT_SHAPES")):
            if got != want:
                raise ConfigError(
                    f"REVIEWKD cannot use {model_label(cfg, role)}: its (channels, size) {got} do not match "
                    f"REVIEWKD.{keys} {want}; set those keys for this pair")

    def feature_loss(self, feats_s, feats_t, epoch=None, **kwargs):
        x = self._student_inputs(feats_s)
        out, res = self.abfs[0](x[0], out_shape=self.out_shapes[0])
        results = [out]
        for f, abf, shape, out_shape in zip(x[1:], self.abfs[1:], self.shapes[1:], self.out_shapes[1:]):
            out, res = abf(f, res, shape, out_shape)
            results.insert(0, out)
        warmup = min(epoch / self.warmup_epochs, 1.0)
        return warmup * losses.hcl_loss(results, self._teacher_targets(feats_t))
