"""Datasets and the input pipeline.

``get_dataset(cfg)`` builds the :class:`DatasetSpec` of ``DATASET.TYPE`` (a ``DATASETS``
registry name) with the ``DATASET.HOLDOUT`` split and the fixed ``DATASET.SUBSET`` /
``VAL_SUBSET`` fractions applied;
:func:`build_loaders` makes the data loaders and :func:`build_batch_transform` the
device-side views (weak, or weak + strong).
"""

import dataclasses

from ..utils.checks import check_at_least, is_number
from ..utils.errors import ConfigError
from . import cifar100, fashion_mnist, imagefolder, imagenet, synthetic, tiny_imagenet  # noqa: F401  (register the datasets)
from .augment import build_batch_transform  # noqa: F401
from .base import (DATASETS, DatasetSpec, apply_subset, holdout_indices, register_dataset,  # noqa: F401
                   split_train, subset_indices)
from .loader import build_eval_loader, build_loaders, set_epoch  # noqa: F401


def get_dataset(cfg):
    """The ``DatasetSpec`` of ``cfg.DATASET.TYPE`` with the holdout split (``DATASET.HOLDOUT``,
    stratified, from ``DATASET.HOLDOUT_SEED``) and the configured subsets applied; the
    training subset is drawn from what the holdout leaves."""
    d = cfg.DATASET
    if not (0 < d.SUBSET <= 1 and 0 < d.VAL_SUBSET <= 1):
        raise ConfigError("DATASET.SUBSET and DATASET.VAL_SUBSET must be fractions in (0, 1]")
    check_holdout(cfg)
    spec = DATASETS[d.TYPE](cfg)
    train, holdout, split = split_train(spec.train, d.HOLDOUT, d.HOLDOUT_SEED, d.SUBSET)
    return dataclasses.replace(spec, train=train, val=apply_subset(spec.val, d.VAL_SUBSET), holdout=holdout,
                               split=split)


def check_holdout(cfg):
    """DATASET.HOLDOUT is a fraction in [0, 1) and DATASET.HOLDOUT_SEED an integer >= 0."""
    d = cfg.DATASET
    if not is_number(d.HOLDOUT) or not 0 <= d.HOLDOUT < 1:
        raise ConfigError(f"DATASET.HOLDOUT must be a fraction in [0, 1) of each class of the training set "
                          f"(0 = no holdout, e.g. 0.1), got {d.HOLDOUT}")
    check_at_least(d, "DATASET", "HOLDOUT_SEED", 0)
