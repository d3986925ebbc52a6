"""Datasets and the input pipeline.

``get_dataset(cfg)`` builds the :class:`DatasetSpec` of ``DATASET.TYPE`` (a ``DATASETS``
registry name) with the fixed ``DATASET.SUBSET`` / ``VAL_SUBSET`` fractions applied;
:func:`build_loaders` makes the data loaders and :func:`build_batch_transform` the
device-side views (weak, or weak + strong).
"""

import dataclasses

from ..utils.errors import ConfigError
from . import cifar100, fashion_mnist, imagefolder, imagenet, synthetic, tiny_imagenet  # noqa: F401  (register the datasets)
from .augment import build_batch_transform  # noqa: F401
from .base import DATASETS, DatasetSpec, apply_subset, register_dataset, subset_indices  # noqa: F401
from .loader import build_loaders, set_epoch  # noqa: F401


def get_dataset(cfg):
    """The ``DatasetSpec`` of ``cfg.DATASET.TYPE`` with the configured subsets applied."""
    d = cfg.DATASET
    if not (0 < d.SUBSET <= 1 and 0 < d.VAL_SUBSET <= 1):
        raise ConfigError("DATASET.SUBSET and DATASET.VAL_SUBSET must be fractions in (0, 1]")
    spec = DATASETS[d.TYPE](cfg)
    return dataclasses.replace(spec, train=apply_subset(spec.train, d.SUBSET),
                               val=apply_subset(spec.val, d.VAL_SUBSET))
