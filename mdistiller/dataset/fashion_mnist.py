"""Fashion-MNIST, padded to 32x32 and repeated to 3 channels so the CIFAR model zoo applies.

Looked up in order: ``DATASET.ROOT``; Debian's ``dataset-fashion-mnist`` package
(``/usr/share/datasets/fashion-mnist/``); torchvision's download into ``data/``.
"""

import gzip
import os

import numpy as np
import torch

from ..utils.errors import DataError
from .base import DatasetSpec, TensorImageDataset, register_dataset

SYSTEM_ROOT = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# Statistics of the padded 32x32 training images (zero border included).
MEAN, STD = (0.2190,) * 3, (0.3318,) * 3


def read_idx(path):
    """Read a gzip IDX file of unsigned bytes (magic 0x08, 1 or 3 dims) as a uint8 tensor."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file '{path}' ({e}); re-download the dataset") from None
    ndim = data[3] if len(data) >= 4 else 0
    if len(data) < 4 + 4 * ndim or data[:3] != b"\x00\x00\x08" or ndim not in (1, 3):
        raise DataError(f"'{path}' is not an IDX file of unsigned bytes; re-download the dataset")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataError(f"'{path}' holds {body.size} bytes, its header says {shape}; re-download it")
    return torch.from_numpy(body.reshape(shape).copy())


def load_split(root, split):
    """(images uint8 (N, 3, 32, 32), targets int64 (N,)) of one split in ``root``."""
    images, labels = (read_idx(os.path.join(root, name)) for name in FILES[split])
    if len(images) != len(labels):
        raise DataError(f"Fashion-MNIST {split} files in '{root}' disagree: {len(images)} images, {len(labels)} labels")
    images = torch.nn.functional.pad(images, (2, 2, 2, 2)).unsqueeze(1).expand(-1, 3, -1, -1)
    return images.contiguous(), labels.long()


def has_files(path, names):
    return all(os.path.isfile(os.path.join(path, n)) for n in names)


def find_root(cfg):
    """The folder holding the four gzip IDX files (downloading them if need be)."""
    names = FILES["train"] + FILES["val"]
    if cfg.DATASET.ROOT:
        if not has_files(cfg.DATASET.ROOT, names):
            raise DataError(
                f"Fashion-MNIST not found in DATASET.ROOT '{cfg.DATASET.ROOT}': it needs {', '.join(names)}; "
                f"point DATASET.ROOT elsewhere, or clear it to use {SYSTEM_ROOT} (apt-get install dataset-fashion-mnist)")
        return cfg.DATASET.ROOT
    if has_files(SYSTEM_ROOT, names):
        return SYSTEM_ROOT
    from torchvision.datasets import FashionMNIST

    try:
        ds = FashionMNIST("data", train=True, download=True)
    except Exception as e:  # no internet, blocked host, disk full, ...
        raise DataError(
            f"Fashion-MNIST not found in {SYSTEM_ROOT} and the download into data/ failed ({e}); "
            f"run 'apt-get install dataset-fashion-mnist' or allow internet access") from None
    return ds.raw_folder


@register_dataset("fashion_mnist")
def build_fashion_mnist(cfg):
    root = find_root(cfg)
    train, val = (TensorImageDataset(*load_split(root, s)) for s in ("train", "val"))
    return DatasetSpec(train, val, num_classes=10, model_family="cifar", mean=MEAN, std=STD,
                       image_size=32, pad=4)
