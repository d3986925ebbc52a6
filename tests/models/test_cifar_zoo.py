"""The CIFAR zoo against mdistiller's recorded models (tests/data/cifar_models.json.gz):
checkpoint layout, parameter count, feature shapes and logits after the deterministic fill."""

from types import SimpleNamespace

import pytest
import torch
from tests.conftest import deterministic_fill, load_reference, probe_input
from tests.models.model_checks import check_feature_api

from mdistiller.models import CIFAR_TEACHER_DIR, build_model, cifar_model_dict

REFERENCE = load_reference("cifar_models")
NAMES = list(REFERENCE)
#: mdistiller's ShuffleNets have no BN-before-ReLU list (OFD is unsupported for them)
NO_BN_BEFORE_RELU = {"ShuffleV1", "ShuffleV2"}


def layout(module):
    return [[k, list(t.shape), str(t.dtype).removeprefix("torch.")] for k, t in module.state_dict().items()]


@pytest.fixture(scope="module", params=NAMES)
def probed(request):
    """Model ``name`` built fresh, then filled, in float64 eval mode, run on the probe input."""
    name = request.param
    model = cifar_model_dict[name][0](num_classes=100)
    fresh = SimpleNamespace(layout=layout(model), num_params=sum(p.numel() for p in model.parameters()))
    deterministic_fill(model).double().eval()
    with torch.no_grad():
        logits, feats = model(probe_input(2))
    return SimpleNamespace(name=name, ref=REFERENCE[name], model=model, logits=logits, feats=feats, **vars(fresh))


def test_registry_has_exactly_the_reference_models():
    """The CIFAR zoo, plus upstream's Tiny-ImageNet MobileNetV2 (tests/models/test_tiny_imagenet_zoo.py)."""
    assert sorted(cifar_model_dict) == sorted(NAMES + ["mobilenetv2_tinyimagenet"])


@pytest.mark.parametrize("name", NAMES)
def test_teacher_checkpoint_path(name):
    ckpt = REFERENCE[name]["mdistiller_teacher_ckpt"]
    assert cifar_model_dict[name][1] == (None if ckpt is None else f"{CIFAR_TEACHER_DIR}/{ckpt}")
    if ckpt is not None:
        assert cifar_model_dict[name][1] == f"download_ckpts/cifar_teachers/{name}_vanilla/ckpt_epoch_240.pth"


def test_state_dict_layout(probed):
    """Keys, order, shapes and dtypes as the published checkpoints."""
    assert probed.layout == probed.ref["state_dict"]


def test_num_params(probed):
    assert probed.num_params == probed.ref["num_params"]


def test_probe_logits(probed):
    expected = torch.tensor(probed.ref["probe_logits"], dtype=torch.float64)
    torch.testing.assert_close(probed.logits, expected, rtol=1e-6, atol=1e-9)


def test_feature_shapes(probed):
    feats, ref = probed.feats, probed.ref
    assert sorted(feats) == sorted(ref["feats_keys"])
    assert [list(f.shape) for f in feats["feats"]] == ref["feats_shapes"]
    assert list(feats["pooled_feat"].shape) == ref["pooled_feat_shape"]
    if ref["preact_feats_shapes"] is not None:
        assert [list(f.shape) for f in feats["preact_feats"]] == ref["preact_feats_shapes"]


def test_feature_api(probed):
    bns = check_feature_api(probed.model, probed.feats, expect_bn=probed.name not in NO_BN_BEFORE_RELU)
    if bns:  # one BN per stage after the stem, as mdistiller
        assert len(bns) == len(probed.feats["feats"]) - 1


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_2", "vgg8", "MobileNetV2", "ShuffleV1", "ShuffleV2"])
def test_train_step(name):
    """Other class counts (positional too), a training forward/backward reaching every
    parameter, each BN updated once per forward, and 64x64 inputs (pooling is global)."""
    model = cifar_model_dict[name][0](10).train()
    logits, feats = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    (logits.sum() + feats["pooled_feat"].sum()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    tracked = [b.item() for k, b in model.state_dict().items() if k.endswith("num_batches_tracked")]
    assert tracked and set(tracked) == {1}
    model.eval()
    with torch.no_grad():
        logits, _ = build_model(name, "cifar", 7).eval()(torch.randn(1, 3, 64, 64))
    assert logits.shape == (1, 7)
