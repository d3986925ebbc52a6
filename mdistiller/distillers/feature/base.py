"""What the feature distillers share: the CE + feature-term forward, shape probes, checks."""

import torch
import torch.nn as nn

from yacs.config import CfgNode as CN

from ...utils.checks import check_non_negative, get_key
from ...utils.errors import ConfigError, DataError
from ..base import Distiller, as_float, tree_map  # noqa: F401  (tree_map: moved, still importable here)


def _usable(t):
    """A tensor losses may use next to autograd tensors (inference tensors are cloned)."""
    return as_float(t.clone() if t.is_inference() else t)


def probe_size(cfg):
    """Spatial input size used to probe feature shapes: 224 for ImageNet, else 32."""
    return (224, 224) if "imagenet" in cfg.DATASET.TYPE.lower() else (32, 32)


@torch.no_grad()
def probe_features(model, input_size):
    """``feats`` dict of ``model`` on one zero image of ``input_size`` (eval mode, no RNG)."""
    p = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        _, feats = model(torch.zeros(1, 3, *input_size, dtype=p.dtype, device=p.device))
    finally:
        model.train(was_training)
    return feats


def model_label(cfg, role):
    """``student 'resnet8x4'`` style label for error messages."""
    return f"{role} '{cfg.DISTILLER[role.upper()]}'"


def require_methods(method, cfg, role, model, names):
    """ConfigError unless ``model`` has every method in ``names`` (e.g. get_bn_before_relu)."""
    missing = [n for n in names if not callable(getattr(model, n, None))]
    if missing:
        raise ConfigError(
            f"{method} cannot use {model_label(cfg, role)}: the model has no {', '.join(missing)}(); "
            f"pick a model from the zoo that provides it or another method"
        )


def loss_node(feat_weight, ce_weight=1.0):
    """mdistiller's ``LOSS`` node of a feature method, for its :meth:`~Distiller.defaults`."""
    node = CN()
    node.CE_WEIGHT = ce_weight  # weight of the cross-entropy term
    node.FEAT_WEIGHT = feat_weight  # weight of the method's feature term
    return node


class FeatureDistiller(Distiller):
    """CE on the student logits plus one weighted feature term (mdistiller's layout).

    Subclasses set ``cfg_node`` (their config section) with its ``defaults`` and implement
    :meth:`feature_loss`; the loss terms are ``loss_ce`` and ``loss_kd``. The method trains
    on one view: in a two-view run it uses ``image_weak``.
    """

    #: the (CE weight, feature weight) keys of the method's node (checked non-negative)
    loss_keys = ("LOSS.CE_WEIGHT", "LOSS.FEAT_WEIGHT")

    @classmethod
    def check_config(cls, cfg, used):
        check_non_negative(cfg[cls.cfg_node], cls.cfg_node, cls.loss_keys)

    def __init__(self, student, teacher, cfg):
        super().__init__(student, teacher)
        self.opts = cfg[self.cfg_node]
        self.ce_loss_weight, self.feat_loss_weight = (get_key(self.opts, k) for k in self.loss_keys)

    def teacher_features(self, image):
        """The teacher's feature dict for ``image`` (one no-grad forward), usable in losses."""
        (_, feats), = self.teacher_forward(image)
        return tree_map(_usable, feats)

    def feature_loss(self, feats_s, feats_t, **kwargs):
        """Unweighted feature term from the student and teacher feature dicts."""
        raise NotImplementedError

    def forward_train(self, image=None, target=None, image_weak=None, **kwargs):
        self.check_epoch(kwargs.get("epoch"))
        image = image_weak if image is None else image
        if image is None:
            raise DataError(f"{type(self).__name__} trains on 'image' (or 'image_weak') but the batch has neither")
        logits, feats_s = self.student(image)
        feats_t = self.teacher_features(image)
        losses = {
            "loss_ce": self.ce_loss_weight * self.ce(as_float(logits), target),
            "loss_kd": self.feat_loss_weight * self.feature_loss(
                tree_map(as_float, feats_s), feats_t, target=target, **kwargs),
        }
        return logits, losses


class ConvReg(nn.Module):
    """Convolutional regressor from a student map to a teacher map's shape (conv, BN, ReLU).

    A 3x3 stride-2 conv halves the size, a 4x4 stride-2 transposed conv doubles it, and a
    valid conv of kernel ``1 + s − t`` shrinks it; other size pairs are not supported.
    """

    def __init__(self, s_shape, t_shape, use_relu=True):
        super().__init__()
        self.use_relu = use_relu
        _, s_c, s_h, s_w = s_shape
        _, t_c, t_h, t_w = t_shape
        if s_h == 2 * t_h:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1)
        elif s_h * 2 == t_h:
            self.conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1)
        elif s_h >= t_h:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
        else:
            raise ValueError(f"student size {s_h} cannot be regressed to teacher size {t_h}")
        self.bn = nn.BatchNorm2d(t_c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.bn(self.conv(x))
        return self.relu(x) if self.use_relu else x
