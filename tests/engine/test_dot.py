"""DOT (SOLVER.TRAINER dot): a hand-computed two-step example, the skip flag, the config
checks, upstream mdistiller's files, and training with exact resume through the trainer."""

import os

import pytest
import torch

from mdistiller.config.load import load_cfg
from mdistiller.runs.checkpoint import load_checkpoint
from mdistiller.solver.dot import DOT, check_config
from mdistiller.utils.errors import ConfigError

from tests.engine.helpers import make_teacher, metrics, run_dir, tiny_argv, train_main, train_straight_and_resumed

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")


def two_steps(opt, w, v, u, found_inf=None):
    """loss_ce = 2w + 4u (task), loss_kd = 3w + v (distillation): constant gradients."""
    for _ in range(2):
        losses = {"loss_ce": 2 * w.sum() + 4 * u.sum(), "loss_kd": 3 * w.sum() + v.sum()}
        total = opt.loss_for_backward(losses)
        assert total.item() == pytest.approx(sum(t.item() for t in losses.values()), rel=1e-15)
        opt.zero_grad(set_to_none=True)
        total.backward()
        assert w.grad.item() == 2 and v.grad is None  # .grad holds the task gradient only
        opt.found_inf = found_inf
        opt.step()


def test_two_steps_by_hand():
    """lr 0.1, momentum 0.9, delta 0.075, weight decay 0.01; all parameters start at 1.

    w (both losses): step 1  b_task = 2 + 0.01·1 = 2.01, b_kd = 3, w = 1 − 0.201 − 0.3 = 0.499;
                     step 2  b_task = 0.825·2.01 + (2 + 0.00499) = 3.66324, b_kd = 0.975·3 + 3 = 5.925,
                             w = 0.499 − 0.366324 − 0.5925 = −0.459824.
    v (distillation only, mean momentum 0.9, decay on its buffer from the second step, as
       upstream, whose first step clones the bare gradient into the new buffer):
                     step 1  b_kd = 1, v = 0.9;
                     step 2  b_kd = 0.9·1 + (1 + 0.009) = 1.909, v = 0.9 − 0.1909 = 0.7091.
    u (task only):   step 1  b = 4.01, u = 0.599; step 2  b = 0.9·4.01 + 4.00599 = 7.61499, u = −0.162499.
    """
    w, v, u = (torch.ones(1, dtype=torch.float64, requires_grad=True) for _ in range(3))
    opt = DOT([w, v, u], lr=0.1, momentum=0.9, delta=0.075, weight_decay=0.01)
    two_steps(opt, w, v, u)
    for p, expected in ((w, -0.459824), (v, 0.7091), (u, -0.162499)):
        assert p.item() == pytest.approx(expected, rel=1e-12, abs=1e-14)
    assert opt.state[w]["momentum_buffer"].item() == pytest.approx(3.66324, rel=1e-12)
    assert opt.state[w]["momentum_kd_buffer"].item() == pytest.approx(5.925, rel=1e-12)
    assert set(opt.state[v]) == {"momentum_kd_buffer"} and set(opt.state[u]) == {"momentum_buffer"}


def test_found_inf_skips_the_step_on_the_device():
    w, v, u = (torch.ones(1, dtype=torch.float64, requires_grad=True) for _ in range(3))
    opt = DOT([w, v, u], lr=0.1, momentum=0.9, delta=0.075, weight_decay=0.01)
    two_steps(opt, w, v, u, found_inf=torch.ones(()))
    assert [p.item() for p in (w, v, u)] == [1.0, 1.0, 1.0]
    assert opt.state[w]["momentum_buffer"].item() == 0 and opt.state[w]["momentum_kd_buffer"].item() == 0


