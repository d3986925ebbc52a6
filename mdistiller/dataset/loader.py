"""Data loaders with a reproducible, resumable, rank-sharded sample order.

The training order of epoch ``e`` is a permutation seeded with ``seed + e`` (the same on every
rank, as ``DistributedSampler``), split round-robin over ranks after padding with repeated
samples so every rank gets the same number of batches. A resumed run calls
``set_epoch(loader, epoch, start_step=k)`` to skip the epoch's first ``k`` batches without
loading them. Validation splits the samples over ranks without padding, so each sample is
counted exactly once.
"""

import ctypes
import math
import signal
import sys

import torch
from torch.utils.data import DataLoader, Sampler

from ..utils.errors import ConfigError
from .base import collate_fn, set_views


class ShardBatchSampler(Sampler):
    """Yields this rank's batches (lists of indices) of one epoch.

    ``shuffle``: permutation seeded with ``seed + epoch``, else index order. ``pad``: repeat
    samples so ``size`` divides evenly over ranks (training); without it ranks may differ by
    one sample (validation). ``drop_single``: drop a final batch of one sample, which
    BatchNorm cannot train on. ``len()`` counts the batches left after ``start_step``;
    ``num_batches`` counts the whole epoch.
    """

    def __init__(self, size, batch_size, rank=0, world_size=1, shuffle=False, seed=0, pad=False,
                 drop_single=False):
        self.size, self.batch_size, self.rank, self.world_size = size, batch_size, rank, world_size
        self.shuffle, self.seed, self.pad, self.drop_single = shuffle, seed, pad, drop_single
        self.epoch, self.start_step = 0, 0

    def set_epoch(self, epoch, start_step=0):
        self.epoch, self.start_step = epoch, start_step

    def indices(self):
        """This rank's sample indices for the current epoch, in order."""
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.size)
        if self.pad:
            total = math.ceil(self.size / self.world_size) * self.world_size
            order = order.repeat(math.ceil(total / self.size))[:total]
        return order[self.rank::self.world_size]

    @property
    def num_batches(self):
        n = math.ceil(self.size / self.world_size) if self.pad else len(range(self.rank, self.size, self.world_size))
        full, rest = divmod(n, self.batch_size)
        return full + (rest > 1 or (rest == 1 and not self.drop_single))

    def __iter__(self):
        batches = self.indices().split(self.batch_size)[self.start_step:self.num_batches]
        return iter([b.tolist() for b in batches])

    def __len__(self):
        return max(0, self.num_batches - self.start_step)


def to_device(batch, device):
    """The tensors of a batch dict on ``device`` (asynchronously from pinned memory)."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def prefetch_to_device(batches, device):
    """``batches`` already on ``device``, each copy issued one batch ahead: batch k+1 is
    fetched and its copy started before batch k is handed out. On CUDA the copies run on a
    side stream (``non_blocking`` from the loader's pinned memory) that the compute stream
    waits for, so a step overlaps the next batch's transfer; elsewhere the order of work
    is the same without streams (SOLVER.PREFETCH)."""
    stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def issue(batch):
        if stream is None:
            return to_device(batch, device)
        with torch.cuda.stream(stream):
            return to_device(batch, device)

    def ready(batch):
        if stream is not None:
            current = torch.cuda.current_stream(device)
            current.wait_stream(stream)
            for v in batch.values():
                if torch.is_tensor(v):
                    v.record_stream(current)  # its memory is not reused before the step is done
        return batch

    pending = None
    for batch in batches:
        if pending is not None:
            out = ready(pending)
            pending = issue(batch)
            yield out
        else:
            pending = issue(batch)
    if pending is not None:
        yield ready(pending)


def set_epoch(loader, epoch, start_step=0):
    """Select ``epoch``'s sample order for ``loader``, starting at batch ``start_step``."""
    loader.batch_sampler.set_epoch(epoch, start_step)


def check_batch(cfg, world_size):
    """``SOLVER.BATCH_SIZE`` is the global batch: it must divide over the processes."""
    if cfg.SOLVER.BATCH_SIZE % world_size:
        raise ConfigError(f"SOLVER.BATCH_SIZE {cfg.SOLVER.BATCH_SIZE} (the global batch) does not divide by "
                          f"{world_size} processes; choose a multiple of {world_size}")


def die_with_parent(worker_id=None):
    """In a loader worker: the kernel kills it when the training process dies, whatever the
    signal (SIGKILL included), so no worker outlives its run (Linux; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def check_subset(cfg, train_loader):
    """A training run needs at least one batch of training images."""
    if len(train_loader) == 0 or len(train_loader.dataset) < cfg.SOLVER.BATCH_SIZE:
        held = f" and DATASET.HOLDOUT {cfg.DATASET.HOLDOUT}" if cfg.DATASET.HOLDOUT > 0 else ""
        raise ConfigError(f"DATASET.SUBSET {cfg.DATASET.SUBSET}{held} {'leave' if held else 'leaves'} {len(train_loader.dataset)} training images, "
                          f"less than one batch of SOLVER.BATCH_SIZE {cfg.SOLVER.BATCH_SIZE}; raise DATASET.SUBSET "
                          f"or lower SOLVER.BATCH_SIZE")


def build_loaders(cfg, spec, num_views=1, rank=0, world_size=1, seed=0):
    """(train_loader, val_loader) for this rank; batches are dicts of uint8 images.

    ``SOLVER.BATCH_SIZE`` and ``DATASET.TEST.BATCH_SIZE`` are global: each rank loads its
    share (the training batch must divide evenly). The views are made on the device; with
    ``num_views`` 2, datasets whose workers crop return a second, independent crop per
    sample for the strong view (see :func:`~mdistiller.dataset.base.set_views`).
    """
    set_views(spec.train, num_views)
    check_batch(cfg, world_size)
    common = loader_options(cfg)
    train_sampler = ShardBatchSampler(len(spec.train), cfg.SOLVER.BATCH_SIZE // world_size, rank, world_size,
                                      shuffle=True, seed=seed, pad=True, drop_single=True)
    train = DataLoader(spec.train, batch_sampler=train_sampler, collate_fn=collate_fn(spec.train),
                       generator=torch.Generator().manual_seed(seed + rank), **common)
    return train, build_eval_loader(cfg, spec.val, rank, world_size)


def build_eval_loader(cfg, dataset, rank=0, world_size=1):
    """This rank's evaluation loader of ``dataset`` (the test split, or the holdout): in
    index order, ``DATASET.TEST.BATCH_SIZE`` global, each sample on exactly one rank."""
    sampler = ShardBatchSampler(len(dataset), math.ceil(cfg.DATASET.TEST.BATCH_SIZE / world_size), rank, world_size)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn(dataset), **loader_options(cfg))


def loader_options(cfg):
    """DataLoader options every loader of a run shares (workers, pinned memory)."""
    workers = cfg.DATASET.NUM_WORKERS
    return dict(num_workers=workers, pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
                worker_init_fn=die_with_parent if workers > 0 else None)
