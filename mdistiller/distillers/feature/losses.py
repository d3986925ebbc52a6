"""Feature distillation losses: pure functions of student/teacher features.

Notation: ``f_s``, ``f_t`` student and teacher feature maps (B x C x H x W) or vectors
(B x D); ``g_s``, ``g_t`` lists of such maps, one per stage. Every function returns an
unweighted scalar in the dtype of its inputs (except :func:`kdsvd_loss`, which, like the
reference, runs in float32) and reproduces mdistiller's formula, including its quirks
(noted where they matter). Teacher features carry no gradient.
"""

import math

import torch
import torch.nn.functional as F


def pool_to_smaller(f_s, f_t):
    """Average-pool the spatially larger of two maps to the other's (square) size."""
    s_h, t_h = f_s.shape[2], f_t.shape[2]
    if s_h > t_h:
        f_s = F.adaptive_avg_pool2d(f_s, (t_h, t_h))
    elif s_h < t_h:
        f_t = F.adaptive_avg_pool2d(f_t, (s_h, s_h))
    return f_s, f_t


# ---------------------------------------------------------------------------------------
# Map-matching losses
# ---------------------------------------------------------------------------------------
def fitnet_loss(f_s, f_t):
    """FitNets hint loss: mean squared error between the regressed student map and the teacher's."""
    return F.mse_loss(f_s, f_t)


def attention_map(f, p):
    """AT's spatial attention: ``normalize(mean_c f^p)`` flattened per sample (B x HW)."""
    return F.normalize(f.pow(p).mean(1).reshape(f.shape[0], -1))


def at_loss(g_s, g_t, p):
    """Attention transfer: ``Σ_stages mean((a_s − a_t)²)`` of :func:`attention_map` (after pooling)."""
    total = 0
    for f_s, f_t in zip(g_s, g_t):
        f_s, f_t = pool_to_smaller(f_s, f_t)
        total = total + (attention_map(f_s, p) - attention_map(f_t, p)).pow(2).mean()
    return total


def _poly_kernel_mean(a, b):
    """Mean over (batch, i, j) of ``<a_i, b_j>²`` for rows of (B x C x N) tensors."""
    return torch.bmm(b, a.transpose(1, 2)).pow(2).mean()


def nst_loss(g_s, g_t):
    """Neuron selectivity transfer: squared MMD with the kernel ``k(x, y) = <x, y>²``.

    Each channel's spatial response (L2-normalised over H·W) is a sample; per stage
    ``mean k(t, t) + mean k(s, s) − 2 mean k(s, t)``, summed over stages.
    """
    total = 0
    for f_s, f_t in zip(g_s, g_t):
        f_s, f_t = pool_to_smaller(f_s, f_t)
        f_s = F.normalize(f_s.flatten(2), dim=2)
        f_t = F.normalize(f_t.flatten(2), dim=2)
        total = total + (_poly_kernel_mean(f_t, f_t).detach() + _poly_kernel_mean(f_s, f_s)
                         - 2 * _poly_kernel_mean(f_s, f_t))
    return total


def sp_loss(g_s, g_t):
    """Similarity preserving: ``Σ_stages ‖G_t − G_s‖²_F / B²`` of row-normalised Gram matrices."""
    total = 0
    for f_s, f_t in zip(g_s, g_t):
        bsz = f_s.shape[0]
        f_s, f_t = f_s.reshape(bsz, -1), f_t.reshape(bsz, -1)
        g_s_ = F.normalize(f_s @ f_s.t())
        g_t_ = F.normalize(f_t @ f_t.t())
        total = total + (g_t_ - g_s_).pow(2).sum() / (bsz * bsz)
    return total


def ofd_margin(bn_weight, bn_bias):
    """OFD's per-channel margin: ``E[x | x < 0]`` of ``x ~ N(bias, |weight|²)`` (float32).

    When ``P(x < 0) ≤ 0.001`` the margin is ``−3|weight|``. Computed in float64 and stored
    in float32, as the reference.
    """
    s = bn_weight.detach().double().abs()
    m = bn_bias.detach().double()
    cdf = torch.special.ndtr(-m / s)
    margin = -s * torch.exp(-((m / s) ** 2) / 2) / math.sqrt(2 * math.pi) / cdf + m
    return torch.where(cdf > 0.001, margin, -3 * s).float()


