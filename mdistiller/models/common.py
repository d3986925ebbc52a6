"""Building blocks shared by the model zoo.

Every zoo model returns ``(logits, feats)`` where ``feats`` holds ``feats`` (stage outputs,
stem first), ``pooled_feat`` (the classifier input) and, where the reference defines it,
``preact_feats`` (the same stages before their last ReLU). Models also expose mdistiller's
feature API, used by the feature-based distillers:

- ``get_feat_modules()``: ``nn.ModuleList`` of the modules producing the features, in order;
- ``get_stage_channels()``: channel count of each ``feats["feats"]`` entry;
- ``get_bn_before_relu()``: the BN layers before each stage's last ReLU (OFD's margins),
  as mdistiller lists them; they line up with the *end* of ``feats``:
  ``bns[i].num_features == get_stage_channels()[-len(bns) + i]``. Models for which
  mdistiller has no such list (the ShuffleNets) do not define the method.
"""

import torch.nn as nn
import torch.nn.functional as F


def conv_bn(cin, cout, kernel=3, stride=1, groups=1, relu=True, bias=False):
    """``[Conv, BN(, ReLU)]`` as a list of modules, to splice into an ``nn.Sequential``."""
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=bias),
              nn.BatchNorm2d(cout)]
    return layers + [nn.ReLU(inplace=True)] if relu else layers


def channel_shuffle(x, groups):
    """ShuffleNet's channel shuffle: ``[N, g*c, H, W] -> [N, c*g, H, W]``."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def pool_flat(x):
    """Global average pooling to ``[N, C]`` (the reference's fixed-size pools, for any input size)."""
    return F.adaptive_avg_pool2d(x, 1).flatten(1)


def run_stage(blocks, x):
    """Run ``blocks`` (each returning ``(out, preact)``); return the last block's pair."""
    pre = None
    for block in blocks:
        x, pre = block(x)
    return x, pre


def feature_dict(feats, pooled, preacts=None):
    """The ``feats`` dict of a zoo model's forward."""
    out = {"feats": feats, "pooled_feat": pooled}
    if preacts is not None:
        out["preact_feats"] = preacts
    return out


def init_weights(model, linear_std=None, zero_linear_bias=False):
    """The reference initialisation: He-normal (fan-out) convs, unit BN; for linear layers
    ``N(0, linear_std)`` weights with zero bias, or PyTorch's default (optionally zero bias)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and (linear_std is not None or zero_linear_bias):
            if linear_std is not None:
                nn.init.normal_(m.weight, 0, linear_std)
            nn.init.zeros_(m.bias)


class FeatureNet(nn.Module):
    """Base of the zoo models. Subclasses set ``stage_channels`` and define
    ``get_feat_modules`` and, where mdistiller supports OFD for the model,
    ``get_bn_before_relu`` (absent otherwise, so callers can check with ``hasattr``)."""

    #: channel count of each ``feats["feats"]`` entry (set by subclasses)
    stage_channels = ()

    def get_stage_channels(self):
        return list(self.stage_channels)


class StagedNet(FeatureNet):
    """Stem ``conv1 -> bn1 -> ReLU`` (optionally max-pooled), stages ``layer1..layerN`` of
    blocks returning ``(out, preact)``, optional ``final`` layers, global pooling, linear head
    named ``head_name``. Subclasses build the layers and call :meth:`_set_stages`."""

    head_name = "fc"
    #: ImageNet-style stem: max pooling after it, and the BN output as its preact feature
    imagenet_stem = False

    def _set_stages(self, stages):
        for i, blocks in enumerate(stages, 1):
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
        self.num_stages = len(stages)

    def stages(self):
        return [getattr(self, f"layer{i}") for i in range(1, self.num_stages + 1)]

    def get_feat_modules(self):
        return nn.ModuleList([self.conv1, self.bn1, *self.stages()])

    def final(self, x):
        """Layers between the last stage and pooling (none by default)."""
        return x

    def forward(self, x):
        stem = self.bn1(self.conv1(x))
        x = F.relu(stem)
        feats, preacts = [x], [stem if self.imagenet_stem else x]
        if self.imagenet_stem:
            x = F.max_pool2d(x, 3, 2, 1)
        for stage in self.stages():
            x, pre = run_stage(stage, x)
            feats.append(x)
            preacts.append(pre)
        pooled = pool_flat(self.final(x))
        return getattr(self, self.head_name)(pooled), feature_dict(feats, pooled, preacts)
