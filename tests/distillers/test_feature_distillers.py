"""Behaviour of the feature distillers beyond the golden values: registration, connectors
and their parameters, pairs a method cannot serve, VID/OFD specifics, two-view runs."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mdistiller.distillers import DISTILLERS
from mdistiller.distillers.feature import losses
from mdistiller.config.load import get_default_cfg, load_cfg
from mdistiller.models import cifar_model_dict
from mdistiller.utils.errors import ConfigError

METHODS = ["FITNET", "AT", "OFD", "RKD", "KDSVD", "CRD", "NST", "PKT", "SP", "VID", "REVIEWKD"]
CONNECTORS = {"FITNET": ["conv_reg"], "OFD": ["connectors"], "VID": ["regressors"],
              "CRD": ["embed_s", "embed_t"], "REVIEWKD": ["abfs"]}


class TinyNet(nn.Module):
    """A few-stage CNN with mdistiller's model interface, for fast tests.

    Stage ``i`` is conv(stride ``strides[i]``) + BN; ``feats`` are the post-ReLU outputs of
    the stem and the stages, ``preact_feats`` the pre-ReLU ones.
    """

    def __init__(self, channels=(4, 8, 16), strides=(1, 2, 2), num_classes=5):
        super().__init__()
        self.channels = list(channels)
        self.stem = nn.Sequential(nn.Conv2d(3, channels[0], 3, padding=1, bias=False), nn.BatchNorm2d(channels[0]))
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=s, padding=1, bias=False), nn.BatchNorm2d(c_out))
            for c_in, c_out, s in zip(channels, channels[1:], strides[1:]))
        self.fc = nn.Linear(channels[-1], num_classes)

    def forward(self, x):
        pre = [self.stem(x)]
        feats = [F.relu(pre[0])]
        for stage in self.stages:
            pre.append(stage(feats[-1]))
            feats.append(F.relu(pre[-1]))
        pooled = feats[-1].mean((2, 3))
        return self.fc(pooled), {"feats": feats, "preact_feats": pre, "pooled_feat": pooled}

    def get_stage_channels(self):
        return self.channels

    def get_bn_before_relu(self):
        return [stage[1] for stage in self.stages]


class NoBNApi(TinyNet):
    get_bn_before_relu = None


def zoo(name):
    return cifar_model_dict[name][0](num_classes=100)


def build(method, student="resnet8x4", teacher="resnet32x4", opts=(), models=None):
    """``method`` on a zoo pair (or on ``models``), CRD with 20 training samples."""
    cfg = load_cfg(opts=["DISTILLER.STUDENT", student, "DISTILLER.TEACHER", teacher, *opts])
    kwargs = {"num_data": 20} if method == "CRD" else {}
    return DISTILLERS[method](*(models or (zoo(student), zoo(teacher))), cfg, **kwargs)


@pytest.fixture(scope="module")
def reference_pair_distillers():
    """Every method on one shared resnet8x4 / resnet32x4 pair."""
    torch.manual_seed(0)
    models = zoo("resnet8x4"), zoo("resnet32x4")
    return {m: build(m, models=models) for m in METHODS}


def test_methods_registered_with_their_config_node():
    cfg = get_default_cfg()
    for m in METHODS:
        assert m in DISTILLERS and m in cfg
        assert DISTILLERS[m].cfg_node == m


def test_connectors_are_learnable_extra_parameters(reference_pair_distillers):
    for method, d in reference_pair_distillers.items():
        own = [p for name in CONNECTORS.get(method, []) for p in getattr(d, name).parameters()]
        assert d.get_extra_parameters() == sum(p.numel() for p in own)
        assert (d.get_extra_parameters() > 0) == (method in CONNECTORS), method
        learnable = {id(p) for p in d.get_learnable_parameters()}
        assert {id(p) for p in own} <= learnable
        assert {id(p) for p in d.student.parameters()} <= learnable
        assert not learnable & {id(p) for p in d.teacher.parameters()}


def test_crd_memory_bank_is_checkpointed(reference_pair_distillers):
    state = reference_pair_distillers["CRD"].state_dict()
    assert state["contrast.memory_v1"].shape == (20, get_default_cfg().CRD.FEAT.DIM)
    assert not any(k.startswith("sampler.") for k in state)


@pytest.mark.parametrize("method, key", [("REVIEWKD", "IN_CHANNELS"), ("CRD", "STUDENT_DIM")])
def test_unsupported_zoo_pair_raises_config_error(method, key):
    with pytest.raises(ConfigError, match=f"{method} cannot use student 'resnet8'.*{key}"):
        build(method, "resnet8", "resnet32")


def test_kdsvd_needs_equal_stage_widths():
    with pytest.raises(ConfigError, match="KDSVD cannot pair.*stage widths"):
        DISTILLERS["KDSVD"](TinyNet(strides=(1, 2, 2)), TinyNet(strides=(1, 1, 2)), get_default_cfg())


def test_reviewkd_pair_works_with_its_keys_set():
    d = build("REVIEWKD", "resnet8", "resnet32",
              ["REVIEWKD.IN_CHANNELS", "[16,32,64,64]", "REVIEWKD.OUT_CHANNELS", "[16,32,64,64]"])
    _, losses_ = d(image=torch.randn(2, 3, 32, 32), target=torch.tensor([0, 1]), epoch=30)
    assert torch.isfinite(losses_["loss_kd"])


def test_ofd_needs_teacher_bn_before_relu():
    cfg = get_default_cfg()
    with pytest.raises(ConfigError, match="OFD.*get_bn_before_relu"):
        DISTILLERS["OFD"](TinyNet(), NoBNApi(), cfg)


def test_fitnet_rejects_unregressable_hint_sizes():
    cfg = get_default_cfg()
    with pytest.raises(ConfigError, match="FITNET.*HINT_LAYER"):
        DISTILLERS["FITNET"](TinyNet(strides=(2, 2, 2)), TinyNet(strides=(1, 1, 1)), cfg)
    cfg.FITNET.HINT_LAYER = 7
    with pytest.raises(ConfigError, match="HINT_LAYER = 7"):
        DISTILLERS["FITNET"](TinyNet(), TinyNet(), cfg)
    cfg.FITNET.HINT_LAYER = 2  # 16x16 student hint, 32x32 teacher hint: transposed conv
    d = DISTILLERS["FITNET"](TinyNet(strides=(1, 2, 2)), TinyNet(strides=(1, 1, 2)), cfg)
    assert isinstance(d.conv_reg.conv, nn.ConvTranspose2d)


def test_ofd_margins_and_train_mode_teacher():
    """Margins are E[x | x < 0] of x ~ N(bias, weight²) (−3·|weight| when P(x<0) ≤ 0.001);
    like mdistiller, train() also puts the teacher in train mode."""
    margin = losses.ofd_margin(torch.tensor([1.0, 2.0, 1.0]), torch.tensor([0.0, 0.0, 10.0]))
    assert margin.dtype == torch.float32
    torch.testing.assert_close(margin, torch.tensor([-math.sqrt(2 / math.pi), -2 * math.sqrt(2 / math.pi), -3.0]))
    d = DISTILLERS["OFD"](TinyNet(), TinyNet(channels=(4, 12, 24)), get_default_cfg()).train()
    assert d.teacher.training
    assert d.margins.shape == (12 + 24,)
    assert "margins" not in d.state_dict()
    assert not d.eval().teacher.training


def test_vid_variance_is_fixed_and_not_checkpointed():
    cfg = get_default_cfg()
    d = DISTILLERS["VID"](TinyNet(), TinyNet(channels=(4, 6, 10)), cfg)
    assert d.pred_var.shape == (6 + 10,)
    torch.testing.assert_close(d.pred_var, torch.full((16,), cfg.VID.INIT_PRED_VAR), rtol=1e-5, atol=0)
    assert all(not k.startswith("pred_var") for k in d.state_dict())
    assert all(p is not d.pred_var for p in d.get_learnable_parameters())


@pytest.mark.parametrize("method", ["AT", "NST", "SP", "RKD", "PKT", "VID", "FITNET", "OFD"])
def test_tiny_pair_forward_backward_and_two_view_batch(method):
    """Every method trains on TinyNets (different widths); a two-view batch uses its weak view."""
    torch.manual_seed(0)
    d = DISTILLERS[method](TinyNet(), TinyNet(channels=(6, 12, 24)), get_default_cfg()).double().train()
    x, y = torch.randn(4, 3, 32, 32, dtype=torch.float64), torch.tensor([0, 1, 2, 3])
    logits, one = d(image=x, target=y, epoch=1)
    _, two = d(image_weak=x, image_strong=torch.zeros_like(x), target=y, epoch=1)
    assert sorted(one) == ["loss_ce", "loss_kd"] and logits.shape == (4, 5)
    for k in one:
        torch.testing.assert_close(one[k], two[k], rtol=1e-12, atol=0)
    sum(one.values()).backward()
    assert all(p.grad is not None for p in d.student.parameters())
    assert all(p.grad is None for p in d.teacher.parameters())