def test_delta_zero_is_sgd_on_the_summed_loss():
    torch.manual_seed(0)
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    a = torch.nn.Linear(5, 3).double()
    b = torch.nn.Linear(5, 3).double()
    b.load_state_dict(a.state_dict())
    dot = DOT(a.parameters(), lr=0.1, momentum=0.9, delta=0.0, weight_decay=0.001)
    sgd = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9, weight_decay=0.001)
    for _ in range(3):
        za, zb = a(x), b(x)
        la = {"loss_ce": torch.nn.functional.cross_entropy(za, y), "loss_kd": za.square().mean()}
        total = dot.loss_for_backward(la)
        dot.zero_grad()
        total.backward()
        dot.step()
        sgd.zero_grad()
        (torch.nn.functional.cross_entropy(zb, y) + zb.square().mean()).backward()
        sgd.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("rel,delta", [("cifar100/dot/res32x4_res8x4.yaml", 0.075), ("cifar100/dot/vgg13_vgg8.yaml", 0.075),
                                       ("cifar100/dot/res32x4_shuv2.yaml", 0.075), ("imagenet/r34_r18/dot.yaml", 0.09),
                                       ("imagenet/r50_mv1/dot.yaml", 0.09),
                                       ("tiny_imagenet/dot/r18_mv2.yaml", 0.075),
                                       ("tiny_imagenet/dot/r18_shuv2.yaml", 0.075)])
def test_upstream_dot_files_load_unchanged(rel, delta):
    cfg = load_cfg(os.path.join(CONFIGS, rel))
    assert cfg.SOLVER.TRAINER == "dot" and cfg.SOLVER.DOT.DELTA == delta and cfg.DISTILLER.TYPE == "KD"


def test_unsupported_combinations_are_refused():
    with pytest.raises(ConfigError, match="does not support SOLVER.AMP fp16"):
        load_cfg(None, ["SOLVER.TRAINER", "dot", "SOLVER.AMP", "fp16"])
    with pytest.raises(ConfigError, match=r"SOLVER.DOT.DELTA must be in \[0, SOLVER.MOMENTUM"):
        load_cfg(None, ["SOLVER.TRAINER", "dot", "SOLVER.DOT.DELTA", "0.95"])
    cfg = load_cfg(None, ["SOLVER.TRAINER", "dot"])
    with pytest.raises(ConfigError, match="does not support DistributedDataParallel"):
        check_config(cfg, world_size=2)
    assert load_cfg(None, ["SOLVER.TRAINER", "base", "SOLVER.AMP", "fp16"]).SOLVER.AMP == "fp16"


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "teacher.pth"
    make_teacher(path)
    return path


def test_dot_trains_under_bf16_autocast(tmp_path, teacher_ckpt):
    argv = tiny_argv(tmp_path, "bf16", "DISTILLER.TYPE", "DKD", "SOLVER.TRAINER", "dot", "SOLVER.AMP", "bf16",
                     "DATASET.SYNTHETIC_SIZE", "32", teacher=teacher_ckpt)
    assert train_main(argv) == 0
    state = load_checkpoint(os.path.join(run_dir(tmp_path, "bf16"), "latest"))["optimizer"]["state"]
    assert all(torch.isfinite(s["momentum_kd_buffer"]).all() and s["momentum_kd_buffer"].abs().sum() > 0
               for s in state.values() if "momentum_kd_buffer" in s)


def test_dot_trains_and_resumes_exactly(tmp_path, teacher_ckpt):
    common = ["DISTILLER.TYPE", "KD", "SOLVER.TRAINER", "dot", "EXPERIMENT.DETERMINISTIC", "True",
              "SOLVER.LR_DECAY_STAGES", "[2]"]
    train_straight_and_resumed(tmp_path, common, 2, teacher_ckpt)
    a, b = (load_checkpoint(os.path.join(run_dir(tmp_path, n), "latest")) for n in ("straight", "resumed"))
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    state = a["optimizer"]["state"]
    assert state and all({"momentum_buffer", "momentum_kd_buffer"} <= set(s) for s in state.values())
    assert [r["test_acc"] for r in metrics(tmp_path, "resumed")] == [r["test_acc"] for r in metrics(tmp_path, "straight")]
    # DOT is not SGD: the same run with the plain trainer ends elsewhere
    assert train_main(tiny_argv(tmp_path, "sgd", *common[:2], *common[4:], "SOLVER.EPOCHS", "2",
                                teacher=teacher_ckpt)) == 0
    c = load_checkpoint(os.path.join(run_dir(tmp_path, "sgd"), "latest"))["model"]
    assert not all(torch.equal(a["model"][k], c[k]) for k in c if k.startswith("student."))
