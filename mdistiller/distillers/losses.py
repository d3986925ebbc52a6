"""Logit distillation losses: pure, vectorized functions of logits (batch x classes).

Notation: ``z_s``, ``z_t`` student and teacher logits (B x C), ``y`` targets, ``σ`` softmax
over classes, ``T`` a temperature, ``KL(p ‖ q) = Σ_c p_c (log p_c − log q_c)``.

Every function computes in the dtype of its inputs (the distillers pass float32, or float64
in tests) and returns an unweighted scalar unless said otherwise. ``temperatures`` may be a
list or a 1-D tensor; functions of several temperatures evaluate all of them in one tensor
op over a leading temperature axis (pass a tensor already on the logits' device to avoid a
host-to-device copy per call).
"""

import torch
import torch.nn.functional as F


def _kl_rows(log_q, log_p):
    """``KL(p ‖ q)`` of each row (sum over the last dim), from log-probabilities."""
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(-1)


def _temperature_axis(temperatures, like):
    """Temperatures as a (K, 1, 1) tensor with ``like``'s dtype and device."""
    return torch.as_tensor(temperatures, dtype=like.dtype, device=like.device).reshape(-1, 1, 1)


def standardize(z):
    """Logit standardization (Sun et al., CVPR 2024): each row ``(z − mean(z)) / (1e-7 + std(z))``
    over the classes, ``std`` the unbiased (n−1) standard deviation."""
    return (z - z.mean(-1, keepdim=True)) / (1e-7 + z.std(-1, keepdim=True))


def swap_logits(z, target):
    """Swap each row's target logit with its largest logit (SLD's swap).

    With ``k = argmax_c z_c``: ``swap(z)_y = z_k``, ``swap(z)_k = z_y``, other entries are
    unchanged; rows that already predict ``y`` (``k = y``) are returned as they are. The op
    is differentiable: the gradient reaching a swapped entry flows to the logit it came from.
    """
    y = target.view(-1, 1)
    k = z.argmax(dim=1, keepdim=True)
    return z.scatter(1, k, z.gather(1, y)).scatter(1, y, z.gather(1, k))


def kd_loss(student, teacher, temperature):
    """Hinton KD: ``T² · (1/B) Σ_i KL(σ(z_t,i / T) ‖ σ(z_s,i / T))``."""
    log_s = F.log_softmax(student / temperature, dim=-1)
    log_t = F.log_softmax(teacher / temperature, dim=-1)
    return _kl_rows(log_s, log_t).mean() * temperature**2


def multi_temperature_kd(student, teacher, temperatures, reduction="mean"):
    """KD summed over temperatures: ``Σ_k T_k² · (1/B) Σ_i KL(σ(z_t,i / T_k) ‖ σ(z_s,i / T_k))``.

    All temperatures are one tensor op over a stacked (K, B, C) axis. ``student`` and
    ``teacher`` are (B, C), shared by every temperature, or (K, B, C), slice ``k`` going with
    ``T_k``. ``reduction="none"`` returns the per-sample values ``Σ_k T_k² KL_ik`` (shape B),
    whose mean is the ``"mean"`` result.
    """
    T = _temperature_axis(temperatures, student)
    kl = _kl_rows(F.log_softmax(student / T, dim=-1), F.log_softmax(teacher / T, dim=-1))
    per_sample = (kl * T.view(-1, 1) ** 2).sum(0)
    return per_sample.mean() if reduction == "mean" else per_sample


def sld_loss(student, teacher, target, temperatures, student_swap=True, detach_pseudo_teacher=False):
    """Swapped Logit Distillation of one view (unweighted):

        L = Σ_T T² [ KL(σ(swap(z_t)/T) ‖ σ(z_s/T)) + [student_swap] · KL(σ(swap(z_s)/T) ‖ σ(z_s/T)) ]

    each KL a batch mean of per-sample sums. The second (pseudo-teacher) term is the student's
    own swapped prediction; SLD turns it on after epoch ``gamma`` (``student_swap = epoch >
    gamma``). The reference does not detach it, so gradient also flows through ``swap(z_s)``;
    ``detach_pseudo_teacher=True`` builds it from ``z_s.detach()`` (same value, gradient only
    through ``log σ(z_s/T)``).
    """
    loss = multi_temperature_kd(student, swap_logits(teacher, target), temperatures)
    if student_swap:
        pseudo = swap_logits(student.detach() if detach_pseudo_teacher else student, target)
        loss = loss + multi_temperature_kd(student, pseudo, temperatures)
    return loss


