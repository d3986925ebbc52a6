"""CRD: contrastive representation distillation (Tian et al., ICLR 2020).

The memory bank (``contrast.memory_v1``/``memory_v2``) and the settings buffer
(``contrast.params``: K, T, the two normalisation constants, the momentum) are buffers, so
they are part of checkpoints, laid out as in mdistiller.

Negatives: mdistiller's CIFAR-100 dataset draws, per sample, ``CRD.NCE.K`` indices of
samples of *other* classes (without replacement when there are enough) and puts a positive
first: the sample itself (``CRD.MODE exact``) or a random sample of its class (``relax``).
Here :class:`ContrastSampler` draws the same on the batch's device from the training
targets (``set_train_targets`` or ``train_targets=``); the trainer calls
:meth:`CRD.prepare_batch` on each batch, which adds ``contrastive_index``.
"""

import math

import torch
import torch.nn as nn

from yacs.config import CfgNode as CN

from ...utils.checks import check_at_least, check_choice, check_non_negative, check_positive
from ...utils.errors import ConfigError
from ..registry import register_distiller
from ..base import Need
from . import losses
from .base import FeatureDistiller, loss_node, model_label, probe_features, probe_size


class Embed(nn.Module):
    """Linear projection followed by L2 normalisation."""

    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x):
        x = self.linear(x.reshape(x.shape[0], -1))
        return x / x.pow(2).sum(1, keepdim=True).pow(0.5)


class ContrastMemory(nn.Module):
    """Momentum memory bank of embeddings of every training sample, for both models."""

    def __init__(self, feat_dim, num_data, k, temperature=0.07, momentum=0.5):
        super().__init__()
        self.register_buffer("params", torch.tensor([k, temperature, -1, -1, momentum]))
        stdv = 1.0 / math.sqrt(feat_dim / 3)
        for name in ("memory_v1", "memory_v2"):
            self.register_buffer(name, torch.rand(num_data, feat_dim).mul_(2 * stdv).add_(-stdv))

    def forward(self, v1, v2, y, idx):
        """Scores of (B x (K+1)) memory entries ``idx`` against ``v1`` (student) and ``v2``
        (teacher): ``exp(<m, v> / T) / Z``, ``Z`` fixed from the first batch. Then the
        entries ``y`` move towards the batch's embeddings (momentum, renormalised)."""
        temperature, momentum = self.params[1].clone(), self.params[4].clone()  # params change below
        n = self.memory_v1.shape[0]
        out_v2 = torch.exp(torch.bmm(self.memory_v1[idx], v2.unsqueeze(2)) / temperature)
        out_v1 = torch.exp(torch.bmm(self.memory_v2[idx], v1.unsqueeze(2)) / temperature)
        with torch.no_grad():
            z = self.params[2:4]
            z.copy_(torch.where(z < 0, torch.stack([out_v1.mean(), out_v2.mean()]) * n, z))
            z_v1, z_v2 = z.clone()
            for memory, v in ((self.memory_v1, v1), (self.memory_v2, v2)):
                pos = memory[y] * momentum + v * (1 - momentum)
                memory.index_copy_(0, y, pos / pos.pow(2).sum(1, keepdim=True).pow(0.5))
        return out_v1 / z_v1, out_v2 / z_v2


class ContrastSampler(nn.Module):
    """Draws CRD's contrastive indices from per-class index lists of the training targets.

    Holds no checkpoint state (its buffers are not persistent); deterministic under torch's
    RNG (or the ``generator`` given to :meth:`sample`).
    """

    def __init__(self, k, mode="exact", train_targets=None):
        super().__init__()
        if mode not in ("exact", "relax"):
            raise ConfigError(f"CRD.MODE must be 'exact' or 'relax', got '{mode}'")
        self.k, self.mode = k, mode
        for name in ("order", "starts", "counts"):
            self.register_buffer(name, None, persistent=False)
        if train_targets is not None:
            self.set_targets(train_targets)

    @property
    def ready(self):
        return self.order is not None

    def set_targets(self, targets, device=None):
        """Index the training targets (a sequence or tensor of class ids, in dataset order)."""
        t = torch.as_tensor(targets, dtype=torch.long, device=device).reshape(-1)
        counts = torch.bincount(t)
        self.order = torch.argsort(t, stable=True)  # sample ids grouped by class
        self.counts, self.starts = counts, torch.cumsum(counts, 0) - counts
        num = len(t)
        present = counts[counts > 0]
        self._negatives_range = (num - int(present.max()), num - int(present.min()))  # once, at setup

    def sample(self, target, index, generator=None):
        """(B x (K+1)) indices, on the sampler's device: the positive, then K samples of
        other classes."""
        dev = self.order.device
        target = target.to(dev)
        count, start = self.counts[target], self.starts[target]
        num_neg = len(self.order) - count  # negatives available to each row
        if self.mode == "exact":
            pos = index.to(dev)
        else:
            u = torch.rand(len(target), dtype=torch.float64, device=dev, generator=generator)
            pos = self.order[start + (u * count).long()]
        lo, hi = self._negatives_range
        k = self.k
        if k <= hi:  # rows with >= K negatives: a uniform K-subset (top-K of random keys)
            keys = torch.rand(len(target), len(self.order), device=dev, generator=generator)
            keys.masked_fill_(torch.arange(len(self.order), device=dev) >= num_neg.unsqueeze(1), -1)
            slot = keys.topk(k, dim=1).indices
        if k > lo:  # rows with fewer than K negatives: K draws with replacement
            u = torch.rand(len(target), k, dtype=torch.float64, device=dev, generator=generator)
            with_repl = (u * num_neg.unsqueeze(1)).long()
            slot = with_repl if k > hi else torch.where((k > num_neg).unsqueeze(1), with_repl, slot)
        # slot s of class c's negatives: the s-th sample of the class-sorted order, skipping class c
        neg = self.order[slot + count.unsqueeze(1) * (slot >= start.unsqueeze(1))]
        return torch.cat([pos.unsqueeze(1), neg], 1)


