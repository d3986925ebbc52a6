"""Any image-folder dataset: ``DATASET.ROOT/{train,val}/<class>/<image>`` (jpg, png, ...).

Any number of classes (the class folders of ``train/``; ``val/`` must have the same ones),
images of any size, decoded by the loader workers and brought to ``DATASET.IMAGE_SIZE``
(default 224):

- 32: the CIFAR-style pipeline: every image resized (shorter side) and centre-cropped to
  32x32, then the device-side 4-pixel-padded random crop and flip (and the strong view);
  the model family is the CIFAR zoo;
- larger: the ImageNet-style pipeline of :mod:`mdistiller.dataset.imagenet` at that size
  (training RandomResizedCrop, validation resize + centre crop, in the workers; flip and
  the strong view on the device); the model family is the ImageNet zoo.

Normalized with ImageNet's mean and std. ``timm:``/``torchvision:`` models take either.
"""

import os

from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from ..utils.errors import ConfigError, DataError
from .base import DatasetSpec, register_dataset
from .imagenet import IMAGE_ERRORS, MEAN, STD, ImageFolderDataset, check_decode, unreadable_image

DEFAULT_SIZE = 224
CIFAR_SIZE = 32


class ImageListDataset(Dataset):
    """Images listed as ``samples`` = ``[(path, target)]``, each decoded to RGB and brought to
    ``size`` x ``size`` (shorter side resized, centre crop) as a uint8 CHW tensor."""

    def __init__(self, samples, size):
        self.samples = list(samples)
        self.targets = [t for _, t in self.samples]
        self.transform = v2.Compose([v2.Resize(size), v2.CenterCrop(size), v2.PILToTensor()])

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, target = self.samples[i]
        try:
            with Image.open(path) as im:
                image = self.transform(im.convert("RGB"))
        except IMAGE_ERRORS as e:
            raise unreadable_image(path, e) from None
        return {"image": image, "target": target, "index": i}


def image_size(cfg, default):
    """``DATASET.IMAGE_SIZE`` (0 = ``default``), checked positive."""
    size = cfg.DATASET.IMAGE_SIZE or default
    if size < 8:
        raise ConfigError(f"DATASET.IMAGE_SIZE must be at least 8 pixels (0 = {default}), got {size}")
    return size


def list_split(root, name):
    """The torchvision ImageFolder of ``root/name`` or a DataError saying what layout is expected."""
    path = os.path.join(root, name)
    try:
        return ImageFolder(path)
    except (FileNotFoundError, NotADirectoryError):
        empty = sorted(d.name for d in os.scandir(path) if d.is_dir() and not os.listdir(d.path)) \
            if os.path.isdir(path) else []
        if empty:
            raise DataError(f"class folder{'s' if len(empty) > 1 else ''} {', '.join(empty[:4])} under '{path}' "
                            f"hold{'' if len(empty) > 1 else 's'} no images; add images (.jpg/.png) or remove "
                            f"{'them' if len(empty) > 1 else 'it'}") from None
        raise DataError(f"image folder split '{path}' not found or holds no images; expected "
                        f"{root}/train/<class>/*.jpg|png and {root}/val/<class>/*.jpg|png (set DATASET.ROOT)") from None


@register_dataset("imagefolder")
def build_imagefolder(cfg):
    root = cfg.DATASET.ROOT
    if not root:
        raise ConfigError("DATASET.TYPE imagefolder needs DATASET.ROOT, the folder holding train/ and val/")
    size = image_size(cfg, DEFAULT_SIZE)
    train, val = list_split(root, "train"), list_split(root, "val")
    if len(train.classes) < 2:
        raise DataError(f"'{os.path.join(root, 'train')}' has {len(train.classes)} class folder; a classifier needs at "
                        f"least 2 (as DATASET.SYNTHETIC_CLASSES); add class folders")
    if train.classes != val.classes:
        missing = sorted(set(train.classes) ^ set(val.classes))[:4]
        raise DataError(f"train/ and val/ under '{root}' have different class folders ({', '.join(missing)}...); "
                        f"give val/ the same class folders")
    if size == CIFAR_SIZE:
        splits = [ImageListDataset(s.samples, size) for s in (train, val)]
        family, pad = "cifar", 4
    else:  # the ImageNet pipeline at this size (its changes apply here too)
        check_decode(cfg)
        splits = [ImageFolderDataset(os.path.join(root, n), n == "train", size, cfg.DATASET.DECODE,
                                     cfg.DATASET.DECODE_DRAFT) for n in ("train", "val")]
        family, pad = "imagenet", 0
    return DatasetSpec(*splits, num_classes=len(train.classes), model_family=family, mean=MEAN, std=STD,
                       image_size=size, pad=pad)