def ofd_feat_loss(source, target, margin):
    """OFD's partial L2 between a connected student pre-activation and the teacher's.

    Student values are pulled towards the teacher where the teacher is positive, towards
    ``target`` where it lies in ``(margin, 0]`` and the student is above it, and down to
    ``margin`` where the teacher is at or below the margin and the student above it.
    Sum over (C, H, W) of the batch mean. ``margin`` is (1 x C x 1 x 1).
    """
    margin = margin.to(source)
    loss = ((source - margin) ** 2 * ((source > margin) & (target <= margin))
            + (source - target) ** 2 * ((source > target) & (target > margin) & (target <= 0))
            + (source - target) ** 2 * (target > 0))
    return loss.abs().mean(0).sum()


def ofd_loss(g_s, g_t, margins):
    """OFD over stages: stage ``i`` of ``n`` weighted ``1 / 2^(n−1−i)``; the teacher map is
    average-pooled to the student's size."""
    n = len(g_s)
    total = 0
    for i, (f_s, f_t, margin) in enumerate(zip(g_s, g_t, margins)):
        f_t = F.adaptive_avg_pool2d(f_t, f_s.shape[-2:]).detach()
        total = total + ofd_feat_loss(f_s, f_t, margin) / 2 ** (n - i - 1)
    return total


def vid_loss(pred_mean, pred_var, f_t):
    """VID's Gaussian negative log-likelihood ``mean(½((μ − f_t)² / σ² + log σ²))``.

    ``pred_mean`` is the regressed student map, ``pred_var`` the per-channel variance (C,).
    """
    pred_var = pred_var.view(1, -1, 1, 1).to(pred_mean)
    return (0.5 * ((pred_mean - f_t) ** 2 / pred_var + torch.log(pred_var))).mean()


def hcl_loss(g_s, g_t):
    """ReviewKD's hierarchical context loss: per stage, the MSE at full size plus the MSE
    after average-pooling to 4x4, 2x2, 1x1 (levels smaller than the map only), weighted
    1/2, 1/4, 1/8 and normalised by the weights' sum; summed over stages."""
    total = 0
    for f_s, f_t in zip(g_s, g_t):
        h = f_s.shape[2]
        loss, weight, norm = F.mse_loss(f_s, f_t), 1.0, 1.0
        for level in (4, 2, 1):
            if level >= h:
                continue
            weight /= 2.0
            loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(f_s, (level, level)),
                                              F.adaptive_avg_pool2d(f_t, (level, level)))
            norm += weight
        total = total + loss / norm
    return total


# ---------------------------------------------------------------------------------------
# Relation losses (pooled features, B x D)
# ---------------------------------------------------------------------------------------
def pairwise_distance(e, squared=False, eps=1e-12):
    """Euclidean distances between the rows of ``e`` (clamped at ``eps`` before the root),
    with a zero diagonal."""
    sq = e.pow(2).sum(1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps)
    if not squared:
        d = d.sqrt()
    eye = torch.eye(len(e), dtype=torch.bool, device=e.device)
    return d.masked_fill(eye, 0)


def _normalised_distance(e, squared, eps):
    d = pairwise_distance(e, squared, eps)
    positive = d > 0
    return d / (torch.where(positive, d, 0).sum() / positive.sum())


def _angles(e):
    """Cosines of the angles ``∠(e_j − e_i, e_k − e_i)`` for all triples, flattened."""
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
    return torch.bmm(diff, diff.transpose(1, 2)).reshape(-1)


def rkd_loss(f_s, f_t, squared=False, eps=1e-12, distance_weight=25, angle_weight=50):
    """Relational KD: smooth-L1 between mean-normalised pairwise distances plus smooth-L1
    between triplet angle cosines, weighted ``distance_weight`` and ``angle_weight``."""
    stu, tea = f_s.reshape(f_s.shape[0], -1), f_t.reshape(f_t.shape[0], -1).detach()
    loss_d = F.smooth_l1_loss(_normalised_distance(stu, squared, eps), _normalised_distance(tea, squared, eps))
    loss_a = F.smooth_l1_loss(_angles(stu), _angles(tea))
    return distance_weight * loss_d + angle_weight * loss_a


