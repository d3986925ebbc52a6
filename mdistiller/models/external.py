"""Models from outside the zoo: ``timm:<name>`` and ``torchvision:<name>``.

A source is a registry entry ``(name, num_classes, image_size, pretrained) -> model``; the
model it returns is an :class:`ExternalNet`, which wraps the library's classifier (as its
``model`` submodule) and presents the zoo's ``(logits, feats)`` form without rewriting it:

- timm: stage outputs from the model's ``forward_intermediates`` (NCHW maps; every block of
  a ViT), ``pooled_feat`` from ``forward_head(pre_logits=True)``, logits from its classifier;
  models without ``forward_intermediates`` give their last feature map only.
- torchvision: ``models.feature_extraction.create_feature_extractor`` returning the last
  module of each spatial resolution (stem first), the input of the last ``nn.Linear`` as
  ``pooled_feat``, and the logits, from one traced forward.

``get_stage_channels()`` lists the channels of ``feats["feats"]``; the models have no
``get_feat_modules``/``get_bn_before_relu``, so methods that need them (OFD...) say so.
Teacher checkpoints load with or without the wrapper's ``model.`` prefix (a plain
timm/torchvision state dict, or one saved by this framework; see ``normalize_state_dict``).
``timm`` is an optional dependency (``pip install timm``): the zoo and torchvision sources
work without it.
"""

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..utils.errors import CheckpointError, ConfigError
from ..utils.registry import Registry
from .common import FeatureNet

#: source prefix -> builder ``(name, num_classes, image_size, pretrained) -> ExternalNet``
MODEL_SOURCES = Registry("model source")


def register_source(prefix):
    """Decorator registering a model source under ``prefix`` (names are ``prefix:<model>``)."""
    return MODEL_SOURCES.register(prefix)


def split_source(name):
    """``("timm", "resnet10t")`` for ``"timm:resnet10t"``; ``(None, name)`` for a zoo name."""
    prefix, sep, rest = name.partition(":")
    return (prefix, rest) if sep else (None, name)


def build_external(name, num_classes=None, image_size=224, pretrained=False):
    """Build ``<source>:<model>`` for ``num_classes`` classes and ``image_size`` inputs."""
    source, model = split_source(name)
    if not model:
        raise ConfigError(f"model name '{name}' has no model after '{source}:'; write e.g. {source}:resnet18")
    return MODEL_SOURCES[source](model, num_classes, image_size, pretrained)


class FeatureDict(dict):
    """The ``feats`` of a library model: asking for a key it lacks (``preact_feats``, the
    zoo's pre-ReLU stage outputs) is a one-line ConfigError, not a KeyError."""

    def __init__(self, name, **feats):
        super().__init__(**feats)
        self.name = name

    def __missing__(self, key):
        raise ConfigError(f"model {self.name} gives no feats['{key}'] (it has {', '.join(self)}); this method "
                          f"needs a zoo model there, or pick another method")


class ExternalNet(FeatureNet):
    """A library classifier (``self.model``) in the zoo's ``(logits, feats)`` form."""

    def __init__(self, name, model, input_size):
        super().__init__()
        self.name, self.model, self.input_size = name, model, input_size

    def normalize_state_dict(self, state):
        """A library state dict (no ``model.`` prefix) gets the wrapper's prefix."""
        if any(k.startswith("model.") for k in state):
            return state
        return {f"model.{k}": v for k, v in state.items()}

    def features(self, x):
        """``(logits, stage maps, pooled)`` of the wrapped model."""
        raise NotImplementedError

    def forward(self, x):
        logits, stages, pooled = self.features(x)
        return logits, FeatureDict(self.name, feats=list(stages), pooled_feat=pooled)

    def probe(self):
        """Sets the stage channels from one zero image of the model's input size (a model that
        cannot take that size fails here with a one-line ConfigError)."""
        self.stage_channels = [f.shape[1] for f in check_input_size(self, self.input_size, self.name)["feats"]]
        return self


@torch.no_grad()
def check_input_size(model, size, name):
    """``feats`` of ``model`` (zoo form) on one zero ``size``-pixel image, in eval mode; a
    ConfigError naming the model and the size if it cannot take such images."""
    p = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        return model(torch.zeros(1, 3, size, size, dtype=p.dtype, device=p.device))[1]
    except (RuntimeError, ValueError, AssertionError, IndexError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ConfigError(f"model {name} cannot take {size}-pixel images ({first}); use another "
                          f"DATASET.IMAGE_SIZE, DISTILLER.TEACHER_INPUT_SIZE or model") from None
    finally:
        model.train(was_training)


def resize_inputs(model, size):
    """Make ``model`` resize its (N, C, H, W) input to ``size`` x ``size`` first, on the
    input's device (bilinear; antialiased when shrinking). A forward pre-hook: the state
    dict is unchanged, feature probes see the resized shapes, and the teacher then runs
    as it is (without the BN-folded copy of ``Distiller._run_teacher``)."""

    def resize(module, args):
        x = args[0]
        if x.dim() != 4 or tuple(x.shape[-2:]) == (size, size):
            return None
        y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=size < min(x.shape[-2:]))
        return (y, *args[1:])

    model.register_forward_pre_hook(resize)
    model.input_size = size
    return model


def _library_error(name, e, how):
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    return CheckpointError(f"cannot get the pretrained weights of {name} ({first}); {how}")


