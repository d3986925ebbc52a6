"""A small, deterministic, learnable 32x32 dataset for tests and smoke runs (built in ms).

Class ``c`` has its own colour and its own stripe orientation and frequency; each image adds
a random stripe phase and pixel noise. Validation is a quarter of the training size, drawn
with another seed.
"""

import math

import torch

from .base import DatasetSpec, TensorImageDataset, register_dataset

SIZE = 32


def make_images(n, num_classes, seed):
    """(uint8 images (n, 3, 32, 32), int64 targets (n,)); balanced classes in turn."""
    g = torch.Generator().manual_seed(seed)
    palette = torch.rand(num_classes, 3, generator=torch.Generator().manual_seed(1234))
    c = torch.arange(n) % num_classes
    angle = math.pi * c / num_classes
    freq = 2.0 + (c % 3).float()
    phase = 2 * math.pi * torch.rand(n, generator=g)
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    proj = xx * angle.cos().view(-1, 1, 1) + yy * angle.sin().view(-1, 1, 1)
    stripes = 0.5 + 0.5 * torch.sin(2 * math.pi * freq.view(-1, 1, 1) * proj / SIZE + phase.view(-1, 1, 1))
    noise = torch.randn(n, 3, SIZE, SIZE, generator=g)
    img = 0.55 * palette[c].view(n, 3, 1, 1) + 0.35 * stripes.unsqueeze(1) + 0.08 * noise
    return (img.clamp(0, 1) * 255).round().to(torch.uint8), c


@register_dataset("synthetic")
def build_synthetic(cfg):
    n, k = cfg.DATASET.SYNTHETIC_SIZE, cfg.DATASET.SYNTHETIC_CLASSES
    train = TensorImageDataset(*make_images(n, k, seed=0))
    val = TensorImageDataset(*make_images(max(1, n // 4), k, seed=1))
    x = train.images.float().div(255)
    mean = tuple(x.mean((0, 2, 3)).tolist())
    std = tuple(x.std((0, 2, 3)).tolist())
    return DatasetSpec(train, val, num_classes=k, model_family="cifar", mean=mean, std=std,
                       image_size=SIZE, pad=4)
