"""Small helpers of the trainer: seeding, RNG state, accuracy, provenance."""

import ctypes
import os
import platform
import random
import subprocess
import sys

import torch
import torchvision

import mdistiller

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def derive_seed(*parts):
    """A 31-bit seed from integers (base seed, epoch, rank, ...), stable across runs."""
    s = 0x9E3779B1
    for p in parts:
        s = (s * 1000003 + int(p) + 1) % (2**31 - 1)
    return s


def seed_everything(seed):
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:  # numpy is optional
        pass


def set_deterministic(enabled):
    if not enabled:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def rng_state(generator=None):
    """Torch (CPU and CUDA), Python and augmentation-generator RNG states, checkpointable."""
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_version": random.getstate()[0], "python_gauss": random.getstate()[2]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state, generator=None):
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


def topk_correct(logits, target, ks=(1, 5)):
    """Number of samples whose target is among the top-k logits, for each k (device tensors)."""
    maxk = min(max(ks), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices
    hit = pred.eq(target.view(-1, 1))
    return [hit[:, : min(k, maxk)].any(dim=1).sum() for k in ks]


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        commit = out.stdout.strip() if out.returncode == 0 else "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("+dirty" if dirty and commit != "unknown" else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(cfg, argv, world_size):
    return {
        "git_commit": git_commit(),
        "argv": list(argv),
        "command": " ".join([os.path.basename(sys.executable)] + list(sys.argv)),
        "seed": cfg.EXPERIMENT.SEED,
        "world_size": world_size,
        "versions": {"mdistiller": mdistiller.__version__, "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "python": platform.python_version()},
        "host": platform.node(),
    }


_HOST_MEMORY_RETAINED = False


def retain_host_memory():
    """Make glibc's malloc serve large blocks from its heap and keep freed memory.

    By default blocks above its mmap threshold (at most 32 MiB, e.g. a float32
    128x64x32x32 activation) are mapped fresh and unmapped on free, and the heap top is
    trimmed, so every step page-faults its activations in again (~270k faults, ~10% of an
    fp32 two-view distillation step here). The process keeps its peak memory afterwards.
    Returns False where the C library is not glibc (nothing changes there).
    """
    global _HOST_MEMORY_RETAINED
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    _HOST_MEMORY_RETAINED = bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))
    return _HOST_MEMORY_RETAINED


def host_memory_retained():
    """Whether :func:`retain_host_memory` took effect in this process."""
    return _HOST_MEMORY_RETAINED