def _cosine_affinity(f, eps):
    """Row-normalised ``(cos + 1) / 2`` similarities, as probabilities per row (NaN -> 0)."""
    f = f / (f.pow(2).sum(1, keepdim=True).sqrt() + eps)
    f = torch.where(torch.isnan(f), 0, f)
    sim = (f @ f.t() + 1.0) / 2.0
    return sim / sim.sum(1, keepdim=True)


def pkt_loss(f_s, f_t, eps=1e-7):
    """Probabilistic KT: mean over entries of ``p_t log((p_t + ε) / (p_s + ε))`` of the
    cosine-affinity distributions (:func:`_cosine_affinity`)."""
    p_s, p_t = _cosine_affinity(f_s, eps), _cosine_affinity(f_t, eps)
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()


# ---------------------------------------------------------------------------------------
# KDSVD
# ---------------------------------------------------------------------------------------
def _finite(x):
    return torch.where(torch.isfinite(x), x, 0)


def _svd(feat, n):
    """Leading ``n`` singular vectors/values of each sample's (C·H x W) matrix, in float32,
    each L2-normalised (NaNs zeroed). Returns ``(s: B x n, v: B x W x n)``."""
    b, c, h, w = feat.shape
    _, s, vh = torch.linalg.svd(feat.reshape(b, c * h, w).float(), full_matrices=False)
    s, v = _finite(s), _finite(vh.mH)
    return F.normalize(s[:, :n], dim=1), F.normalize(v[:, :, :n], dim=1)


def _align_signs(v_s, v_t):
    """Map each teacher vector to the student vector of largest |cosine|, sign-corrected."""
    cosine = v_s.transpose(-2, -1) @ v_t
    best = cosine.abs().amax(1, keepdim=True)
    return v_s @ torch.where(best == cosine.abs(), torch.sign(cosine), 0)


def kdsvd_loss(g_s, g_t, k=1):
    """Self-supervised KD via SVD: compare RBF kernels between the (singular-value scaled)
    right singular vectors of consecutive stages. Runs in float32 like the reference.

    Student stages keep ``k + 3`` vectors, aligned to the teacher's ``k``; the loss is
    ``Σ_stage pairs Σ (rbf_s − rbf_t)² / B`` with ``rbf = exp(−(v_i − v_{i−1})² / 8)``.
    """
    total, prev = 0, None
    for f_s, f_t in zip(g_s, g_t):
        s_t, v_t = _svd(f_t, k)
        _, v_s = _svd(f_s, k + 3)
        v_s = _align_signs(v_s, v_t)
        scale = s_t.unsqueeze(1)
        v_t, v_s = v_t * scale, v_s * scale
        if prev is not None:
            rbf_s = torch.exp(-(v_s.unsqueeze(2) - prev[0].unsqueeze(1)).pow(2) / 8)
            rbf_t = torch.exp(-(v_t.unsqueeze(2) - prev[1].unsqueeze(1)).pow(2) / 8)
            total = total + _finite((rbf_s - rbf_t.detach()).pow(2)).sum() / g_s[0].shape[0]
        prev = (v_s, v_t)
    return total


# ---------------------------------------------------------------------------------------
# CRD
# ---------------------------------------------------------------------------------------
def contrast_nce_loss(scores, num_data, eps=1e-7):
    """CRD's NCE loss of (B x (K+1)) scores whose column 0 is the positive pair.

    With ``m = K`` noise samples from the uniform noise ``P_n = 1 / num_data``:
    ``−(1/B) Σ [log(P_pos / (P_pos + m P_n + ε)) + Σ_K log(m P_n / (P_neg + m P_n + ε))]``.
    """
    scores = scores.reshape(scores.shape[0], -1)
    m = scores.shape[1] - 1
    noise = m / float(num_data)
    pos, neg = scores[:, 0], scores[:, 1:]
    log_d1 = torch.log(pos / (pos + (noise + eps)))
    log_d0 = torch.log(noise / (neg + (noise + eps)))
    return -(log_d1.sum() + log_d0.sum()) / scores.shape[0]
