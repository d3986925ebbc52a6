"""REVIEWKD: knowledge review (Chen et al.), attention-based fusion of the student's stages.

Declares and reads mdistiller's config node ``REVIEWKD``; its learnable modules keep
mdistiller's names, so mdistiller checkpoints load."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...utils.checks import check_at_least
from ...utils.errors import ConfigError
from ..registry import register_distiller
from ..base import Need
from . import losses
from .base import FeatureDistiller, model_label, probe_features, probe_size


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