def dkd_loss(student, teacher, target, alpha, beta, temperature):
    """Decoupled KD (Zhao et al., CVPR 2022): ``T² (α · TCKD + β · NCKD)``, batch means.

    With ``p = σ(z/T)``: ``TCKD = KL(b_t ‖ b_s)`` on the binary split ``b = [p_y, Σ_{c≠y} p_c]``
    and ``NCKD = KL(p̂_t ‖ p̂_s)`` on the non-target distribution ``p̂ = σ(z_{c≠y} / T)``.
    Computed in log space from the gathered non-target logits (the reference's ``−1000``
    mask gives the same values up to rounding).
    """
    s, t = student / temperature, teacher / temperature
    B, C = s.shape
    y = target.view(-1, 1)
    others = torch.arange(C - 1, device=s.device).expand(B, -1)
    others = others + (others >= y)  # the C-1 non-target class indices of each row

    def split(z):
        lse = z.logsumexp(-1, keepdim=True)
        z_nt = z.gather(1, others)
        lse_nt = z_nt.logsumexp(-1, keepdim=True)
        log_binary = torch.cat([z.gather(1, y), lse_nt], 1) - lse
        return log_binary, z_nt - lse_nt

    (bin_s, nt_s), (bin_t, nt_t) = split(s), split(t)
    tckd, nckd = _kl_rows(bin_s, bin_t).mean(), _kl_rows(nt_s, nt_t).mean()
    return (alpha * tckd + beta * nckd) * temperature**2


# ---------------------------------------------------------------------------------------
# MLKD (Jin et al., "Multi-level logit distillation", CVPR 2023)
# ---------------------------------------------------------------------------------------
#: the reference distils the strong view at its first three temperatures only; for the
#: others (its 2 and 6) it repeats the weak view's logits (``PAPER_MODE`` uses the strong view)
MLKD_STRONG_TEMPERATURES = 3


def confidence_masks(teacher):
    """MLKD's masks from the teacher's probabilities ``p = σ(z_t)`` (T = 1), as floats.

    Sample mask ``m_i = [max_c p_ic ≤ median_i(max_c p_ic)]`` (B,) and class mask
    ``n_c = [Σ_i p_ic ≤ median_c(Σ_i p_ic)]`` (C,), medians being numpy's default
    (linearly interpolated) 50th percentile, not ``torch.median``.
    """
    p = teacher.softmax(-1)

    def at_most_median(x):
        return (x <= torch.quantile(x, 0.5, interpolation="linear")).to(x.dtype)

    return at_most_median(p.amax(-1)), at_most_median(p.sum(0))


def _gram_loss(x_s, x_t, mask):
    """``Σ_k Σ_ij w_ij (G_t − G_s)²_ij / n`` with ``G = x xᵀ`` (n x n per temperature k),
    ``w_ij = m_i m_j`` for a mask ``m`` (all ones when ``mask`` is None)."""
    d = (x_t @ x_t.transpose(-1, -2) - x_s @ x_s.transpose(-1, -2)).square()
    if mask is not None:
        d = d * (mask[:, None] * mask[None, :])
    return d.sum() / d.shape[-1]


def batch_correlation_loss(student, teacher, temperatures, sample_mask=None):
    """MLKD's batch-level (input correlation) alignment, summed over temperatures:

        L_batch = Σ_T (1/B) ‖G_t − G_s‖²_F,   G = p pᵀ (B x B),  p = σ(z/T).

    With ``sample_mask`` m, entry (i, j) counts only when ``m_i m_j = 1`` (still / B).
    """
    T = _temperature_axis(temperatures, student)
    return _gram_loss((student / T).softmax(-1), (teacher / T).softmax(-1), sample_mask)


