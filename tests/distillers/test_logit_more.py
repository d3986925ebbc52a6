"""Logit standardization (DISTILLER.LOGIT_STAND), SWAPKD and DISTILLER.VIEWS against the
golden values of tests/data/losses_more.json.gz and their formulas."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from tests.conftest import load_reference
from tests.distillers.test_logit_distillers import SLD_TEMPS, StandIn, make, pack, run, swap_by_permutation

from mdistiller.distillers import distiller_dict
from mdistiller.config.load import CFG, ConfigWarning, load_cfg
from mdistiller.utils.errors import ConfigError

F64 = torch.float64
CASES = load_reference("losses_more")["cases"]

pytestmark = pytest.mark.usefixtures("one_thread")


def golden_cfg(case):
    """A clone of CFG with DISTILLER.LOGIT_STAND and the method's own node set from the
    reference keys of ``case["config"]``."""
    cfg, conf, method = CFG.clone(), case["config"], case["method"]
    cfg.DISTILLER.LOGIT_STAND = conf.get("EXPERIMENT.LOGIT_STAND", False)
    if method == "LS_KD":
        cfg.KD.TEMPERATURE = conf["KD.TEMPERATURE"]
        cfg.KD.LOSS.CE_WEIGHT, cfg.KD.LOSS.KD_WEIGHT = conf["KD.LOSS.CE_WEIGHT"], conf["KD.LOSS.KD_WEIGHT"]
    elif method == "LS_MLKD":  # the LS repository's MLKD temperatures: [KD.TEMPERATURE, 3, 5, 2, 6]
        cfg.MLKD.TEMPERATURES = [conf["KD.TEMPERATURE"], 3.0, 5.0, 2.0, 6.0]
        cfg.MLKD.CE_WEIGHT, cfg.MLKD.KD_WEIGHT = conf["KD.LOSS.CE_WEIGHT"], conf["KD.LOSS.KD_WEIGHT"]
    elif method == "LS_DKD":
        for key in ("CE_WEIGHT", "ALPHA", "BETA", "T", "WARMUP"):
            cfg.DKD[key] = conf[f"DKD.{key}"]
    else:  # SWAPKD: the SLD repository's KD reads KD.TEMPERATURE and KD.LOSS.CE_WEIGHT
        cfg.SWAPKD.TEMPERATURE, cfg.SWAPKD.CE_WEIGHT = conf["KD.TEMPERATURE"], conf["KD.LOSS.CE_WEIGHT"]
    return cfg


def case_id(i):
    c = CASES[i]
    return f"{i}-{c['method']}-e{c['epoch']}-{len(c['target'])}x{len(c['student_weak'][0])}"


def test_golden_file_covers_the_new_methods():
    assert len(CASES) == 22
    assert {c["method"] for c in CASES} == {"LS_KD", "LS_DKD", "LS_MLKD", "SWAPKD"}


@pytest.mark.parametrize("index", range(len(CASES)), ids=case_id)
def test_reference_losses_and_gradients(index):
    case = CASES[index]
    name = case["method"].replace("LS_", "")
    distiller = distiller_dict[name](StandIn(0), StandIn(1), golden_cfg(case)).to(F64).train()
    logits, losses, total, grads = run(distiller, case)
    assert set(losses) == set(case["losses"])
    for key, value in case["losses"].items():
        torch.testing.assert_close(losses[key].item(), value, rtol=1e-9, atol=0, msg=key)
    torch.testing.assert_close(total.item(), case["total"], rtol=1e-9, atol=0)
    for view, grad in grads.items():
        torch.testing.assert_close(grad, torch.tensor(case[f"grad_student_{view}"], dtype=F64),
                                   rtol=1e-9, atol=1e-15, msg=view)


def test_ls_reference_key_is_translated_with_a_warning():
    with pytest.warns(ConfigWarning, match="EXPERIMENT.LOGIT_STAND = True is a reference-repo key"):
        cfg = load_cfg(None, ["DISTILLER.TYPE", "DKD", "EXPERIMENT.LOGIT_STAND", "True"])
    assert cfg.DISTILLER.LOGIT_STAND is True
    for method in ("FITNET", "NONE"):
        with pytest.raises(ConfigError, match=f"LOGIT_STAND is not implemented for {method}"):
            load_cfg(None, ["DISTILLER.TYPE", method, "DISTILLER.LOGIT_STAND", "True"])


def standardized(z):
    return (z - z.mean(1, keepdim=True)) / (1e-7 + z.std(1, unbiased=True, keepdim=True))


@pytest.mark.parametrize("epoch", [1, 240])
def test_sld_standardizes_then_swaps_both_views_and_the_pseudo_teacher(epoch):
    """SLD + LS = the README formula on standardized logits (teacher and student pseudo-
    teacher of both views), the cross-entropy on the raw ones."""
    case = next(c for c in load_reference("losses")["cases"] if c["method"] == "SLD" and len(c["target"]) == 4)
    cfg = CFG.clone()
    cfg.DISTILLER.LOGIT_STAND = True
    _, losses, _, grads = run(make("SLD", cfg), case, epoch=epoch)
    y = torch.tensor(case["target"])
    zs = {v: torch.tensor(case[f"student_{v}"], dtype=F64, requires_grad=True) for v in ("weak", "strong")}
    ce = kd = 0
    for v, z in zs.items():
        s, t = standardized(z), standardized(torch.tensor(case[f"teacher_{v}"], dtype=F64))
        ce = ce + cfg.SLD.CE_WEIGHT * F.cross_entropy(z, y)
        for T in SLD_TEMPS:
            for target in [swap_by_permutation(t, y)] + ([swap_by_permutation(s, y)] if epoch > 150 else []):
                kd = kd + cfg.SLD.KD_WEIGHT * T * T * F.kl_div(F.log_softmax(s / T, 1), F.softmax(target / T, 1),
                                                               reduction="batchmean")
    (ce + kd).backward()
    torch.testing.assert_close(losses["loss_ce"], ce, rtol=1e-12, atol=0)
    torch.testing.assert_close(losses["loss_kd"], kd, rtol=1e-9, atol=0)
    for v in zs:
        torch.testing.assert_close(grads[v], zs[v].grad, rtol=1e-9, atol=1e-15)


def test_swapkd_student_term_starts_after_gamma_and_kd_stays_mdistillers():
    case = next(c for c in CASES if c["method"] == "SWAPKD")
    cfg = CFG.clone()
    cfg.SWAPKD.GAMMA = 3
    d = make("SWAPKD", cfg)
    kd = [run(d, case, epoch=e)[1]["loss_kd"].item() for e in (3, 4)]
    assert kd[1] > kd[0]
    plain = make("KD", CFG.clone())  # mdistiller's KD: no swap, weight 0.9
    x = pack(case, "weak")
    loss = plain(image=x, target=torch.tensor(case["target"]), epoch=1)[1]["loss_kd"].item()
    assert abs(loss - kd[0]) > 1e-3


# -- DISTILLER.VIEWS -----------------------------------------------------------------------
def views_cfg(*opts):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        return load_cfg(None, list(opts))


@pytest.mark.parametrize("method", ["KD", "DKD", "SWAPKD", "NONE"])
def test_two_views_apply_a_one_view_loss_to_each_view(method):
    case = next(c for c in load_reference("losses")["cases"] if c["method"] == "SLD" and len(c["target"]) == 4)
    one = make(method, views_cfg("DISTILLER.TYPE", method))
    two = make(method, views_cfg("DISTILLER.TYPE", method, "DISTILLER.VIEWS", "2"))
    assert (one.num_views, two.num_views) == (1, 2)
    _, both, _, grads = run(two, case, epoch=30, two_view=True)
    weak = run(one, case, epoch=30, two_view=False)[1]
    strong = run(one, {**case, "student_weak": case["student_strong"], "teacher_weak": case["teacher_strong"]},
                 epoch=30, two_view=False)[1]
    for key in both:
        torch.testing.assert_close(both[key], weak[key] + strong[key], rtol=1e-12, atol=0)
    assert set(grads) == {"weak", "strong"}


def test_views_keys_conflicts_and_refusals():
    assert distiller_dict["SLD"].views_for(views_cfg("DISTILLER.VIEWS", "1")) == 1
    assert distiller_dict["SLD"].views_for(views_cfg("SLD.VIEWS", "1", "DISTILLER.VIEWS", "1")) == 1
    assert distiller_dict["KD"].views_for(views_cfg("DISTILLER.VIEWS", "2")) == 2
    assert distiller_dict["MLKD"].views_for(views_cfg()) == 2
    with pytest.raises(ConfigError, match="SLD.VIEWS = 1 and DISTILLER.VIEWS = 2 disagree"):
        views_cfg("DISTILLER.TYPE", "SLD", "SLD.VIEWS", "1", "DISTILLER.VIEWS", "2")
    with pytest.raises(ConfigError, match="MLKD trains on 2 view.*DISTILLER.VIEWS 1 is not possible"):
        views_cfg("DISTILLER.TYPE", "MLKD", "DISTILLER.VIEWS", "1")
    with pytest.raises(ConfigError, match="DISTILLER.VIEWS must be 0"):
        views_cfg("DISTILLER.VIEWS", "3")
    with pytest.raises(ConfigError, match="FITNET trains on 1 view"):
        views_cfg("DISTILLER.TYPE", "FITNET", "DISTILLER.VIEWS", "2")
