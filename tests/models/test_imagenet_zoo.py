"""ImageNet models: torchvision's state dicts load strictly and give the same logits."""

import pytest
import torch
import torchvision
from tests.models.model_checks import check_feature_api

from mdistiller.models import build_model, imagenet_model_dict
from mdistiller.utils.errors import ConfigError

TORCHVISION_TWINS = {"ResNet18": "resnet18", "ResNet34": "resnet34", "ResNet50": "resnet50",
                     "ResNet101": "resnet101", "MobileNetV2": "mobilenet_v2"}


def randomize_bn(model, seed=0):
    """Non-trivial BN statistics and affine parameters (fresh models have 0/1)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            for t, lo in [(m.weight, 0.5), (m.bias, -0.2), (m.running_mean, -0.2), (m.running_var, 0.5)]:
                t.data.copy_(lo + torch.rand(t.shape, generator=g) * 0.5)
    return model


def test_registered_names():
    assert sorted(imagenet_model_dict) == sorted([*TORCHVISION_TWINS, "MobileNetV1"])


@pytest.mark.parametrize("name", TORCHVISION_TWINS)
def test_matches_torchvision(name):
    reference = randomize_bn(getattr(torchvision.models, TORCHVISION_TWINS[name])(weights=None)).eval()
    ours = build_model(name, "imagenet")
    ours.load_state_dict(reference.state_dict(), strict=True)
    assert list(ours.state_dict()) == list(reference.state_dict())
    ours.eval()
    head = reference.fc if name.startswith("ResNet") else reference.classifier
    captured = []
    head.register_forward_hook(lambda m, inputs, out: captured.append(inputs[0]))
    x = torch.sin(0.01 * torch.arange(3 * 64 * 64, dtype=torch.float32)).reshape(1, 3, 64, 64)
    with torch.no_grad():
        expected = reference(x)
        logits, feats = ours(x)
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(feats["pooled_feat"].flatten(1), captured[0].flatten(1))
    assert sorted(feats) == ["feats", "pooled_feat", "preact_feats"]
    assert [f.shape[-1] for f in feats["feats"]] == [32, 16, 8, 4, 2]
    if name.startswith("ResNet"):  # post-ReLU stage outputs over pre-ReLU preacts
        assert all(torch.equal(f, p.relu()) for f, p in zip(feats["feats"], feats["preact_feats"]))
    bns = check_feature_api(ours, feats)
    assert len(bns) == (3 if name.startswith("ResNet") else 4)  # mdistiller: stages 2-4 for ResNets


def test_mobilenet_v1_layout():
    """mdistiller's MobileNetV1: model.0 stem, model.1..13 depthwise-separable units, fc."""
    model = build_model("MobileNetV1", "imagenet").eval()
    shapes = {k: tuple(t.shape) for k, t in model.state_dict().items()}
    assert list(shapes)[:2] == ["model.0.0.weight", "model.0.1.weight"]
    assert list(shapes)[-2:] == ["fc.weight", "fc.bias"]
    assert shapes["model.0.0.weight"] == (32, 3, 3, 3)
    assert shapes["model.1.0.weight"] == (32, 1, 3, 3) and shapes["model.1.3.weight"] == (64, 32, 1, 1)
    assert shapes["model.13.4.running_var"] == (1024,) and shapes["fc.weight"] == (1000, 1024)
    assert sum(p.numel() for p in model.parameters()) == 4_231_976  # MobileNet-224 1.0 (4.2M)
    with torch.no_grad():
        logits, feats = model(torch.randn(1, 3, 64, 64))
    assert logits.shape == (1, 1000)
    assert [tuple(f.shape[1:]) for f in feats["feats"]] == [(128, 16, 16), (256, 8, 8), (512, 4, 4), (1024, 2, 2)]
    for f, pre in zip(feats["feats"], feats["preact_feats"]):
        torch.testing.assert_close(f, pre.relu())
    check_feature_api(model, feats)


def test_pretrained_argument_errors():
    """Checked before any download: wrong class count, and a model without weights."""
    with pytest.raises(ConfigError, match="1000 classes"):
        build_model("ResNet18", "imagenet", 10, pretrained=True)
    with pytest.raises(ConfigError, match="no pretrained weights"):
        build_model("MobileNetV1", "imagenet", pretrained=True)
