"""ImageNet as torchvision ImageFolders ``<ROOT or data/imagenet>/{train,val}/<class>/<image>``.

Training crops follow torchvision's ``RandomResizedCrop`` law (scale 0.08..1 of the area,
ratio 3/4..4/3, log-uniform), drawn in the workers (:func:`crop_box`); validation resizes
the shorter side to ``size * 256 / 224`` and takes the centre ``size`` square. For a
two-view method a training item holds a second box drawn independently, from which the
strong view is made (the reference builds its two views with two independent
``RandomResizedCrop(224)`` + flip pipelines). ``DATASET.DECODE`` says where decoding happens:

- ``cpu`` (default): the workers decode and return uint8 crops (``image``, and
  ``crop_strong``); the flip and normalization happen on the device. A training JPEG in
  RGB is decoded by libjpeg-turbo through ``torchvision.io.decode_jpeg`` (the pixels PIL
  gives, without PIL's copies) and cropped and resized by torch's uint8 kernel; other
  files go through PIL. With ``DATASET.DECODE_DRAFT`` a JPEG is decoded at 1/2, 1/4 or 1/8
  of its size (PIL's ``draft``, DCT scaling) when every crop of the item still has at least
  the output's pixels; the boxes stay in the original image's coordinates.
- ``device``: the workers only read the file's bytes and its size (the header) and draw the
  boxes; the training device decodes the batch (:mod:`mdistiller.dataset.device_decode`:
  nvJPEG on CUDA) and crops and resizes there.
"""

import copy
import io
import math
import os
import re
import warnings

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from ..utils.checks import check_choice
from ..utils.errors import DataError
from .base import DatasetSpec, data_root, register_dataset

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SIZE = 224
#: RandomResizedCrop's defaults: area fraction and aspect-ratio range of the training crops
SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)
#: DATASET.DECODE's values
DECODES = ("cpu", "device")
#: PIL's JPEG DCT scalings (draft): the image side is divided by one of these
DRAFT_SCALES = (8, 4, 2)


def crop_box(height, width):
    """``(top, left, h, w)`` of a training crop of a ``height`` x ``width`` image, drawn by
    torchvision's own ``RandomResizedCrop.get_params`` (the global torch RNG, as the
    transform) on a stand-in of that size that holds no pixels."""
    return tuple(RandomResizedCrop.get_params(torch.empty(1, 1, 1).expand(1, height, width), SCALE, RATIO))


def val_side(size):
    """The shorter side validation images are resized to before the centre crop (256 for 224)."""
    return round(size * 256 / 224)


def draft_scale(width, height, min_side, needed):
    """The largest JPEG DCT scaling (8, 4, 2, else 1) keeping ``min_side`` (the smallest
    side of what is kept) at least ``needed`` pixels."""
    return next((s for s in DRAFT_SCALES if min_side / s >= needed and min(width, height) >= s), 1)


