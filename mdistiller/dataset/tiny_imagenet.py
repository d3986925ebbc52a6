"""Tiny-ImageNet (the standard 64x64 layout) with ``DATASET.ROOT`` the folder holding
``wnids.txt`` (default ``data/tiny-imagenet-200``, downloaded and unpacked there when
missing and the network allows):

- ``wnids.txt``: the class ids, one a line; a folder with a subset of the classes works.
  Class indices follow the **sorted** wnids, as upstream mdistiller's ``ImageFolder`` numbers
  its class folders (the file's own order, which is not sorted in the official archive, is
  not used), so teachers trained with upstream's code predict the same classes here;
- ``train/<wnid>/images/*.JPEG``;
- ``val/images/*.JPEG`` with ``val/val_annotations.txt`` (``file<TAB>wnid<TAB>box...``).

``test/`` and ``words.txt`` are not needed. The models are the Tiny-ImageNet zoo's (the
CIFAR zoo at 64 pixels, with upstream's ``MobileNetV2``: ``mobilenetv2_tinyimagenet``). The
views are made on the device; the training view is upstream's ``RandomRotation(20)`` and
horizontal flip, without a crop (``DATASET.TINY_IMAGENET_VIEW rotate_flip``), or a 4-pixel
padded random crop and flip (``crop_flip``); two-view methods build their strong view on the
same geometry. Normalized as upstream: mean (0.4802, 0.4481, 0.3975), std
(0.2302, 0.2265, 0.2262).
``DATASET.IMAGE_SIZE`` (0 = 64) resizes the images in the workers.
"""

import os

from ..utils.errors import DataError
from .base import DatasetSpec, register_dataset
from .imagefolder import ImageListDataset, image_size

MEAN = (0.4802, 0.4481, 0.3975)
STD = (0.2302, 0.2265, 0.2262)
SIZE = 64
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
DEFAULT_ROOT = os.path.join("data", "tiny-imagenet-200")
EXTENSIONS = (".jpeg", ".jpg", ".png")
#: DATASET.TINY_IMAGENET_VIEW -> (crop padding, rotation range in degrees) of the training view
VIEWS = {"rotate_flip": (0, 20.0), "crop_flip": (4, 0.0)}


def read_wnids(root):
    path = os.path.join(root, "wnids.txt")
    with open(path, encoding="utf-8") as f:
        wnids = [line.strip() for line in f if line.strip()]
    if not wnids or len(set(wnids)) != len(wnids):
        raise DataError(f"'{path}' lists no class ids or repeats one; it needs one wnid per line")
    return sorted(wnids)  # ImageFolder's order (upstream's class indices)


def train_samples(root, wnids):
    samples = []
    for target, wnid in enumerate(wnids):
        folder = os.path.join(root, "train", wnid, "images")
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(EXTENSIONS)) \
            if os.path.isdir(folder) else []
        if not files:
            raise DataError(f"Tiny-ImageNet class {wnid} (wnids.txt) has no images in '{folder}'; "
                            f"remove it from wnids.txt or restore the folder")
        samples += [(os.path.join(folder, f), target) for f in files]
    return samples


def val_samples(root, wnids):
    path = os.path.join(root, "val", "val_annotations.txt")
    if not os.path.isfile(path):
        raise DataError(f"'{path}' not found; Tiny-ImageNet's val/ holds images/ and val_annotations.txt")
    index = {w: i for i, w in enumerate(wnids)}
    samples = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.strip().split("\t")
            if len(parts) >= 2 and parts[1] in index:  # classes outside wnids.txt are skipped (a subset)
                samples.append((os.path.join(root, "val", "images", parts[0]), index[parts[1]]))
    missing = [p for p, _ in samples if not os.path.isfile(p)]
    if not samples or missing:
        what = f"'{missing[0]}' is missing" if missing else "it lists no image of the wnids.txt classes"
        raise DataError(f"Tiny-ImageNet validation set of '{root}': {what}; restore val/images/")
    return samples


def find_root(cfg):
    """DATASET.ROOT, else data/tiny-imagenet-200 (downloaded when missing)."""
    root = cfg.DATASET.ROOT or DEFAULT_ROOT
    if os.path.isfile(os.path.join(root, "wnids.txt")):
        return root
    if cfg.DATASET.ROOT:
        raise DataError(f"no wnids.txt in DATASET.ROOT '{root}'; point it at the folder holding wnids.txt, "
                        f"train/ and val/ (tiny-imagenet-200/ of {URL})")
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(URL, os.path.dirname(root))
    except Exception as e:  # noqa: BLE001 - no internet, blocked host, disk full, ...
        raise DataError(f"Tiny-ImageNet not found in '{root}' and the download failed ({e}); unpack "
                        f"{URL} so that {root}/wnids.txt exists, or set DATASET.ROOT") from None
    return root


@register_dataset("tiny_imagenet")
def build_tiny_imagenet(cfg):
    root = find_root(cfg)
    size = image_size(cfg, SIZE)
    wnids = read_wnids(root)
    train = ImageListDataset(train_samples(root, wnids), size)
    val = ImageListDataset(val_samples(root, wnids), size)
    pad, rotate = VIEWS[cfg.DATASET.TINY_IMAGENET_VIEW]
    return DatasetSpec(train, val, num_classes=len(wnids), model_family="tiny_imagenet", mean=MEAN, std=STD,
                       image_size=size, pad=pad, rotate=rotate)
