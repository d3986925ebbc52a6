"""Throughput of the input pipeline on one CPU core: worker work + collation + device views.

``python -m mdistiller.dataset.bench`` prints images/s for one and two views on the
synthetic dataset (the same 32x32 work as CIFAR-100), and the ImageNet two-view worker item
per core for ``DATASET.DECODE`` cpu (with and without reduced-size decoding) and device,
beside the SLD reference's item, on generated photo-like JPEGs (:func:`time_imagenet_items`).
"""

import os
import random
import statistics
import tempfile
import time

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageOps
from torch.utils.data import default_collate

from ..config.defaults import CFG
from . import get_dataset
from .augment import OP_HI, OP_LO, OP_NAMES, build_batch_transform
from .device_decode import DeviceDecoder
from .imagenet import MEAN, STD, ImageFolderDataset


def time_pipeline(spec, num_views, batch_size=256, seconds=2.0, seed=0):
    """Training images/s through ``spec.train[i]``, collation and the batch transform.

    Runs single-threaded (``torch.set_num_threads(1)``, restored afterwards) for about
    ``seconds`` after one warm-up batch, on the CPU.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(seed)
        transform = build_batch_transform(spec, num_views, train=True, device="cpu", generator=g)
        ds = spec.train

        def step():
            idx = torch.randint(len(ds), (batch_size,), generator=g).tolist()
            transform(default_collate([ds[i] for i in idx]))

        step()
        images, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            step()
            images += batch_size
        return images / elapsed
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------
# ImageNet: the two-view worker item, per core
# ---------------------------------------------------------------------------------------
#: ImageNet's typical image: 500 x 375 pixels
IMAGENET_SIZE = (500, 375)


def photo_like(rng, width, height):
    """A photo-like RGB image (smooth shapes, mid-scale texture, sensor noise): it compresses
    and decodes like a photograph rather than like noise or a flat colour."""
    low = Image.fromarray((rng.random((12, 16, 3)) * 255).astype("uint8")).resize((width, height), Image.BICUBIC)
    mid = Image.fromarray((rng.random((height // 8, width // 8, 3)) * 255).astype("uint8")).resize(
        (width, height), Image.BILINEAR)
    pixels = 0.6 * np.asarray(low, float) + 0.4 * np.asarray(mid, float) + rng.normal(0, 14, (height, width, 3))
    return Image.fromarray(pixels.clip(0, 255).astype("uint8"))


def make_jpeg_folder(root, n=32, size=IMAGENET_SIZE, seed=0, quality=90):
    """``root/train/c0/<i>.JPEG``: ``n`` photo-like JPEGs of ``size`` (ImageNet's typical 500 x 375);
    returns the train folder."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "train", "c0")
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        photo_like(rng, *size).save(os.path.join(folder, f"{i}.JPEG"), quality=quality)
    return os.path.join(root, "train")


#: the strong view's RandAugment ops as PIL applies them (the reference's FixMatch table):
#: name -> (PIL image, magnitude) -> PIL image
PIL_OPS = {
    "AutoContrast": lambda im, v: ImageOps.autocontrast(im),
    "Brightness": lambda im, v: ImageEnhance.Brightness(im).enhance(v),
    "Color": lambda im, v: ImageEnhance.Color(im).enhance(v),
    "Contrast": lambda im, v: ImageEnhance.Contrast(im).enhance(v),
    "Equalize": lambda im, v: ImageOps.equalize(im),
    "Identity": lambda im, v: im,
    "Posterize": lambda im, v: ImageOps.posterize(im, max(1, int(v))),
    "Rotate": lambda im, v: im.rotate(v),
    "Sharpness": lambda im, v: ImageEnhance.Sharpness(im).enhance(v),
    "ShearX": lambda im, v: im.transform(im.size, Image.AFFINE, (1, v, 0, 0, 1, 0)),
    "ShearY": lambda im, v: im.transform(im.size, Image.AFFINE, (1, 0, 0, v, 1, 0)),
    "Solarize": lambda im, v: ImageOps.solarize(im, v),
    "TranslateX": lambda im, v: im.transform(im.size, Image.AFFINE, (1, 0, v * im.size[0], 0, 1, 0)),
    "TranslateY": lambda im, v: im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, v * im.size[1])),
}


