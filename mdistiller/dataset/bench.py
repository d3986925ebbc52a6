"""Throughput of the input pipeline on one CPU core: worker work + collation + device views.

``python -m mdistiller.dataset.bench`` prints images/s for one and two views on the
synthetic dataset (the same 32x32 work as CIFAR-100).
"""

import time

import torch
from torch.utils.data import default_collate

from ..config.defaults import CFG
from . import get_dataset
from .augment import build_batch_transform


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


def main():
    cfg = CFG.clone()
    cfg.DATASET.TYPE, cfg.DATASET.SYNTHETIC_SIZE = "synthetic", 4096
    spec = get_dataset(cfg)
    for views in (1, 2):
        print(f"{views} view(s): {time_pipeline(spec, views):.0f} images/s on one core")


if __name__ == "__main__":
    main()
