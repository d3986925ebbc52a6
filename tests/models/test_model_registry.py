"""Model registries: lookup errors, duplicate names, registration and build_model."""

import pytest
import torch

import mdistiller.models as models
from mdistiller.models import (CIFAR_MODELS, IMAGENET_MODELS, MODEL_FAMILIES, build_model, cifar_model_dict,
                               imagenet_model_dict, register_model)
from mdistiller.utils.errors import DuplicateNameError, UnknownNameError


def test_public_names():
    assert cifar_model_dict is CIFAR_MODELS and imagenet_model_dict is IMAGENET_MODELS
    assert dict(MODEL_FAMILIES) == {"cifar": CIFAR_MODELS, "imagenet": IMAGENET_MODELS,
                                    "tiny_imagenet": models.TINY_IMAGENET_MODELS}


@pytest.mark.parametrize("family", ["cifar", "imagenet", "tiny_imagenet"])
def test_unknown_name_lists_known_names(family):
    with pytest.raises(UnknownNameError) as err:
        build_model("resnet9", family)
    message = str(err.value)
    assert "resnet9" in message
    assert all(name in message for name in MODEL_FAMILIES[family])


def test_unknown_name_suggests_close_match():
    with pytest.raises(UnknownNameError, match="did you mean 'wrn_40_2'"):
        build_model("wrn_40-2", "cifar")


def test_unknown_family_lists_families():
    with pytest.raises(UnknownNameError, match="cifar, imagenet, tiny_imagenet"):
        build_model("resnet8", "mnist")


@pytest.mark.parametrize("family, name", [("cifar", "resnet8"), ("imagenet", "ResNet18")])
def test_duplicate_registration(family, name):
    before = MODEL_FAMILIES[family][name]
    with pytest.raises(DuplicateNameError, match=name):
        register_model(name, family)(lambda num_classes=10: None)
    assert MODEL_FAMILIES[family][name] is before


def test_teacher_checkpoint_only_for_cifar():
    with pytest.raises(ValueError, match="CIFAR models only"):
        register_model("x", "imagenet", teacher_ckpt="x.pth")


def test_register_and_build(monkeypatch):
    monkeypatch.setattr(CIFAR_MODELS, "_items", dict(CIFAR_MODELS._items))  # undone after the test

    @register_model("tiny_linear", "cifar", teacher_ckpt="ckpts/tiny.pth")
    def tiny_linear(num_classes=100):
        return torch.nn.Linear(3, num_classes)

    assert cifar_model_dict["tiny_linear"] == (tiny_linear, "ckpts/tiny.pth")
    assert build_model("tiny_linear", "cifar").out_features == 100
    assert build_model("tiny_linear", "cifar", 7).out_features == 7
    assert models.model_constructor("tiny_linear") is tiny_linear


def test_default_class_counts():
    assert build_model("resnet8", "cifar").fc.out_features == 100
    assert build_model("MobileNetV1", "imagenet").fc.out_features == 1000