class ReferenceItem:
    """The SLD reference's two-view ImageNet item: PIL decode, then per view
    ``RandomResizedCrop(224)`` + flip (+ RandAugment, two ops, and Cutout on the strong view)
    + ``ToTensor`` + ``Normalize`` (torchvision's classic transforms, on PIL images)."""

    def __init__(self, folder, size=224):
        from torchvision import transforms as T
        from torchvision.datasets import ImageFolder

        self.samples = ImageFolder(folder).samples
        self.crop = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip()])
        self.tensor = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])
        self.ops, self.size = PIL_OPS, size

    def strong(self, im):
        for _ in range(2):
            j = random.randrange(len(OP_NAMES))
            im = self.ops[OP_NAMES[j]](im, float(OP_LO[j] + (OP_HI[j] - OP_LO[j]) * random.random()))
        side = self.size * 0.5 * random.random()
        cx, cy = random.uniform(0, self.size), random.uniform(0, self.size)
        ImageDraw.Draw(im).rectangle((max(0, cx - side / 2), max(0, cy - side / 2), cx + side / 2, cy + side / 2),
                                     fill=(125, 123, 114))
        return im

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, target = self.samples[i]
        with Image.open(path) as f:
            image = f.convert("RGB")
        return {"weak": self.tensor(self.crop(image)), "strong": self.tensor(self.strong(self.crop(image))),
                "target": target}


def imagenet_item_makers(folder, size=224):
    """name -> (dataset, collate) of the two-view worker item: the reference's, this project's
    ``DATASET.DECODE cpu`` with and without reduced-size decoding, and ``device``."""
    makers = {"reference": (ReferenceItem(folder, size), default_collate)}
    for name, decode, draft in (("cpu", "cpu", True), ("cpu-no-draft", "cpu", False), ("device", "device", True)):
        ds = ImageFolderDataset(folder, True, size, decode=decode, draft=draft)
        ds.set_views(2)
        makers[name] = (ds, ds.collate_fn or default_collate)
    return makers


def time_items(makers, seconds=2.0, batch_size=32, rounds=8, seed=0, clock=time.process_time):
    """Items/s of ``dataset[i]`` + ``collate`` for each ``name -> (dataset, collate)`` of
    ``makers`` on one core (one torch thread): what one loader worker delivers. The makers
    take turns in ``rounds`` rounds (after one warm-up batch each; each round starts with the
    next maker, so none always follows the same one), ``seconds`` in all, so they share the
    machine's state; each figure is the median over its rounds of
    this process's CPU time (``clock``), which other processes on a busy machine barely move."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        random.seed(seed)
        rates = {name: [] for name in makers}
        for dataset, collate in makers.values():
            collate([dataset[i % len(dataset)] for i in range(batch_size)])
        names = list(makers)
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:  # each round starts elsewhere
                dataset, collate = makers[name]
                items, start, i = 0, clock(), 0
                while (elapsed := clock() - start) < seconds / rounds / len(makers) or items == 0:
                    collate([dataset[(i + k) % len(dataset)] for k in range(batch_size)])
                    items, i = items + batch_size, i + batch_size
                rates[name].append(items / elapsed)
        return {name: statistics.median(r) for name, r in rates.items()}
    finally:
        torch.set_num_threads(threads)


def time_device_decode(folder, device, seconds=2.0, batch_size=32, size=224):
    """Two-view images/s of the device side of ``DATASET.DECODE device`` on ``device``: decode
    the batch, crop and resize both views (what the training device adds per step)."""
    ds = ImageFolderDataset(folder, True, size, decode="device")
    ds.set_views(2)
    torch.manual_seed(0)
    batch = ds.collate_fn([ds[i % len(ds)] for i in range(batch_size)])
    if device.type == "cuda":
        batch["jpeg"] = [t.pin_memory() for t in batch["jpeg"]]
    decoder = DeviceDecoder(size, device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)  # noqa: E731
    decoder(dict(batch))
    sync()
    images, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        decoder(dict(batch))
        sync()
        images += batch_size
    return images / elapsed


def imagenet_pipeline_rates(seconds=2.0, n=32, size=IMAGENET_SIZE, names=None):
    """``{name: images/s}`` of the two-view worker items (see :func:`imagenet_item_makers`;
    all, or ``names``) on ``n`` generated JPEGs of ``size``, measured together (:func:`time_items`)."""
    with tempfile.TemporaryDirectory() as tmp:
        makers = imagenet_item_makers(make_jpeg_folder(tmp, n, size))
        return time_items({k: v for k, v in makers.items() if names is None or k in names}, seconds)


def main():
    cfg = CFG.clone()
    cfg.DATASET.TYPE, cfg.DATASET.SYNTHETIC_SIZE = "synthetic", 4096
    spec = get_dataset(cfg)
    for views in (1, 2):
        print(f"{views} view(s): {time_pipeline(spec, views):.0f} images/s on one core")
    for name, rate in imagenet_pipeline_rates().items():
        print(f"ImageNet two-view worker item, {name}: {rate:.1f} images/s on one core")


if __name__ == "__main__":
    main()
