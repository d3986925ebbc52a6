"""Sample order: reproducible per (seed, epoch), rank sharding, mid-epoch start; loaders."""

import pytest
import torch

from mdistiller.dataset import build_loaders, get_dataset, set_epoch
from mdistiller.dataset.bench import time_pipeline
from mdistiller.dataset.loader import ShardBatchSampler
from mdistiller.engine.cfg import get_default_cfg
from mdistiller.utils.errors import ConfigError


def flat(batches):
    return [i for b in batches for i in b]


@pytest.mark.parametrize("size", [10, 11, 13, 2])
def test_validation_split_covers_every_sample_once(size):
    shards = [flat(ShardBatchSampler(size, 4, rank, 3)) for rank in range(3)]
    everything = sorted(i for s in shards for i in s)
    assert everything == list(range(size))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


@pytest.mark.parametrize("size", [10, 11, 13])
def test_training_split_pads_evenly_and_covers_all(size):
    samplers = [ShardBatchSampler(size, 2, rank, 4, shuffle=True, seed=7, pad=True) for rank in range(4)]
    shards = [flat(s) for s in samplers]
    assert len({len(s) for s in shards}) == 1 and len({len(s) for s in samplers}) == 1
    assert set(i for s in shards for i in s) == set(range(size))
    assert sum(map(len, shards)) - size < 4  # only the padding repeats


def test_order_is_a_function_of_seed_and_epoch():
    def order(seed, epoch):
        s = ShardBatchSampler(100, 8, shuffle=True, seed=seed)
        s.set_epoch(epoch)
        return flat(s)

    assert order(0, 3) == order(0, 3) and sorted(order(0, 3)) == list(range(100))
    assert order(0, 3) != order(0, 4) and order(0, 3) != order(1, 3)


def test_mid_epoch_start_yields_the_tail_of_the_epoch():
    s = ShardBatchSampler(103, 10, rank=1, world_size=2, shuffle=True, seed=3, pad=True, drop_single=True)
    s.set_epoch(5)
    full = list(s)
    assert len(full) == len(s) == s.num_batches == 6
    s.set_epoch(5, start_step=4)
    assert list(s) == full[4:] and len(s) == 2 and s.num_batches == 6
    s.set_epoch(5, start_step=6)
    assert list(s) == [] and len(s) == 0


def test_final_single_sample_batch_is_dropped_in_training_only():
    train = ShardBatchSampler(21, 4, shuffle=True, pad=True, drop_single=True)
    assert [len(b) for b in train] == [4] * 5 and len(train) == 5
    assert [len(b) for b in ShardBatchSampler(21, 4)] == [4] * 5 + [1]


def synthetic_cfg(**solver):
    cfg = get_default_cfg()
    cfg.DATASET.TYPE, cfg.DATASET.SYNTHETIC_SIZE, cfg.DATASET.NUM_WORKERS = "synthetic", 40, 0
    cfg.SOLVER.BATCH_SIZE, cfg.DATASET.TEST.BATCH_SIZE = 8, 6
    for k, v in solver.items():
        setattr(cfg.SOLVER, k, v)
    return cfg


def test_loaders_give_dict_batches_split_over_ranks():
    cfg = synthetic_cfg()
    spec = get_dataset(cfg)
    train, val = build_loaders(cfg, spec, num_views=2, rank=1, world_size=2, seed=4)
    batch = next(iter(train))
    assert set(batch) == {"image", "target", "index"}
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (4, 3, 32, 32)
    assert torch.equal(batch["image"][0], spec.train[int(batch["index"][0])]["image"])
    assert len(train) == 5 and sum(len(b["index"]) for b in val) == 5  # 10 val samples, half each
    with pytest.raises(ConfigError, match="multiple of 3"):
        build_loaders(cfg, spec, rank=0, world_size=3)


def test_set_epoch_reaches_persistent_workers_and_resumes_mid_epoch():
    cfg = synthetic_cfg()
    cfg.DATASET.NUM_WORKERS = 1
    spec = get_dataset(cfg)
    train, _ = build_loaders(cfg, spec, seed=1)

    def epoch_indices(epoch, start_step=0):
        set_epoch(train, epoch, start_step)
        return [b["index"].tolist() for b in train]

    first, second = epoch_indices(1), epoch_indices(2)
    assert first != second and sorted(flat(first)) == list(range(40))
    assert epoch_indices(1, start_step=3) == first[3:]
    assert epoch_indices(1) == first


def test_time_pipeline_reports_throughput():
    spec = get_dataset(synthetic_cfg())
    threads = torch.get_num_threads()
    assert time_pipeline(spec, 2, batch_size=16, seconds=0.05) > 0
    assert torch.get_num_threads() == threads
