"""The pure logit losses (mdistiller/distillers/losses.py) against straightforward formulas."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mdistiller.distillers.losses import (
    batch_correlation_loss,
    class_correlation_loss,
    confidence_masks,
    dkd_loss,
    kd_loss,
    mlkd_loss,
    multi_temperature_kd,
    sld_loss,
    swap_logits,
)

F64 = torch.float64
TEMPS = [4.0, 3.0, 5.0, 2.0, 6.0]


pytestmark = pytest.mark.usefixtures("one_thread")


def logits(*shape, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*shape, generator=g, dtype=F64)


def targets(batch, classes, seed=1):
    return torch.randint(classes, (batch,), generator=torch.Generator().manual_seed(seed))


# -- straightforward formulas, written independently of the package ----------------------
def kl_batchmean(z_student, z_teacher, T):
    """T² · batch mean of KL(softmax(z_t/T) || softmax(z_s/T)), via F.kl_div."""
    return F.kl_div(F.log_softmax(z_student / T, 1), F.softmax(z_teacher / T, 1), reduction="batchmean") * T * T


def swap_loop(z, y):
    """Row by row: exchange the target value and the argmax value when they differ."""
    out = z.clone()
    for i in range(z.shape[0]):
        k = int(z[i].argmax())
        if k != int(y[i]):
            out[i, k], out[i, y[i]] = z[i, y[i]], z[i, k]
    return out


# -- swap -------------------------------------------------------------------------------
def test_swap_exchanges_target_and_argmax_only_when_wrong():
    z = logits(32, 7)
    y = targets(32, 7)
    y[:8] = z[:8].argmax(1)  # some rows already correct
    out = swap_logits(z, y)
    assert torch.equal(out, swap_loop(z, y))
    assert torch.equal(out[:8], z[:8])
    assert torch.equal(out.argmax(1), y)  # the target is the top logit afterwards
    assert torch.equal(out.sort(1).values, z.sort(1).values)  # a permutation of each row


def test_swap_routes_gradient_to_the_source_logit():
    z = torch.tensor([[0.0, 5.0, 1.0]], dtype=F64, requires_grad=True)
    y = torch.tensor([2])
    out = swap_logits(z, y)  # [0, 1, 5]
    w = torch.tensor([[1.0, 10.0, 100.0]], dtype=F64)
    (out * w).sum().backward()
    assert torch.equal(out.detach(), torch.tensor([[0.0, 1.0, 5.0]], dtype=F64))
    assert torch.equal(z.grad, torch.tensor([[1.0, 100.0, 10.0]], dtype=F64))


# -- KD -----------------------------------------------------------------------------------
def test_kd_loss_matches_kl_div():
    s, t = logits(16, 10), logits(16, 10, seed=3)
    for T in (1.0, 4.0):
        torch.testing.assert_close(kd_loss(s, t, T), kl_batchmean(s, t, T), rtol=1e-12, atol=0)


def test_multi_temperature_kd_equals_per_temperature_sum():
    s, t = logits(16, 100), logits(16, 100, seed=3)
    s.requires_grad_()
    vec = multi_temperature_kd(s, t, TEMPS)
    (g_vec,) = torch.autograd.grad(vec, s)
    per_t = sum(kd_loss(s, t, T) for T in TEMPS)
    (g_per_t,) = torch.autograd.grad(per_t, s)
    independent = sum(kl_batchmean(s, t, T) for T in TEMPS)
    torch.testing.assert_close(vec, per_t, rtol=1e-12, atol=0)
    torch.testing.assert_close(vec, independent, rtol=1e-12, atol=0)
    torch.testing.assert_close(g_vec, g_per_t, rtol=1e-12, atol=1e-15)
    # per-sample values average to the scalar; a tensor of temperatures works the same
    per_sample = multi_temperature_kd(s, t, torch.tensor(TEMPS, dtype=F64), reduction="none")
    assert per_sample.shape == (16,)
    torch.testing.assert_close(per_sample.mean(), vec, rtol=1e-12, atol=0)


def test_multi_temperature_kd_pairs_stacked_views_with_temperatures():
    s, t = logits(3, 8, 20), logits(3, 8, 20, seed=5)
    temps = [1.0, 2.0, 3.0]
    expected = sum(kl_batchmean(s[k], t[k], T) for k, T in enumerate(temps))
    torch.testing.assert_close(multi_temperature_kd(s, t, temps), expected, rtol=1e-12, atol=0)
    # a (B, C) teacher is shared by every (K, B, C) student slice
    expected = sum(kl_batchmean(s[k], t[0], T) for k, T in enumerate(temps))
    torch.testing.assert_close(multi_temperature_kd(s, t[0], temps), expected, rtol=1e-12, atol=0)


# -- SLD (the formula and the distiller are checked in test_logit_distillers.py) -----------
def test_sld_detach_keeps_value_and_changes_gradient():
    z_t, y = logits(12, 30, seed=4), targets(12, 30)
    z_s = logits(12, 30, seed=6).requires_grad_()
    temps = [1.0, 2.0, 3.0]
    values, grads = [], []
    for detach in (False, True):
        loss = sld_loss(z_s, z_t, y, temps, True, detach)
        values.append(loss)
        grads.append(torch.autograd.grad(loss, z_s)[0])
    torch.testing.assert_close(values[0], values[1], rtol=1e-14, atol=0)
    assert (grads[0] - grads[1]).abs().max() > 1e-3


# -- DKD ----------------------------------------------------------------------------------
def dkd_formula(z_s, z_t, y, alpha, beta, T):
    """DKD written out with explicit loops over rows and non-target index lists."""
    tckd = nckd = 0
    for i in range(z_s.shape[0]):
        p_s, p_t = F.softmax(z_s[i] / T, 0), F.softmax(z_t[i] / T, 0)
        b_s = torch.stack([p_s[y[i]], 1 - p_s[y[i]]])
        b_t = torch.stack([p_t[y[i]], 1 - p_t[y[i]]])
        tckd = tckd + (b_t * (b_t.log() - b_s.log())).sum()
        rest = [c for c in range(z_s.shape[1]) if c != int(y[i])]
        q_s, q_t = F.softmax(z_s[i, rest] / T, 0), F.softmax(z_t[i, rest] / T, 0)
        nckd = nckd + (q_t * (q_t.log() - q_s.log())).sum()
    return (alpha * tckd + beta * nckd) * T * T / z_s.shape[0]


@pytest.mark.parametrize("classes", [3, 50])
def test_dkd_loss_matches_formula(classes):
    z_s, z_t, y = logits(10, classes), logits(10, classes, seed=2), targets(10, classes)
    z_s.requires_grad_()
    got, want = dkd_loss(z_s, z_t, y, 1.0, 8.0, 4.0), dkd_formula(z_s, z_t, y, 1.0, 8.0, 4.0)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=0)
    torch.testing.assert_close(torch.autograd.grad(got, z_s)[0], torch.autograd.grad(want, z_s)[0],
                               rtol=1e-8, atol=1e-14)


# -- MLKD ---------------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [7, 8])
def test_confidence_masks_use_numpy_percentile(batch):
    z_t = logits(batch, 13, seed=batch)
    p = F.softmax(z_t, 1).numpy()
    conf, cls = p.max(1), p.sum(0)
    sample_mask, class_mask = confidence_masks(z_t)
    np.testing.assert_array_equal(sample_mask.numpy(), (conf <= np.percentile(conf, 50)).astype(float))
    np.testing.assert_array_equal(class_mask.numpy(), (cls <= np.percentile(cls, 50)).astype(float))
    assert 0 < sample_mask.mean() < 1 and 0 < class_mask.mean() < 1


def correlation_formula(z_s, z_t, temps, over, mask=None):
    total = 0
    for T in temps:
        p_s, p_t = F.softmax(z_s / T, 1), F.softmax(z_t / T, 1)
        if over == "class":
            p_s, p_t = p_s.t(), p_t.t()
        d = (p_t @ p_t.t() - p_s @ p_s.t()) ** 2
        if mask is not None:
            keep = mask.bool()
            d = d[keep][:, keep]
        total = total + d.sum() / p_s.shape[0]
    return total


def test_correlation_losses_match_formula():
    z_s, z_t = logits(8, 20), logits(8, 20, seed=9)
    sample_mask, class_mask = confidence_masks(z_t)
    cases = ((batch_correlation_loss, "batch", sample_mask), (class_correlation_loss, "class", class_mask))
    for fn, over, mask in cases:
        torch.testing.assert_close(fn(z_s, z_t, TEMPS), correlation_formula(z_s, z_t, TEMPS, over), rtol=1e-12, atol=0)
        torch.testing.assert_close(fn(z_s, z_t, TEMPS, mask), correlation_formula(z_s, z_t, TEMPS, over, mask),
                                   rtol=1e-12, atol=0)


def test_mlkd_paper_mode_matches_its_formula_and_differs_from_reference():
    sw, tw, ss, ts = (logits(8, 20, seed=s) for s in (1, 2, 3, 4))
    m, n = confidence_masks(tw)
    assert 0 < m.mean() < 1 and 0 < n.mean() < 1
    instance, cc, bc = mlkd_loss(sw, tw, ss, ts, TEMPS, paper_mode=True)
    per_sample = [sum(kl_batchmean(sw[i:i + 1], tw[i:i + 1], T) for T in TEMPS) for i in range(8)]
    want = sum(m[i] * per_sample[i] for i in range(8)) / 8 + sum(kl_batchmean(ss, ts, T) for T in TEMPS)
    torch.testing.assert_close(instance, want, rtol=1e-12, atol=0)
    torch.testing.assert_close(cc, correlation_formula(sw, tw, TEMPS, "class", n), rtol=1e-12, atol=0)
    torch.testing.assert_close(bc, correlation_formula(sw, tw, TEMPS, "batch", m), rtol=1e-12, atol=0)
    # the reference scales whole terms by the kept fraction and reuses weak logits for T in {2, 6}
    r_instance, r_cc, r_bc = mlkd_loss(sw, tw, ss, ts, TEMPS, paper_mode=False)
    strong = sum(kl_batchmean(ss, ts, T) for T in TEMPS[:3]) + sum(kl_batchmean(sw, tw, T) for T in TEMPS[3:])
    weak = sum(kl_batchmean(sw, tw, T) for T in TEMPS)
    torch.testing.assert_close(r_instance, m.mean() * weak + strong, rtol=1e-12, atol=0)
    torch.testing.assert_close(r_cc, n.mean() * correlation_formula(sw, tw, TEMPS, "class"), rtol=1e-12, atol=0)
    torch.testing.assert_close(r_bc, m.mean() * correlation_formula(sw, tw, TEMPS, "batch"), rtol=1e-12, atol=0)
    for paper, ref in ((instance, r_instance), (cc, r_cc), (bc, r_bc)):
        assert abs(paper - ref) > 1e-6 * abs(ref)


def test_mlkd_modes_agree_when_masks_are_all_ones_and_views_equal():
    # Both masks are all ones only when every confidence and every class sum ties with its
    # median, so the ties must be exact on every CPU: a constant teacher over 8 classes has
    # probabilities 1/8 and class sums k/8, exact in any summation order. (A circulant
    # teacher ties only mathematically: its class sums differ in the last bit with the
    # kernel's summation order, and some classes fall above the median.)
    z_t = torch.full((10, 8), 1.5, dtype=F64)
    m, n = confidence_masks(z_t)
    assert m.min() == 1 and n.min() == 1
    z_s = logits(10, 8, seed=8)
    paper = mlkd_loss(z_s, z_t, z_s, z_t, TEMPS, paper_mode=True)
    ref = mlkd_loss(z_s, z_t, z_s, z_t, TEMPS, paper_mode=False)
    for a, b in zip(paper, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
