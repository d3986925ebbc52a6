"""Device selection and torch.distributed set-up, in one place.

Launch with ``torchrun`` for several processes: it sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; the backend is NCCL on CUDA and gloo on CPU. Plain ``python3`` runs one
process. A second, gloo-backed group carries small control messages (the stop decision
on SIGTERM) without synchronising the CUDA stream.
"""

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..utils.errors import ConfigError


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    control_group: object = None

    @property
    def distributed(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0

    def barrier(self):
        if self.distributed:
            dist.barrier(group=self.control_group)

    def all_reduce_sum(self, tensor):
        """Sum ``tensor`` over ranks in place (identity on one process)."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def agree(self, flag):
        """Rank 0's boolean ``flag`` on every rank (host-side, over the gloo group)."""
        if not self.distributed:
            return bool(flag)
        t = torch.tensor([1 if flag else 0], dtype=torch.int32)
        dist.broadcast(t, src=0, group=self.control_group)
        return bool(t.item())


def resolve_device(name, local_rank=0):
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("SOLVER.DEVICE is cuda but no CUDA device is available; use SOLVER.DEVICE cpu or auto")
        if name == "cuda":
            name = f"cuda:{local_rank}"
    return torch.device(name)


def init_distributed(device_name):
    """Set up the process group when launched by torchrun; return a DistContext."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size <= 1:
        return DistContext(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    control = dist.new_group(backend="gloo") if device.type == "cuda" else None
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device,
                       control_group=control)


def shutdown_distributed():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
