"""The logit distillers (NONE, KD, DKD, MLKD, SLD) against the reference's golden values
(tests/data/losses.json.gz) and the README's formulas."""

import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from tests.conftest import load_reference

from mdistiller.distillers import DISTILLERS, distiller_dict
from mdistiller.config.load import ConfigWarning, load_cfg
from mdistiller.utils.errors import DataError

F64 = torch.float64
CASES = load_reference("losses")["cases"]
METHODS = ["NONE", "KD", "DKD", "MLKD", "SLD"]
SLD_TEMPS = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


pytestmark = pytest.mark.usefixtures("one_thread")


class StandIn(nn.Module):
    """A 'network' whose input packs logits as (B, 2, C): slot 0 student's, slot 1 teacher's.

    It returns its slot (optionally cast), so the distiller sees exactly the recorded logits
    and the gradient w.r.t. the student logits is ``input.grad[:, 0]``.
    """

    def __init__(self, slot, dtype=None):
        super().__init__()
        self.slot, self.dtype = slot, dtype

    def forward(self, x):
        z = x[:, self.slot]
        return (z if self.dtype is None else z.to(self.dtype)), {}


def make_cfg(method, config=None, *opts):
    args = ["DISTILLER.TYPE", method]
    for k, v in (config or {}).items():
        args += [k, repr(v)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)  # KD.* keys of the reference SLD/MLKD
        return load_cfg(None, args + list(opts))


def make(method, cfg, student_dtype=None, dtype=F64):
    return distiller_dict[method](StandIn(0, student_dtype), StandIn(1, student_dtype), cfg).to(dtype).train()


def pack(case, view, dtype=F64):
    s = torch.tensor(case[f"student_{view}"], dtype=dtype)
    t = torch.tensor(case[f"teacher_{view}"], dtype=dtype)
    return torch.stack([s, t], 1).requires_grad_()


def run(distiller, case, epoch=None, two_view=None, dtype=F64, one_view_key="image"):
    """forward_train + backward; returns (logits, losses, total, {view: d total / d student logits})."""
    two_view = case["two_view"] if two_view is None else two_view
    xs = {v: pack(case, v, dtype) for v in (("weak", "strong") if two_view else ("weak",))}
    kw = {"image_weak": xs["weak"], "image_strong": xs["strong"]} if two_view else {one_view_key: xs["weak"]}
    target = torch.tensor(case["target"])
    logits, losses = distiller(target=target, epoch=case["epoch"] if epoch is None else epoch, **kw)
    total = sum(losses.values())
    total.backward()
    for x in xs.values():  # nothing flows into the teacher's slot
        assert x.grad[:, 1].abs().max() == 0
    return logits, losses, total, {v: x.grad[:, 0] for v, x in xs.items()}


def case_id(i):
    c = CASES[i]
    return f"{i}-{c['method']}-e{c['epoch']}-{len(c['target'])}x{len(c['student_weak'][0])}"


# -- golden values ------------------------------------------------------------------------
def test_golden_file_covers_all_methods():
    assert len(CASES) == 24
    assert {c["method"] for c in CASES} == {"SLD", "MLKD", "KD", "DKD"}


@pytest.mark.parametrize("index", range(len(CASES)), ids=case_id)
def test_reference_losses_and_gradients(index):
    case = CASES[index]
    distiller = make(case["method"], make_cfg(case["method"], case["config"]))
    logits, losses, total, grads = run(distiller, case)
    assert torch.equal(logits, torch.tensor(case["student_weak"], dtype=F64))
    assert set(losses) == set(case["losses"])
    for name, value in case["losses"].items():
        assert losses[name].dtype == F64
        torch.testing.assert_close(losses[name].item(), value, rtol=1e-9, atol=0, msg=name)
    torch.testing.assert_close(total.item(), case["total"], rtol=1e-9, atol=0)
    for view, grad in grads.items():
        torch.testing.assert_close(grad, torch.tensor(case[f"grad_student_{view}"], dtype=F64),
                                   rtol=1e-9, atol=1e-15, msg=view)


# -- SLD against the README's formula ---------------------------------------------------
def swap_by_permutation(z, y):
    """README swap, written as a per-row index permutation exchanging y and argmax."""
    rows = torch.arange(z.shape[0])
    k = z.argmax(1)
    idx = torch.arange(z.shape[1]).repeat(z.shape[0], 1)
    idx[rows, y], idx[rows, k] = k, y
    return z.gather(1, idx)