@register_distiller("CRD")
class CRD(FeatureDistiller):
    """Contrastive representation distillation on pooled features.

    Declares ``Need.TRAIN_SET``: the builder passes ``num_data`` (training-set size) and
    ``train_targets`` (without them, call :meth:`set_train_targets` before training). ``forward``
    takes ``index`` (dataset indices) and ``contrastive_index`` (from :meth:`prepare_batch`;
    drawn in the forward when absent).
    """

    cfg_node = "CRD"
    needs = frozenset({Need.TRAIN_SET})

    @staticmethod
    def defaults(c):
        c.MODE = "exact"  # positive of each sample: itself (exact) or a sample of its class (relax)
        c.FEAT = CN()
        c.FEAT.DIM = 128  # embedding dimension
        c.FEAT.STUDENT_DIM = 256  # channels of the student's pooled feature
        c.FEAT.TEACHER_DIM = 256  # channels of the teacher's pooled feature
        c.LOSS = loss_node(0.8)  # FEAT_WEIGHT: weight of the contrastive term
        c.NCE = CN()
        c.NCE.K = 16384  # negatives per sample
        c.NCE.MOMENTUM = 0.5  # momentum of the memory-bank update
        c.NCE.TEMPERATURE = 0.07  # temperature of the contrastive scores

    @classmethod
    def check_config(cls, cfg, used):
        super().check_config(cfg, used)
        c = cfg.CRD
        check_choice(c, "CRD", "MODE", ("exact", "relax"))
        for key in ("NCE.K", "FEAT.DIM", "FEAT.STUDENT_DIM", "FEAT.TEACHER_DIM"):
            check_at_least(c, "CRD", key, 1)
        check_positive(c, "CRD", ["NCE.TEMPERATURE"])
        check_non_negative(c, "CRD", ["NCE.MOMENTUM"])
        if c.NCE.MOMENTUM > 1:
            raise ConfigError(f"CRD.NCE.MOMENTUM must be in [0, 1], got {c.NCE.MOMENTUM}")

    def __init__(self, student, teacher, cfg, num_data=None, train_targets=None):
        super().__init__(student, teacher, cfg)
        if num_data is None and train_targets is not None:
            num_data = len(train_targets)
        if not num_data:
            raise ConfigError("CRD needs num_data (the training-set size) to build its memory bank; "
                              "pass num_data= when building the distiller")
        o = self.opts
        size = probe_size(cfg)
        for role, model, key in (("student", student, "STUDENT_DIM"), ("teacher", teacher, "TEACHER_DIM")):
            dim = probe_features(model, size)["pooled_feat"].shape[1]
            if dim != o.FEAT[key]:
                raise ConfigError(f"CRD cannot use {model_label(cfg, role)} with CRD.FEAT.{key} = {o.FEAT[key]}: "
                                  f"its pooled feature has {dim} channels; set CRD.FEAT.{key} {dim}")
        self.embed_s = Embed(o.FEAT.STUDENT_DIM, o.FEAT.DIM)
        self.embed_t = Embed(o.FEAT.TEACHER_DIM, o.FEAT.DIM)
        self.contrast = ContrastMemory(o.FEAT.DIM, num_data, o.NCE.K, o.NCE.TEMPERATURE, o.NCE.MOMENTUM)
        self.sampler = ContrastSampler(o.NCE.K, o.MODE, train_targets)
        self.num_data = num_data

    def set_train_targets(self, targets):
        """Give the sampler the training set's targets (in dataset-index order)."""
        if len(targets) != self.num_data:
            raise ConfigError(f"CRD was built for {self.num_data} training samples but got {len(targets)} targets")
        self.sampler.set_targets(targets, device=self.contrast.memory_v1.device)

    def sample_contrastive_index(self, target, index, generator=None):
        """(B x (K+1)) memory indices for a batch: positive first, then K negatives."""
        if not self.sampler.ready:
            raise ConfigError("CRD has no training targets to draw negatives from; call "
                              "distiller.set_train_targets(train_set.targets) or pass train_targets=")
        return self.sampler.sample(target, index, generator)

    def prepare_batch(self, batch):
        """Add ``contrastive_index`` to a batch holding ``target`` and ``index``."""
        if batch.get("contrastive_index") is None:
            batch["contrastive_index"] = self.sample_contrastive_index(batch["target"], batch["index"])
        return batch

    def feature_loss(self, feats_s, feats_t, target=None, index=None, contrastive_index=None, **kwargs):
        if index is None:
            raise ConfigError("CRD needs each sample's dataset index: the batch must carry 'index'")
        if contrastive_index is None:
            contrastive_index = self.sample_contrastive_index(target, index)
        f_s = self.embed_s(feats_s["pooled_feat"])
        f_t = self.embed_t(feats_t["pooled_feat"])
        out_s, out_t = self.contrast(f_s, f_t, index, contrastive_index)
        return losses.contrast_nce_loss(out_s, self.num_data) + losses.contrast_nce_loss(out_t, self.num_data)
