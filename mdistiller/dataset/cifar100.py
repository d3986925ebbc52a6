"""CIFAR-100 (torchvision's files in ``DATASET.ROOT`` or ``data/``, downloaded when missing)."""

import torch

from ..utils.errors import DataError
from .base import DatasetSpec, TensorImageDataset, data_root, register_dataset

MEAN = (0.5071, 0.4867, 0.4408)
STD = (0.2675, 0.2565, 0.2761)


def load_split(root, train):
    """One split as a :class:`TensorImageDataset` (converted to one uint8 tensor once)."""
    from torchvision.datasets import CIFAR100

    try:
        ds = CIFAR100(root, train=train, download=True)
    except Exception as e:  # no internet, corrupt archive, disk full, ...
        raise DataError(
            f"CIFAR-100 not found in '{root}' and the download failed ({e}); put torchvision's "
            f"cifar-100-python/ folder there (or set DATASET.ROOT) or allow internet access") from None
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2)  # NHWC -> NCHW
    return TensorImageDataset(images, ds.targets)


@register_dataset("cifar100")
def build_cifar100(cfg):
    root = data_root(cfg, "data")
    return DatasetSpec(load_split(root, True), load_split(root, False), num_classes=100,
                       model_family="cifar", mean=MEAN, std=STD, image_size=32, pad=4)