def sld_view_formula(z_s, z_t, y, kd_weight, student_swap, detach):
    pseudo = swap_by_permutation(z_s.detach() if detach else z_s, y)
    total = 0
    for T in SLD_TEMPS:
        log_s = F.log_softmax(z_s / T, 1)
        for target in [swap_by_permutation(z_t, y)] + ([pseudo] if student_swap else []):
            total = total + kd_weight * T * T * F.kl_div(log_s, F.softmax(target / T, 1), reduction="batchmean")
    return total


def sld_expected(case, views, epoch, gamma, detach):
    """(losses dict, {view: grad}) of the README formula, gradients by autograd."""
    y = torch.tensor(case["target"])
    cfg = make_cfg("SLD", case["config"])
    zs = {v: torch.tensor(case[f"student_{v}"], dtype=F64, requires_grad=True) for v in views}
    ce = sum(cfg.SLD.CE_WEIGHT * F.cross_entropy(zs[v], y) for v in views)
    kd = sum(sld_view_formula(zs[v], torch.tensor(case[f"teacher_{v}"], dtype=F64), y, cfg.SLD.KD_WEIGHT,
                              epoch > gamma, detach) for v in views)
    (ce + kd).backward()
    return {"loss_ce": ce, "loss_kd": kd}, {v: z.grad for v, z in zs.items()}


SLD_CASE = next(c for c in CASES if c["method"] == "SLD" and c["epoch"] == 240 and len(c["target"]) == 4)


@pytest.mark.parametrize("views", [("weak",), ("weak", "strong")], ids=["one-view", "two-view"])
@pytest.mark.parametrize("detach", [False, True], ids=["attached", "detached"])
@pytest.mark.parametrize("epoch", [1, 240])
def test_sld_matches_readme_formula(views, detach, epoch):
    cfg = make_cfg("SLD", SLD_CASE["config"], "SLD.VIEWS", str(len(views)), "SLD.DETACH_PSEUDO_TEACHER", str(detach))
    distiller = make("SLD", cfg)
    assert distiller.num_views == DISTILLERS["SLD"].views_for(cfg) == len(views)
    _, losses, _, grads = run(distiller, SLD_CASE, epoch=epoch, two_view=len(views) == 2)
    want, want_grads = sld_expected(SLD_CASE, views, epoch, 150, detach)
    for name in ("loss_ce", "loss_kd"):
        torch.testing.assert_close(losses[name], want[name].detach(), rtol=1e-12, atol=0)
    for v in views:
        torch.testing.assert_close(grads[v], want_grads[v], rtol=1e-9, atol=1e-15)


