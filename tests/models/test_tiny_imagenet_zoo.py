"""The Tiny-ImageNet zoo: the CIFAR zoo, except ``MobileNetV2``, which is upstream mdistiller's
``mobilenetv2_tinyimagenet`` (tests/data/tiny_imagenet_models.json.gz: its state-dict layout,
parameter count and feature shapes at 200 classes, recorded from upstream's
``models/cifar/mv2_tinyimagenet.py``)."""

import glob
import os

import pytest
import torch

from mdistiller.engine.cfg import load_cfg
from mdistiller.models import CIFAR_MODELS, TINY_IMAGENET_MODELS, build_model, register_model
from tests.conftest import REPO_ROOT, load_reference
from tests.models.model_checks import check_feature_api

REF = load_reference("tiny_imagenet_models")
TINY_CONFIGS = sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "tiny_imagenet", "**", "*.yaml"), recursive=True))


def test_mobilenetv2_tinyimagenet_is_upstreams_network():
    model = build_model("mobilenetv2_tinyimagenet", "cifar", 200)
    assert sum(p.numel() for p in model.parameters()) == REF["num_params"] == 2_497_480
    # same keys, shapes and order: upstream's checkpoints load
    assert [[k, list(t.shape), str(t.dtype).removeprefix("torch.")] for k, t in model.state_dict().items()] == \
        REF["state_dict"]
    model.train()
    logits, feats = model(torch.randn(2, 3, 64, 64))
    assert list(logits.shape) == REF["logits_shape"]
    assert [list(f.shape) for f in feats["feats"]] == REF["feats_shapes"]
    assert list(feats["pooled_feat"].shape) == REF["pooled_feat_shape"][:2]  # flattened here
    check_feature_api(model, feats, expect_bn=False)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_mobilenetv2_resolves_per_family():
    """MobileNetV2 is upstream's Tiny-ImageNet network there and mobile_half on CIFAR; every
    other name is the CIFAR zoo's, including ones registered later."""
    count = lambda family: sum(p.numel() for p in build_model("MobileNetV2", family, 200).parameters())
    assert (count("tiny_imagenet"), count("cifar")) == (2_497_480, 940_936)
    assert TINY_IMAGENET_MODELS["ResNet18"] is CIFAR_MODELS["ResNet18"]
    assert set(TINY_IMAGENET_MODELS) == set(CIFAR_MODELS)


def test_models_registered_later_in_the_cifar_zoo_serve_tiny_imagenet(monkeypatch):
    monkeypatch.setattr(CIFAR_MODELS, "_items", dict(CIFAR_MODELS._items))  # undone after the test

    @register_model("later_linear", "cifar")
    def later_linear(num_classes=100):
        return torch.nn.Linear(3, num_classes)

    assert build_model("later_linear", "tiny_imagenet", 200).out_features == 200


@pytest.mark.parametrize("path", TINY_CONFIGS, ids=lambda p: os.path.relpath(p, REPO_ROOT))
def test_tiny_imagenet_configs_build_upstreams_models(path):
    cfg = load_cfg(path)
    assert cfg.DATASET.TYPE == "tiny_imagenet" and cfg.DATASET.TINY_IMAGENET_VIEW == "rotate_flip"
    for name in {cfg.DISTILLER.STUDENT, cfg.DISTILLER.TEACHER} if cfg.DISTILLER.TYPE != "NONE" else {cfg.DISTILLER.STUDENT}:
        model = build_model(name, "tiny_imagenet", 200)
        if name == "MobileNetV2":
            assert sum(p.numel() for p in model.parameters()) == 2_497_480