# ---------------------------------------------------------------------------------------
# timm
# ---------------------------------------------------------------------------------------
class TimmNet(ExternalNet):
    def features(self, x):
        m = self.model
        if hasattr(m, "forward_intermediates"):
            final, stages = m.forward_intermediates(x)
        else:
            final = m.forward_features(x)
            stages = [final] if final.dim() == 4 else []
        pooled = m.forward_head(final, pre_logits=True)
        return m.get_classifier()(pooled), stages, pooled


def import_timm():
    try:
        import timm
    except ImportError:
        raise ConfigError("timm: model names need the timm package; run 'pip install timm' "
                          "(or pip install -e .[timm])") from None
    return timm


@register_source("timm")
def build_timm(name, num_classes=None, image_size=224, pretrained=False):
    timm = import_timm()
    label = f"timm:{name}"
    if not timm.is_model(name):
        raise ConfigError(f"timm has no model '{name}'; list them with python3 -c \"import timm; "
                          f"print(timm.list_models('*{name[:4]}*'))\"")
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    if pretrained:
        _check_pretrained_classes(label, getattr(timm.models.get_pretrained_cfg(name), "num_classes", None),
                                  num_classes)
    try:
        try:  # models with a fixed input size (ViTs, Swin...) are built for the run's size
            model = timm.create_model(name, pretrained=pretrained, img_size=image_size, **kwargs)
        except TypeError:
            model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as e:  # noqa: BLE001 - offline hub downloads fail in many ways
        if not pretrained:
            raise
        hub = getattr(timm.models.get_pretrained_cfg(name), "hf_hub_id", None)
        where = f"Hugging Face repo '{hub}'" if hub else "the timm release"
        raise _library_error(label, e, f"offline, download the weights file from {where} on a machine with "
                             f"internet and set DISTILLER.TEACHER_CKPT to it (or put it in the Hugging Face "
                             f"cache, $HF_HOME/hub)") from None
    return TimmNet(label, model, image_size).probe()


def _check_pretrained_classes(label, pretrained_classes, num_classes):
    if pretrained_classes and num_classes and pretrained_classes != num_classes:
        raise CheckpointError(
            f"DISTILLER.TEACHER_PRETRAINED gives {label} its {pretrained_classes}-class head but the dataset has "
            f"{num_classes} classes; fine-tune the head and pass that checkpoint as DISTILLER.TEACHER_CKPT")


# ---------------------------------------------------------------------------------------
# torchvision
# ---------------------------------------------------------------------------------------
#: modules that end a torchvision model's feature body
HEAD_MODULES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.Flatten, nn.Dropout, nn.Linear)
HEAD_NAMES = ("fc", "classifier", "head", "heads")


class TorchvisionNet(ExternalNet):
    def __init__(self, name, model, input_size):
        super().__init__(name, model, input_size)
        self._trace()

    def _trace(self):
        from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

        model = self.model
        body = model.features if isinstance(getattr(model, "features", None), nn.Sequential) else model
        prefix = "features." if body is not model else ""
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ConfigError(f"{self.name} has no nn.Linear classifier; use a classification model")
        nodes = get_graph_node_names(model)[1]
        head = linears[-1]
        candidates = []
        for n, child in body.named_children():  # the body's modules up to its pooling or head
            if isinstance(child, HEAD_MODULES) or n in HEAD_NAMES:
                break
            candidates.append(prefix + n)
        pooled = nodes[nodes.index(head) - 1]
        shapes = {}
        hooks = [model.get_submodule(c).register_forward_hook(
            lambda m, i, o, c=c: shapes.__setitem__(c, tuple(o.shape) if torch.is_tensor(o) else None))
            for c in candidates]
        try:
            with torch.no_grad():
                model.eval()(torch.zeros(1, 3, self.input_size, self.input_size))
        finally:
            for h in hooks:
                h.remove()
        last_of_size = {}
        for c in candidates:  # the last module of each resolution is that stage's output
            if shapes.get(c) is not None and len(shapes[c]) == 4:
                last_of_size[shapes[c][2:]] = c
        stages = list(last_of_size.values())
        returns = {c: f"stage{i}" for i, c in enumerate(stages)}
        returns.update({pooled: "pooled", nodes[-1]: "logits"})
        # a plain attribute, not a submodule: its modules are the model's, saved and moved once
        self.__dict__["extractor"] = create_feature_extractor(model, return_nodes=returns)
        self.stage_names = [returns[c] for c in stages]

    def train(self, mode=True):
        super().train(mode)
        self.extractor.train(mode)  # its train and eval graphs (stochastic depth, dropout)
        return self

    def features(self, x):
        out = self.extractor(x)
        return out["logits"], [out[s] for s in self.stage_names], out["pooled"].flatten(1)


@register_source("torchvision")
def build_torchvision(name, num_classes=None, image_size=224, pretrained=False):
    import torchvision.models as tvm

    label = f"torchvision:{name}"
    if name not in tvm.list_models():
        raise ConfigError(f"torchvision has no model '{name}'; list them with python3 -c "
                          f"\"import torchvision; print(torchvision.models.list_models())\"")
    weights = None
    if pretrained:
        weights = tvm.get_model_weights(name).DEFAULT
        _check_pretrained_classes(label, len(weights.meta.get("categories") or []), num_classes)
    kwargs = {} if num_classes is None or pretrained else {"num_classes": num_classes}
    try:
        model = tvm.get_model(name, weights=weights, **kwargs)
    except (OSError, RuntimeError) as e:
        if not pretrained:
            raise
        target = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
        raise _library_error(label, e, f"offline, download {weights.url} elsewhere and put it at {target}") from None
    return TorchvisionNet(label, model, image_size).probe()
