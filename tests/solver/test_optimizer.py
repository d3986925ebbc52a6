"""SOLVER.TYPE: the registry's optimizers against torch's own classes on the same
gradients; SOLVER.WEIGHT_DECAY_NORM_BIAS's groups; DOT keeps SGD; one-line errors."""

import pytest
import torch
import torch.nn as nn

from mdistiller.config.load import load_cfg
from mdistiller.solver.optimizer import OPTIMIZERS, build_optimizer, param_groups, register_optimizer
from mdistiller.utils.errors import ConfigError

CPU = torch.device("cpu")


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 5)
        self.pos = nn.Parameter(torch.zeros(1, 2, 4))

    def no_weight_decay(self):  # timm's convention (ViT: pos_embed, cls_token)
        return {"pos"}

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).mean((2, 3)) + self.pos.sum())


def steps(opt, model, grads):
    for g in grads:
        for p, gp in zip(model.parameters(), g):
            p.grad = gp.clone()
        opt.step()


@pytest.mark.parametrize("norm_bias", [True, False])
def test_adamw_equals_torch_adamw_on_the_same_gradients(norm_bias):
    torch.manual_seed(0)
    a = Tiny()
    b = Tiny()
    b.load_state_dict(a.state_dict())
    cfg = load_cfg(None, ["SOLVER.TYPE", "AdamW", "SOLVER.LR", "0.01", "SOLVER.WEIGHT_DECAY", "0.05",
                          "SOLVER.BETAS", "[0.8, 0.99]", "SOLVER.EPS", "1e-6",
                          "SOLVER.WEIGHT_DECAY_NORM_BIAS", str(norm_bias)])
    ours = build_optimizer(cfg, list(a.named_parameters()), CPU, module=a)
    assert isinstance(ours, torch.optim.AdamW) and ours.defaults["fused"]
    if norm_bias:
        ref_groups = [{"params": list(b.parameters())}]
    else:  # what the key means, written out: 1-D parameters and no_weight_decay() names get none
        decay = [p for n, p in b.named_parameters() if p.ndim > 1 and n != "pos"]
        rest = [p for n, p in b.named_parameters() if p.ndim <= 1 or n == "pos"]
        ref_groups = [{"params": decay}, {"params": rest, "weight_decay": 0.0}]
        assert [len(g["params"]) for g in ours.param_groups] == [2, 5]
    ref = torch.optim.AdamW(ref_groups, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05, foreach=False)
    grads = [[torch.randn_like(p) for p in a.parameters()] for _ in range(4)]
    order_a = [p for g in ours.param_groups for p in g["params"]]
    order_b = [p for g in ref.param_groups for p in g["params"]]
    steps(ours, a, grads)
    steps(ref, b, grads)
    for pa, pb in zip(order_a, order_b):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name,cls", [("SGD", torch.optim.SGD), ("Adam", torch.optim.Adam),
                                      ("RMSprop", torch.optim.RMSprop)])
def test_each_type_is_torchs_class(name, cls):
    cfg = load_cfg(None, ["SOLVER.TYPE", name])
    opt = build_optimizer(cfg, list(Tiny().named_parameters()), CPU)
    assert type(opt) is cls and opt.defaults["lr"] == cfg.SOLVER.LR
    assert opt.defaults.get("fused") is (None if name == "RMSprop" else True)


def test_default_is_the_reference_sgd_in_one_group():
    cfg = load_cfg(None, [])
    model = Tiny()
    opt = build_optimizer(cfg, list(model.parameters()), CPU)
    assert type(opt) is torch.optim.SGD and len(opt.param_groups) == 1
    g = opt.param_groups[0]
    assert (g["momentum"], g["weight_decay"], g["lr"]) == (0.9, 0.0001, 0.05)


def test_no_weight_decay_names_of_a_wrapped_module():
    outer = nn.Module()
    outer.student = Tiny()
    cfg = load_cfg(None, ["SOLVER.WEIGHT_DECAY_NORM_BIAS", "False"])
    groups = param_groups(cfg, list(outer.named_parameters()), outer)
    assert outer.student.pos in groups[1]["params"] and outer.student.conv.weight in groups[0]["params"]


def test_a_plugin_registers_an_optimizer():
    register_optimizer("PlainSGD_test", lambda cfg, groups, device: torch.optim.SGD(groups, lr=cfg.SOLVER.LR))
    try:
        cfg = load_cfg(None, ["SOLVER.TYPE", "PlainSGD_test"])
        assert isinstance(build_optimizer(cfg, list(Tiny().parameters()), CPU), torch.optim.SGD)
    finally:
        OPTIMIZERS._items.pop("PlainSGD_test")


@pytest.mark.parametrize("opts,message", [
    (["SOLVER.TYPE", "LAMB"], "SOLVER.TYPE 'LAMB' is not an optimizer"),
    (["SOLVER.TYPE", "AdamW", "SOLVER.TRAINER", "dot"], "needs SOLVER.TYPE SGD"),
    (["SOLVER.BETAS", "[0.9]"], "SOLVER.BETAS must be two numbers"),
    (["SOLVER.BETAS", "[0.9, 1.0]"], "SOLVER.BETAS must be two numbers"),
    (["SOLVER.EPS", "0"], "SOLVER.EPS must be a positive number"),
    (["SOLVER.CLIP_GRAD", "-1"], "SOLVER.CLIP_GRAD must be"),
    (["SOLVER.CLIP_GRAD", "1", "SOLVER.TRAINER", "dot"], "does not support SOLVER.CLIP_GRAD"),
    (["SOLVER.LABEL_SMOOTHING", "1.0"], "SOLVER.LABEL_SMOOTHING must be in"),
    (["SOLVER.EMA", "1.0"], "SOLVER.EMA must be a decay"),
    (["SOLVER.EMA_SELECT", "True"], "SOLVER.EMA_SELECT True selects"),
])
def test_bad_solver_keys_are_one_line_errors(opts, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_cfg(None, opts)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["SGD", "AdamW", "Adam"])
def test_fused_types_skip_a_step_on_the_device_flag(name):
    """The trainer's non-finite guard: ``found_inf`` > 0 leaves the weights and the step count
    as they were (no host synchronisation), 0 updates."""
    model = Tiny()
    opt = build_optimizer(load_cfg(None, ["SOLVER.TYPE", name]), list(model.named_parameters()), CPU)
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.found_inf = torch.tensor(1.0)
    opt.step()
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    opt.found_inf = torch.tensor(0.0)
    opt.step()
    assert not torch.equal(before[0], model.conv.weight)
