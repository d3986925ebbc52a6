"""ImageNet as torchvision ImageFolders ``<ROOT or data/imagenet>/{train,val}/<class>/<image>``.

Workers decode and crop (train: RandomResizedCrop 224; val: Resize 256 + CenterCrop 224) and
return uint8 tensors; the flip and normalization happen on the device. For a two-view method
a training item also holds ``crop_strong``, a second RandomResizedCrop of the same image drawn
independently, from which the strong view is made (the reference builds its two views with
two independent ``RandomResizedCrop(224)`` + flip pipelines).
"""

import copy
import os

from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from ..utils.errors import DataError
from .base import DatasetSpec, data_root, register_dataset

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SIZE = 224


class ImageFolderDataset(Dataset):
    """An ImageFolder whose items are ``{"image": uint8 CHW, "target", "index"}`` dicts, with
    the ImageNet-style crops at ``size`` (validation resized to ``size * 256 / 224`` first),
    plus ``crop_strong`` (an independent second crop) in training with two views (:meth:`set_views`)."""

    def __init__(self, root, train, size=SIZE):
        self.folder = ImageFolder(root)
        self.targets = self.folder.targets
        self.size, self.views = size, 1
        self._set_train(train)

    def _set_train(self, train):
        size = self.size
        crop = [v2.RandomResizedCrop(size)] if train else [v2.Resize(round(size * 256 / 224)), v2.CenterCrop(size)]
        self.transform = v2.Compose(crop + [v2.PILToTensor()])
        self.train = train

    def eval_view(self):
        """These images with the validation crop (a training split's holdout), sharing the
        folder listing."""
        view = copy.copy(self)
        view._set_train(False)
        view.views = 1
        return view

    def set_views(self, num_views):
        """Views the training pipeline makes: with 2, each item carries a second, independent crop."""
        self.views = num_views

    def __len__(self):
        return len(self.folder)

    def __getitem__(self, i):
        path, target = self.folder.samples[i]
        image = self.folder.loader(path)  # PIL RGB
        item = {"image": self.transform(image), "target": target, "index": i}
        if self.train and self.views == 2:
            item["crop_strong"] = self.transform(image)  # its own RandomResizedCrop draw
        return item


def _split(root, name, train):
    path = os.path.join(root, name)
    try:
        return ImageFolderDataset(path, train)
    except (FileNotFoundError, NotADirectoryError):
        raise DataError(
            f"ImageNet {name} split not found or empty at '{path}'; expected {root}/train/<wnid>/*.JPEG and "
            f"{root}/val/<wnid>/*.JPEG (validation images sorted into class folders); set DATASET.ROOT") from None


@register_dataset("imagenet")
def build_imagenet(cfg):
    root = data_root(cfg, os.path.join("data", "imagenet"))
    train, val = _split(root, "train", True), _split(root, "val", False)
    if train.folder.classes != val.folder.classes:
        raise DataError(f"ImageNet train and val class folders differ under '{root}'; sort val into the same class folders")
    return DatasetSpec(train, val, num_classes=len(train.folder.classes), model_family="imagenet",
                       mean=MEAN, std=STD, image_size=SIZE, pad=0)
