"""CRD's contrastive sampling (mdistiller's CIFAR100InstanceSample semantics, drawn on the
batch's device) and its memory bank."""

import pytest
import torch

from mdistiller.distillers import DISTILLERS
from mdistiller.distillers.feature import ContrastSampler
from mdistiller.config.load import load_cfg
from mdistiller.models import cifar_model_dict
from mdistiller.utils.errors import ConfigError

# 7 classes of unequal sizes (class 6 has the most samples), shuffled dataset order
COUNTS = [3, 5, 8, 8, 9, 10, 17]
TARGETS = torch.repeat_interleave(torch.arange(7), torch.tensor(COUNTS))
TARGETS = TARGETS[torch.randperm(len(TARGETS), generator=torch.Generator().manual_seed(1))]


def draw(mode, k, rows=32, seed=0):
    sampler = ContrastSampler(k, mode, TARGETS)
    torch.manual_seed(seed)
    index = torch.randint(0, len(TARGETS), (rows,))
    return index, sampler.sample(TARGETS[index], index)


@pytest.mark.parametrize("mode", ["exact", "relax"])
def test_negatives_are_distinct_samples_of_other_classes(mode):
    index, idx = draw(mode, k=20)  # every class has >= 43 negatives: no replacement
    assert idx.shape == (32, 21) and idx.dtype == torch.long
    target = TARGETS[index]
    if mode == "exact":
        assert torch.equal(idx[:, 0], index)
    else:
        assert torch.equal(TARGETS[idx[:, 0]], target)  # a random sample of the same class
    neg = idx[:, 1:]
    assert ((neg >= 0) & (neg < len(TARGETS))).all()
    assert (TARGETS[neg] != target.unsqueeze(1)).all()
    assert all(len(set(row.tolist())) == 20 for row in neg)


def test_negatives_cover_every_other_class_sample_uniformly():
    sampler = ContrastSampler(4, "exact", TARGETS)
    torch.manual_seed(0)
    rows = 3000
    index = torch.full((rows,), int((TARGETS == 0).nonzero()[0]))
    neg = sampler.sample(TARGETS[index], index)[:, 1:]
    counts = torch.bincount(neg.reshape(-1), minlength=len(TARGETS)).float()
    others = TARGETS != 0
    assert (counts[~others] == 0).all()
    expected = rows * 4 / others.sum()
    assert ((counts[others] - expected).abs() < 0.25 * expected).all()


def test_with_replacement_only_for_classes_without_enough_negatives():
    k = 50  # class 6 has 60 - 17 = 43 negatives (< 50): drawn with replacement
    index, idx = draw("exact", k=k, rows=200)
    target, neg = TARGETS[index], idx[:, 1:]
    assert (TARGETS[neg] != target.unsqueeze(1)).all()
    distinct = torch.tensor([len(set(row.tolist())) for row in neg])
    assert (distinct[target != 6] == k).all()
    assert (distinct[target == 6] <= 43).all()


def test_sampling_is_deterministic_under_torch_seed():
    assert torch.equal(draw("relax", 10, seed=3)[1], draw("relax", 10, seed=3)[1])
    assert not torch.equal(draw("relax", 10, seed=3)[1], draw("relax", 10, seed=4)[1])


def test_bad_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="CRD.MODE"):
        ContrastSampler(4, "fuzzy")


@pytest.fixture
def crd():
    cfg = load_cfg(opts=["CRD.NCE.K", "6", "CRD.FEAT.STUDENT_DIM", "64", "CRD.FEAT.TEACHER_DIM", "64",
                         "DISTILLER.STUDENT", "resnet8", "DISTILLER.TEACHER", "resnet8"])
    models = [cifar_model_dict["resnet8"][0](num_classes=100) for _ in range(2)]
    return DISTILLERS["CRD"](*models, cfg, num_data=len(TARGETS)).train()


def test_crd_needs_num_data_and_targets(crd):
    cfg = load_cfg()
    with pytest.raises(ConfigError, match="num_data"):
        DISTILLERS["CRD"](crd.student, crd.teacher, cfg)
    batch = {"target": TARGETS[:4], "index": torch.arange(4)}
    with pytest.raises(ConfigError, match="set_train_targets"):
        crd.prepare_batch(batch)
    with pytest.raises(ConfigError, match="60 training samples"):
        crd.set_train_targets(TARGETS[:10])


def test_crd_prepare_batch_forward_and_memory_update(crd):
    crd.set_train_targets(TARGETS.tolist())
    torch.manual_seed(0)
    index = torch.tensor([5, 17, 33, 42])
    batch = crd.prepare_batch({"image": torch.randn(4, 3, 32, 32), "target": TARGETS[index], "index": index})
    assert batch["contrastive_index"].shape == (4, 7)
    assert torch.equal(batch["contrastive_index"][:, 0], index)
    before = crd.contrast.memory_v1.clone()
    assert (crd.contrast.params[2:4] < 0).all()
    _, terms = crd(**batch, epoch=1)
    sum(terms.values()).backward()
    assert torch.isfinite(terms["loss_kd"]) and crd.embed_s.linear.weight.grad is not None
    assert (crd.contrast.params[2:4] > 0).all()  # normalisation constants fixed by the first batch
    changed = (crd.contrast.memory_v1 != before).any(1)
    assert changed.nonzero().flatten().tolist() == sorted(index.tolist())
    torch.testing.assert_close(crd.contrast.memory_v1[index].norm(dim=1), torch.ones(4))
    # without prepare_batch the forward draws the indices itself
    _, terms = crd(image=batch["image"], target=batch["target"], index=index, epoch=1)
    assert torch.isfinite(terms["loss_kd"])