def decode_jpeg_rgb(data, device="cpu"):
    """``torchvision.io.decode_jpeg`` of one uint8 tensor of JPEG bytes (or a list) to RGB
    uint8 (3, H, W) on ``device``, without the deprecation notice torchvision 0.29 gives for
    its image codecs; raises RuntimeError for what libjpeg-turbo (nvJPEG on CUDA) refuses."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


#: what PIL raises for a missing, corrupt, truncated or oversized image
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def unreadable_image(path, error):
    """The one-line error naming an image no decoder reads, and what to do."""
    detail = re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(error)).strip()  # the path says which
    return DataError(f"image '{path}' cannot be read ({type(error).__name__}: {detail[:200]}); replace or remove it")


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def image_header(data):
    """``(width, height, plain_jpeg)`` of an image's bytes from its header alone (no decoding);
    ``plain_jpeg``: an RGB JPEG, which libjpeg decodes as PIL does."""
    with Image.open(io.BytesIO(data)) as im:
        return im.size[0], im.size[1], im.format == "JPEG" and im.mode == "RGB"


def centre_view(image, size):
    """The validation view of a uint8 (3, H, W) tensor: the shorter side resized to
    :func:`val_side` (antialiased), then the centre ``size`` square (both decode modes)."""
    return TF.center_crop(TF.resize(image, val_side(size), antialias=True), [size, size])


def open_rgb(source, reduce=1, reduce_for=None):
    """PIL RGB image of a path or bytes; a JPEG decoded at 1/``reduce`` of its size (``draft``).
    ``reduce_for(height, width) -> reduce``, when given, is called with the header's size
    before decoding and decides the reduction (the file is opened once). Returns (image,
    (sx, sy)): the original pixels per decoded pixel along x and y."""
    with Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as im:
        width, height = im.size
        if reduce_for is not None:
            reduce = reduce_for(height, width)
        if reduce > 1 and im.format == "JPEG":
            im.draft("RGB", (math.ceil(width / reduce), math.ceil(height / reduce)))
        im.load()
        image = im if im.mode == "RGB" else im.convert("RGB")  # an RGB JPEG needs no copy
    if image.size == (width, height):
        return image, (1.0, 1.0)
    exact = image.size == (math.ceil(width / reduce), math.ceil(height / reduce))
    return image, ((reduce, reduce) if exact else (width / image.width, height / image.height))


def resized_crops(image, scale, boxes, size):
    """uint8 CHW tensors: each box ``(top, left, h, w)`` (original pixel coordinates) of a PIL
    ``image`` decoded at ``scale`` = (sx, sy) original pixels per pixel, resized to ``size``
    squared with an antialiased bilinear filter (crop then resize, as RandomResizedCrop).

    ``image`` may also be a uint8 (3, H, W) tensor at full size. A full-size image is cropped
    and resized by torch's uint8 kernel (the one the ``device`` mode uses; it rounds like
    PIL's filter to within one grey level and, on AVX2, takes about half PIL's time). A
    reduced-size decode (``draft``) is resized by PIL from a float box in the decoded image's
    coordinates, which keeps the crop's geometry exact."""
    if isinstance(image, torch.Tensor) or scale == (1.0, 1.0):
        pixels = image if isinstance(image, torch.Tensor) else TF.pil_to_tensor(image)
        return [TF.resized_crop(pixels, top, left, h, w, [size, size], antialias=True).contiguous()
                for top, left, h, w in boxes]
    sx, sy = scale
    out = []
    for top, left, h, w in boxes:
        box = (left / sx, top / sy, (left + w) / sx, (top + h) / sy)
        out.append(TF.pil_to_tensor(image.resize((size, size), Image.BILINEAR, box=box)))
    return out


def collate_encoded(items):
    """Collate ``DECODE device`` items: the bytes and the boxes stay lists (the bytes differ in
    length; the boxes are read on the host by the decoder, so they never go to the device)."""
    out = {"jpeg": [it["jpeg"] for it in items], "path": [it["path"] for it in items],
           "target": torch.tensor([it["target"] for it in items]), "index": torch.tensor([it["index"] for it in items])}
    for key in ("box", "box_strong"):
        if key in items[0]:
            out[key] = [it[key] for it in items]
    return out