def test_sld_one_view_accepts_image_weak():
    distiller = make("SLD", make_cfg("SLD", SLD_CASE["config"], "SLD.VIEWS", "1"))
    a = run(distiller, SLD_CASE, two_view=False, one_view_key="image")[1]
    b = run(distiller, SLD_CASE, two_view=False, one_view_key="image_weak")[1]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sld_detach_flag_keeps_value_changes_gradient():
    out = {}
    for detach in (False, True):
        cfg = make_cfg("SLD", SLD_CASE["config"], "SLD.DETACH_PSEUDO_TEACHER", str(detach))
        _, losses, total, grads = run(make("SLD", cfg), SLD_CASE, epoch=240)
        out[detach] = total, grads
    torch.testing.assert_close(out[False][0], out[True][0], rtol=1e-14, atol=0)
    for v in ("weak", "strong"):
        assert (out[False][1][v] - out[True][1][v]).abs().max() > 1e-6
        # the attached gradient is the reference's
        torch.testing.assert_close(out[False][1][v], torch.tensor(SLD_CASE[f"grad_student_{v}"], dtype=F64),
                                   rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("gamma, epoch", [(None, 150), (None, 151), (3, 3), (3, 4), (0, 1)])
def test_sld_student_swap_gate_is_strictly_after_gamma(gamma, epoch):
    opts = [] if gamma is None else ["SLD.GAMMA", str(gamma)]
    cfg = make_cfg("SLD", SLD_CASE["config"], *opts)
    gamma = 150 if gamma is None else gamma
    assert cfg.SLD.GAMMA == gamma
    _, losses, _, _ = run(make("SLD", cfg), SLD_CASE, epoch=epoch)
    # the formula with the student term off (at epoch gamma) and on (at gamma + 1)
    formula = {on: sld_expected(SLD_CASE, ("weak", "strong"), gamma + on, gamma, False)[0]["loss_kd"].detach()
               for on in (False, True)}
    torch.testing.assert_close(losses["loss_kd"], formula[epoch > gamma], rtol=1e-12, atol=0)
    assert abs(losses["loss_kd"] - formula[epoch <= gamma]) > 1e-3


# -- MLKD paper mode ----------------------------------------------------------------------
def test_mlkd_paper_mode_changes_the_masked_terms():
    case = next(c for c in CASES if c["method"] == "MLKD")
    ref = run(make("MLKD", make_cfg("MLKD", case["config"])), case)[1]
    paper = run(make("MLKD", make_cfg("MLKD", case["config"], "MLKD.PAPER_MODE", "True")), case)[1]
    torch.testing.assert_close(paper["loss_ce"], ref["loss_ce"], rtol=0, atol=0)
    for name in ("loss_kd", "loss_cc", "loss_bc"):
        assert abs(paper[name] - ref[name]) > 1e-6 * abs(ref[name]), name


def test_dkd_aug_is_dkd_summed_over_the_two_views():
    """DKD_aug (the SLD repository's ``dkd/res32x4_res8x4_aug.yaml``) trains on two views;
    each term is DKD's on the weak view plus DKD's on the strong view."""
    case = next(c for c in CASES if c["method"] == "DKD")
    reverse = {k: [row[::-1] for row in case[f"{who}_weak"]] for k, who in (("s", "student"), ("t", "teacher"))}
    two = {**case, "two_view": True, "student_strong": reverse["s"], "teacher_strong": reverse["t"]}
    strong_only = {**case, "student_weak": reverse["s"], "teacher_weak": reverse["t"]}
    cfg = make_cfg("DKD_aug", case["config"])
    assert DISTILLERS["DKD_aug"].views_for(cfg) == 2
    logits, losses, _, grads = run(make("DKD_aug", cfg), two)
    dkd_cfg = make_cfg("DKD", case["config"])
    _, weak, _, weak_grads = run(make("DKD", dkd_cfg), case, two_view=False)
    _, strong, _, strong_grads = run(make("DKD", dkd_cfg), strong_only, two_view=False)
    assert sorted(losses) == sorted(weak) == ["loss_ce", "loss_kd"]
    for k in losses:
        torch.testing.assert_close(losses[k], weak[k] + strong[k], rtol=1e-12, atol=0)
    torch.testing.assert_close(grads["weak"], weak_grads["weak"], rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(grads["strong"], strong_grads["weak"], rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(logits, torch.tensor(case["student_weak"], dtype=F64))


# -- the distiller contract ----------------------------------------------------------------
def test_registry_holds_the_logit_methods():
    assert set(METHODS) <= set(DISTILLERS)
    assert distiller_dict is DISTILLERS
    cfg = make_cfg("SLD")
    assert [DISTILLERS[m].views_for(cfg) for m in METHODS] == [1, 1, 1, 2, 2]
    assert DISTILLERS["SLD"].views_for(make_cfg("SLD", None, "SLD.VIEWS", "1")) == 1


def test_none_is_cross_entropy_only_and_ignores_the_teacher():
    case = next(c for c in CASES if c["method"] == "KD")
    for teacher in (None, StandIn(1)):
        distiller = distiller_dict["NONE"](StandIn(0), teacher, make_cfg("NONE")).double().train()
        assert distiller.teacher is None
        logits, losses, _, grads = run(distiller, case)
        assert set(losses) == {"loss_ce"}
        z = torch.tensor(case["student_weak"], dtype=F64, requires_grad=True)
        want = F.cross_entropy(z, torch.tensor(case["target"]))
        want.backward()
        torch.testing.assert_close(losses["loss_ce"], want.detach(), rtol=1e-14, atol=0)
        torch.testing.assert_close(grads["weak"], z.grad, rtol=1e-12, atol=1e-16)


def _other_nodes(method):
    """Overrides of every other method's node (KD.* feeds SLD/MLKD, so it is kept for them)."""
    nodes = {"KD": ["KD.TEMPERATURE", "7.0", "KD.LOSS.KD_WEIGHT", "5.0"],
             "DKD": ["DKD.BETA", "2.0", "DKD.T", "2.0", "DKD.WARMUP", "1"],
             "MLKD": ["MLKD.KD_WEIGHT", "5.0", "MLKD.TEMPERATURES", "[1.0]", "MLKD.PAPER_MODE", "True"],
             "SLD": ["SLD.KD_WEIGHT", "5.0", "SLD.GAMMA", "0", "SLD.DETACH_PSEUDO_TEACHER", "True"]}
    skip = {method, "KD"} if method in ("SLD", "MLKD") else {method}
    return [x for node, opts in nodes.items() if node not in skip for x in opts]


@pytest.mark.parametrize("method", ["KD", "DKD", "MLKD", "SLD"])
def test_each_method_reads_only_its_own_node(method):
    case = next(c for c in CASES if c["method"] == method)
    a = run(make(method, make_cfg(method, case["config"])), case)[1]
    b = run(make(method, make_cfg(method, case["config"], *_other_nodes(method))), case)[1]
    assert all(torch.equal(a[k], b[k]) for k in a)


class TinyNet(nn.Module):
    def __init__(self, seed, classes=5):
        super().__init__()
        torch.manual_seed(seed)
        self.fc, self.bn = nn.Linear(12, classes), nn.BatchNorm1d(classes)

    def forward(self, x):
        z = self.bn(self.fc(x.flatten(1)))
        return z, {"feats": [z], "pooled_feat": x.flatten(1)}


@pytest.mark.parametrize("method", METHODS[1:])
def test_teacher_is_frozen_in_eval_and_outside_autograd(method, monkeypatch):
    student, teacher = TinyNet(0), TinyNet(1)
    distiller = distiller_dict[method](student, teacher, make_cfg(method)).train()
    assert not teacher.training and student.training
    assert not any(p.requires_grad for p in teacher.parameters())
    learnable = {id(p) for p in distiller.get_learnable_parameters()}
    assert learnable == {id(p) for p in student.parameters()}
    running = teacher.bn.running_mean.clone()

    seen, calls = [], {"teacher": [], "student": []}
    original = distiller.teacher_logits

    def spy(*views):
        out = original(*views)
        seen.extend(out)
        return out

    monkeypatch.setattr(distiller, "teacher_logits", spy)
    teacher.register_forward_hook(lambda m, i, o: calls["teacher"].append(i[0].shape[0]))
    student.register_forward_hook(lambda m, i, o: calls["student"].append(i[0].shape[0]))

    x = torch.randn(2, 6, 12)
    views = {"image_weak": x[0], "image_strong": x[1]} if distiller.num_views == 2 else {"image": x[0]}
    logits, losses = distiller(target=torch.tensor([0, 1, 2, 3, 4, 0]), epoch=240, **views)
    sum(losses.values()).backward()

    assert calls == {"teacher": [6 * distiller.num_views], "student": [6] * distiller.num_views}
    assert len(seen) == distiller.num_views
    for t in seen:
        assert not t.requires_grad and t.grad_fn is None and not torch.is_inference(t)
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())
    assert torch.equal(teacher.bn.running_mean, running)
    assert logits.shape == (6, 5) and logits.requires_grad


def test_missing_views_and_epoch_are_clear_errors():
    x = torch.zeros(2, 2, 5)
    y = torch.tensor([0, 1])
    with pytest.raises(DataError, match="image_weak and image_strong"):
        make("MLKD", make_cfg("MLKD"))(image=x, target=y, epoch=1)
    with pytest.raises(DataError, match="image_weak and image_strong"):
        make("SLD", make_cfg("SLD"))(image=x, target=y, epoch=1)
    with pytest.raises(TypeError, match="epoch"):
        make("SLD", make_cfg("SLD"))(image_weak=x, image_strong=x, target=y)
    with pytest.raises(DataError, match="image"):
        make("KD", make_cfg("KD"))(target=y)


def test_eval_mode_returns_student_logits():
    distiller = make("SLD", make_cfg("SLD")).eval()
    x = torch.randn(3, 2, 7, dtype=F64)
    assert torch.equal(distiller(image=x), x[:, 0])


# -- mixed precision ----------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_losses_are_float32_under_bf16_autocast(method):
    """bf16 student/teacher logits under CPU autocast give float32 losses that equal the same
    computation without autocast (on the same bf16 logits, upcast) to 1e-5 relative: nothing is
    downcast to bf16 (autocast would run MLKD's matmuls in bf16, ~1e-2 off). The bf16 rounding
    of the logits keeps them within 5e-2 of the float64 reference values."""
    case = next(c for c in CASES if c["method"] == {"NONE": "KD"}.get(method, method))
    cfg = make_cfg(method, case["config"] if method != "NONE" else None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = run(make(method, cfg, torch.bfloat16, torch.float32), case, dtype=torch.float32)[1]
    plain = run(make(method, cfg, torch.bfloat16, torch.float32), case, dtype=torch.float32)[1]
    exact = run(make(method, cfg), case)[1]
    assert set(amp) == set(plain) == set(exact)
    for name in amp:
        assert amp[name].dtype == torch.float32, name
        torch.testing.assert_close(amp[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)
        torch.testing.assert_close(amp[name].double(), exact[name], rtol=5e-2, atol=1e-4, msg=name)
