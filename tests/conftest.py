"""Shared test helpers: reference data loading and the reference's deterministic fill."""

import contextlib
import gzip
import json
import math
import os
import zlib
from functools import lru_cache

import pytest
import torch

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

torch.set_num_threads(min(2, torch.get_num_threads()))
# the suite keeps its thread count: no idle-core thread choice in training runs
# (mdistiller.utils.threads, tested in tests/engine/test_threads.py)
os.environ["MDISTILLER_THREAD_DEFAULTS"] = "0"


@lru_cache(maxsize=None)
def load_reference(name):
    """Load ``tests/data/<name>.json.gz`` (recorded from the reference implementations)."""
    with gzip.open(os.path.join(DATA_DIR, f"{name}.json.gz"), "rt") as f:
        return json.load(f)


def fill_values(key, shape):
    """The reference README's deterministic fill for one state-dict entry (float64 values)."""
    n = 1
    for s in shape:
        n *= s
    phase = (zlib.crc32(key.encode()) % 1000) / 100
    v = torch.sin(0.37 * torch.arange(n, dtype=torch.float64) + phase)
    if key.endswith("running_var"):
        v = v.abs() + 0.5
    elif key.endswith("running_mean"):
        v = 0.1 * v
    elif key.endswith(".weight") and len(shape) == 1:
        v = 0.5 + 0.1 * v
    else:
        fan_in = max(1, n // shape[0]) if len(shape) >= 2 else n
        v = v * math.sqrt(2 / fan_in)
    return v.reshape(shape)


def deterministic_fill(module, keep=lambda key: False):
    """Apply the fill to every state-dict entry of ``module`` (except keys where ``keep``)."""
    sd = module.state_dict()
    new = {}
    for k, t in sd.items():
        if keep(k):
            new[k] = t
        elif not t.is_floating_point():
            new[k] = torch.zeros_like(t)
        else:
            new[k] = fill_values(k, tuple(t.shape)).to(t.dtype)
    module.load_state_dict(new)
    return module


def probe_input(batch=2, dtype=torch.float64):
    n = batch * 3 * 32 * 32
    return torch.sin(0.01 * torch.arange(n, dtype=dtype)).reshape(batch, 3, 32, 32)


@contextlib.contextmanager
def torch_threads(n):
    """Run the block with ``n`` intra-op torch threads, then restore the previous count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    """Tiny tensors: intra-op threads only add overhead (seconds on a busy machine)."""
    with torch_threads(1):
        yield


@pytest.fixture
def reference():
    return load_reference


PLUGIN_MODULE_PREFIXES = ("mdistiller_plugin_", "mdistiller.distillers.", "plugin_test_")


class MethodsSnapshot:
    """The distiller registry, the config nodes and the loaded modules at creation;
    :meth:`restore` undoes the registrations and plugin imports made since (what a fresh
    process would see)."""

    def __init__(self):
        import sys

        from mdistiller import distillers
        from mdistiller.config.defaults import CFG

        self.distillers, self.cfg = distillers, CFG
        self.items, self.owners = dict(distillers.DISTILLERS._items), dict(distillers._NODE_OWNERS)
        self.nodes, self.modules = {k: CFG[k] for k in CFG}, set(sys.modules)

    def restore(self):
        import sys

        self.distillers.DISTILLERS._items.clear()
        self.distillers.DISTILLERS._items.update(self.items)
        self.distillers._NODE_OWNERS.clear()
        self.distillers._NODE_OWNERS.update(self.owners)
        for key in [k for k in self.cfg if k not in self.nodes]:
            del self.cfg[key]
        self.cfg.update(self.nodes)
        for name in set(sys.modules) - self.modules:
            if name.startswith(PLUGIN_MODULE_PREFIXES):
                del sys.modules[name]


@pytest.fixture
def restore_methods():
    """Registrations and plugin imports of the test are undone afterwards (and whenever the
    test calls ``restore()`` on the snapshot it gets)."""
    snapshot = MethodsSnapshot()
    yield snapshot
    snapshot.restore()


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped without one); scripts/gpu_check.sh runs them")