class ImageFolderDataset(Dataset):
    """An ImageFolder whose items are ``{"image": uint8 CHW, "target", "index"}`` dicts, with
    the ImageNet-style crops at ``size`` (validation resized to ``size * 256 / 224`` first),
    plus ``crop_strong`` (an independent second crop) in training with two views (:meth:`set_views`).
    With ``decode="device"`` items are ``{"jpeg": uint8 bytes, "path", "box"(, "box_strong"),
    "target", "index"}`` instead (see :func:`collate_encoded` and the module's docstring)."""

    def __init__(self, root, train, size=SIZE, decode="cpu", draft=True):
        self.folder = ImageFolder(root)
        self.targets = self.folder.targets
        self.train, self.views, self.size, self.decode, self.draft = train, 1, size, decode, draft
        self.collate_fn = collate_encoded if decode == "device" else None

    def eval_view(self):
        """These images loaded as the validation split is (a training split's holdout: the
        resize and centre crop, one view), sharing the folder listing and the decode mode."""
        view = copy.copy(self)
        view.train, view.views = False, 1
        return view

    def set_views(self, num_views):
        """Views the training pipeline makes: with 2, each item carries a second, independent crop."""
        self.views = num_views

    def __len__(self):
        return len(self.folder)

    @property
    def num_boxes(self):
        """Crop boxes per training item: one, or two independent ones for two views."""
        return 2 if self.views == 2 else 1

    def boxes(self, height, width):
        """The item's crop boxes, drawn for an image of that size."""
        return [crop_box(height, width) for _ in range(self.num_boxes)]

    def __getitem__(self, i):
        path, target = self.folder.samples[i]
        if self.decode == "device":
            return self.encoded_item(path, target, i)
        try:
            return self.decoded_item(path, target, i)
        except IMAGE_ERRORS as e:
            raise unreadable_image(path, e) from None

    def decoded_item(self, path, target, i):
        """The ``cpu`` mode's item: the crops (training) or the centre view (validation)."""
        item = {"target": target, "index": i}
        if not self.train:
            side = val_side(self.size)
            image = open_rgb(path, reduce_for=lambda h, w: self.reduction(w, h, min(w, h), side))[0]
            item["image"] = centre_view(TF.pil_to_tensor(image), self.size)
            return item

        data = read_bytes(path)
        width, height, plain_jpeg = image_header(data)
        boxes = self.boxes(height, width)  # drawn from the header's size, before decoding
        reduce = self.reduction(width, height, min(min(b[2:]) for b in boxes), self.size)
        image, scale = None, (1.0, 1.0)
        if plain_jpeg and reduce == 1:
            try:
                image = decode_jpeg_rgb(torch.frombuffer(bytearray(data), dtype=torch.uint8))
            except RuntimeError:  # PIL below reads it, or says why it cannot
                image = None
        if image is None:
            image, scale = open_rgb(data, reduce)
        crops = resized_crops(image, scale, boxes, self.size)
        item["image"] = crops[0]
        if len(crops) == 2:
            item["crop_strong"] = crops[1]  # its own RandomResizedCrop draw
        return item

    def reduction(self, width, height, min_side, needed):
        """The JPEG decoding reduction (DECODE_DRAFT), 1 when off."""
        return draft_scale(width, height, min_side, needed) if self.draft else 1

    def encoded_item(self, path, target, i):
        """The file's bytes and crop boxes (drawn from its header's size); a file PIL cannot
        identify gets empty boxes and is dealt with by the decoder."""
        data = read_bytes(path)
        item = {"jpeg": torch.frombuffer(bytearray(data), dtype=torch.uint8), "path": path, "target": target,
                "index": i}
        if self.train:
            try:
                width, height, _ = image_header(data)
                boxes = self.boxes(height, width)
            except IMAGE_ERRORS:
                boxes = [(0, 0, 0, 0)] * self.num_boxes
            item["box"] = boxes[0]
            if len(boxes) == 2:
                item["box_strong"] = boxes[1]
        return item


def check_decode(cfg):
    """DATASET.DECODE is cpu or device."""
    check_choice(cfg.DATASET, "DATASET", "DECODE", DECODES)


def _split(root, name, train, cfg):
    path = os.path.join(root, name)
    try:
        return ImageFolderDataset(path, train, decode=cfg.DATASET.DECODE, draft=cfg.DATASET.DECODE_DRAFT)
    except (FileNotFoundError, NotADirectoryError):
        raise DataError(
            f"ImageNet {name} split not found or empty at '{path}'; expected {root}/train/<wnid>/*.JPEG and "
            f"{root}/val/<wnid>/*.JPEG (validation images sorted into class folders); set DATASET.ROOT") from None


@register_dataset("imagenet")
def build_imagenet(cfg):
    check_decode(cfg)
    root = data_root(cfg, os.path.join("data", "imagenet"))
    train, val = _split(root, "train", True, cfg), _split(root, "val", False, cfg)
    if train.folder.classes != val.folder.classes:
        raise DataError(f"ImageNet train and val class folders differ under '{root}'; sort val into the same class folders")
    return DatasetSpec(train, val, num_classes=len(train.folder.classes), model_family="imagenet",
                       mean=MEAN, std=STD, image_size=SIZE, pad=0)