def class_correlation_loss(student, teacher, temperatures, class_mask=None):
    """MLKD's class-level (category correlation) alignment, summed over temperatures:

        L_class = Σ_T (1/C) ‖M_t − M_s‖²_F,   M = pᵀ p (C x C),  p = σ(z/T).

    With ``class_mask`` n, entry (c, d) counts only when ``n_c n_d = 1`` (still / C).
    """
    T = _temperature_axis(temperatures, student)
    p_s, p_t = (student / T).softmax(-1), (teacher / T).softmax(-1)
    return _gram_loss(p_s.transpose(-1, -2), p_t.transpose(-1, -2), class_mask)


def mlkd_loss(student_weak, teacher_weak, student_strong, teacher_strong, temperatures, paper_mode=False,
              logit_stand=False):
    """MLKD's distillation terms ``(instance, class, batch)``, unweighted.

    ``logit_stand`` standardizes (:func:`standardize`) the logits of the instance (KD) terms
    only, as the logit-standardization repository does; the masks and the class and batch
    terms use the raw logits.

    Masks ``m`` (samples) and ``n`` (classes) come from the weak-view teacher
    (:func:`confidence_masks`); ``KD_v`` is :func:`multi_temperature_kd` on view ``v``.

    Reference behaviour (``paper_mode=False``, reproduces the published code):

    - instance = ``mean(m) · KD_weak + KD_strong'`` where ``KD_strong'`` uses the strong
      logits for the first :data:`MLKD_STRONG_TEMPERATURES` temperatures and the *weak*
      logits for the rest. The reference multiplies the already batch-averaged KD scalar by
      the mask and averages, so the mask only scales the term by the kept *fraction*;
    - class = ``mean(n) · L_class(weak)``, batch = ``mean(m) · L_batch(weak)`` (fraction
      scaling again); strong-view class/batch terms are computed there but never added to
      the total, so they are not computed here.

    Paper behaviour (``paper_mode=True``): the paper writes the instance loss as a sum over
    samples of the KL at every temperature and the batch/class losses as sums over Gram
    entries; here the masks select those summands (per-sample masking, which the
    reference's commented-out ``reduce=False`` points at) and every temperature sees its
    own view:

    - instance = ``(1/B) Σ_i m_i KD_weak,i + KD_strong`` with all temperatures on the
      strong view's own logits;
    - class = ``L_class(weak)`` over class pairs with ``n_c n_d = 1``, batch =
      ``L_batch(weak)`` over sample pairs with ``m_i m_j = 1``. Masked summands count as
      zero and the normalisation (1/B, 1/C) is unchanged, so all-ones masks give the
      unmasked paper losses. The weak/strong view scheme is the reference's in both modes.

    With all-ones masks and equal views the two modes agree.
    """
    sample_mask, class_mask = confidence_masks(teacher_weak)
    kd_in = [standardize(z) if logit_stand else z for z in (student_weak, teacher_weak, student_strong, teacher_strong)]
    kd_weak = multi_temperature_kd(kd_in[0], kd_in[1], temperatures, reduction="none")
    if paper_mode:
        s_strong, t_strong = kd_in[2], kd_in[3]
        kd_weak = (kd_weak * sample_mask).mean()
        cc = class_correlation_loss(student_weak, teacher_weak, temperatures, class_mask)
        bc = batch_correlation_loss(student_weak, teacher_weak, temperatures, sample_mask)
    else:
        index = torch.arange(len(temperatures), device=student_weak.device).view(-1, 1, 1)
        on_weak = index >= MLKD_STRONG_TEMPERATURES
        s_strong = torch.where(on_weak, kd_in[0], kd_in[2])
        t_strong = torch.where(on_weak, kd_in[1], kd_in[3])
        kd_weak = kd_weak.mean() * sample_mask.mean()
        cc = class_correlation_loss(student_weak, teacher_weak, temperatures) * class_mask.mean()
        bc = batch_correlation_loss(student_weak, teacher_weak, temperatures) * sample_mask.mean()
    instance = kd_weak + multi_temperature_kd(s_strong, t_strong, temperatures)
    return instance, cc, bc
