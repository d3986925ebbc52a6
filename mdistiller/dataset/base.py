"""Dataset registry, the :class:`DatasetSpec` every builder returns, and dataset wrappers.

Dataset items are dicts ``{"image": uint8 CHW tensor, "target": int, "index": int}`` (and
``crop_strong``, a second crop, where workers crop and two views are made); the
default collate turns them into dict batches. Augmentation happens after collation, on the
training device (see :mod:`mdistiller.dataset.augment`), so workers only decode (and, for
full-size images, crop).
"""

from dataclasses import dataclass
from typing import Optional

import torch
from torch.utils.data import Dataset

from ..utils.errors import ConfigError
from ..utils.registry import Registry

DATASETS = Registry("dataset")


def register_dataset(name):
    """Decorator registering a builder ``(cfg) -> DatasetSpec`` under ``name``."""
    return DATASETS.register(name)


@dataclass
class DatasetSpec:
    """What the trainer needs to know about a dataset.

    ``model_family`` is ``"cifar"`` for 32x32 data (the CIFAR model zoo) or ``"imagenet"``;
    ``pad`` is the zero padding of the weak view's random crop (0 = the worker already
    cropped, so the weak view is a flip only); ``rotate`` > 0 rotates the views first by an
    angle uniform in [-rotate, rotate] degrees (torchvision's ``RandomRotation``).
    ``holdout`` (``DATASET.HOLDOUT``) is the held-out part of the training images, loaded as
    the test split is, and ``split`` what the run folder's ``split.json`` records of it (both
    None without a holdout).
    """

    train: Dataset
    val: Dataset
    num_classes: int
    model_family: str
    mean: tuple
    std: tuple
    image_size: int
    pad: int
    rotate: float = 0.0
    holdout: Optional[Dataset] = None
    split: Optional[dict] = None

    @property
    def num_train(self):
        """Number of training samples (the size of CRD's memory bank)."""
        return len(self.train)

    @property
    def train_targets(self):
        """int64 labels of the training samples, by ``index`` (CRD's class-wise sampling)."""
        return torch.as_tensor(self.train.targets, dtype=torch.int64)


def set_views(dataset, num_views):
    """Tell ``dataset`` (through subset wrappers) how many views the training pipeline makes;
    datasets whose workers crop (ImageNet) then return a second, independent crop for the
    strong view. Datasets without ``set_views`` ignore it."""
    dataset = _unwrap(dataset, "set_views")
    if dataset is not None:
        dataset.set_views(num_views)


def eval_view(dataset):
    """``dataset`` loaded as its test split is: datasets whose workers crop at random in
    training (ImageNet-style folders) give a copy with the evaluation crop
    (``eval_view()``); the others load both splits alike and are returned as they are."""
    view = getattr(dataset, "eval_view", None)
    return view() if view is not None else dataset


def _unwrap(dataset, attr):
    """``dataset`` or the dataset it wraps (subset wrappers' ``base``) that has ``attr``, or None."""
    while dataset is not None and not hasattr(dataset, attr):
        dataset = getattr(dataset, "base", None)
    return dataset


def collate_fn(dataset):
    """The collate function of ``dataset`` (through subset wrappers): its ``collate_fn``
    attribute when set (e.g. ImageNet's ``DATASET.DECODE device`` items), else None (the default)."""
    dataset = _unwrap(dataset, "collate_fn")
    return None if dataset is None else dataset.collate_fn


def data_root(cfg, default):
    """``DATASET.ROOT`` when set, else ``default`` (relative to the working directory)."""
    return cfg.DATASET.ROOT or default


class TensorImageDataset(Dataset):
    """Images held in memory as one uint8 ``(N, C, H, W)`` tensor; ``targets`` int64 ``(N,)``."""

    def __init__(self, images, targets):
        assert images.dtype == torch.uint8 and images.ndim == 4 and len(images) == len(targets)
        self.images = images.contiguous()
        self.targets = torch.as_tensor(targets, dtype=torch.int64)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "target": int(self.targets[i]), "index": i}


class IndexedSubset(Dataset):
    """``base`` restricted to ``indices``; items get ``index`` = their position in the subset,
    so index-addressed memory banks (CRD) stay dense."""

    def __init__(self, base, indices):
        self.base = base
        self.indices = torch.as_tensor(indices, dtype=torch.int64)
        self.targets = torch.as_tensor(base.targets, dtype=torch.int64)[self.indices]

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        item = self.base[int(self.indices[i])]
        item["index"] = i
        return item


def subset_indices(n, fraction, seed=0):
    """Sorted indices of a fixed pseudo-random ``fraction`` of ``range(n)``.

    They are a prefix of one seeded permutation, so the same fraction always picks the same
    samples and a smaller fraction picks a subset of a larger one.
    """
    k = max(1, int(round(fraction * n)))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:k].sort().values


def apply_subset(dataset, fraction):
    """``dataset`` itself for ``fraction >= 1``, else its fixed subset (see subset_indices)."""
    if fraction >= 1:
        return dataset
    return IndexedSubset(dataset, subset_indices(len(dataset), fraction))


def holdout_indices(targets, fraction, seed):
    """Sorted indices of a stratified ``fraction`` of each class of ``targets``: at least one
    image per class, drawn from a generator seeded with ``seed`` alone (the same split for
    every method and every ``EXPERIMENT.SEED``). A class that would keep no training image
    is a ConfigError."""
    targets = torch.as_tensor(targets, dtype=torch.int64)
    g = torch.Generator().manual_seed(seed)
    chosen = []
    classes, counts = targets.unique(sorted=True, return_counts=True)
    by_class = targets.argsort(stable=True).split(counts.tolist())  # each class's indices, ascending
    for c, members in zip(classes.tolist(), by_class):
        k = max(1, int(round(fraction * len(members))))
        if k >= len(members):
            raise ConfigError(f"DATASET.HOLDOUT {fraction:g} holds out all {len(members)} training images of class "
                              f"{c}, leaving none to train on; lower DATASET.HOLDOUT (0 = no holdout)")
        chosen.append(members[torch.randperm(len(members), generator=g)[:k]])
    return torch.cat(chosen).sort().values


def split_train(train, holdout, seed, subset):
    """``(train, holdout, split)``: the training set without its held-out ``holdout``
    fraction (:func:`holdout_indices`), then restricted to its fixed ``subset`` fraction
    (drawn from what is left); the held-out images as the test split loads them; and the
    ``split.json`` record. Without a holdout: ``(apply_subset(train, subset), None, None)``,
    as before holdouts existed."""
    if holdout <= 0:
        return apply_subset(train, subset), None, None
    held = holdout_indices(train.targets, holdout, seed)
    keep = torch.ones(len(train), dtype=torch.bool)
    keep[held] = False
    rest = keep.nonzero().flatten()
    if subset < 1:
        rest = rest[subset_indices(len(rest), subset)]
    split = {"holdout_indices": held.tolist(), "seed": int(seed), "fraction": float(holdout), "num_train": len(rest)}
    return IndexedSubset(train, rest), IndexedSubset(eval_view(train), held), split
