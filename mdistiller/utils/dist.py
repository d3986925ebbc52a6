"""Device selection and torch.distributed set-up, in one place.

Launch with ``torchrun`` for several processes: it sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; the backend is NCCL on CUDA and gloo on CPU. Plain ``python3`` runs one
process. A second, gloo-backed group carries small control messages (the stop decision
on SIGTERM) without synchronising the CUDA stream.
"""

import datetime
import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from .errors import ConfigError


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

    def broadcast_buffers(self, module, skip=()):
        """Give every rank rank 0's buffers of ``module`` (BN running statistics), except
        those whose names start with a prefix in ``skip``. DDP copies them only at the start
        of each forward, so after an epoch's last step each rank holds the statistics of its
        own last batch, while checkpoints keep rank 0's."""
        if self.distributed:
            for name, buf in module.named_buffers():
                if not name.startswith(tuple(skip)):
                    dist.broadcast(buf, src=0)

    def gather_objects(self, obj):
        """``[obj of rank 0, obj of rank 1, ...]`` on every rank (pickled over the gloo
        group; for small host-side state such as RNG states, never per step)."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.control_group)
        return out


def resolve_device(name, local_rank=0, world_size=1):
    """``auto`` -> CUDA when present, else CPU; ``cuda`` -> ``cuda:LOCAL_RANK``. A missing
    GPU, or one GPU pinned for several processes, is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("SOLVER.DEVICE is cuda but no CUDA device is available; use SOLVER.DEVICE cpu or auto")
        if name != "cuda" and world_size > 1:
            raise ConfigError(f"SOLVER.DEVICE {name} puts every torchrun process on one GPU; use SOLVER.DEVICE cuda "
                              f"or auto (process LOCAL_RANK takes cuda:LOCAL_RANK)")
        if name == "cuda":
            if local_rank >= torch.cuda.device_count():
                raise ConfigError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs are visible; "
                                  f"start at most that many processes per node (torchrun --nproc_per_node)")
            name = f"cuda:{local_rank}"
    return torch.device(name)


def init_distributed(device_name):
    """Set up the process group when launched by torchrun; return a DistContext."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank, world_size)
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


def shutdown_distributed(clean=False):
    """Tear the process groups down. After a ``clean`` end (every rank finished or stopped
    together) the ranks first meet at a barrier, so none closes its connections while a peer
    still uses them; then the groups and what still holds them (DDP's reducer) are released
    while the interpreter is whole, not during its shutdown, where gloo's threads may abort
    the process. An error path skips the barrier: a peer may never reach it."""
    if dist.is_available() and dist.is_initialized():
        if clean:
            try:
                dist.barrier()
            except RuntimeError:  # a peer failed after all (its own error says why); leave anyway
                pass
        dist.destroy_process_group()
        gc.collect()


def wrap_ddp(module, ctx, ignore=None):
    """``module`` in DistributedDataParallel on ``ctx``'s device; parameters and buffers
    whose names start with ``ignore`` (the frozen teacher) are neither synchronised nor
    broadcast."""
    if ignore:
        names = [n for n, _ in module.named_parameters() if n.startswith(ignore)]
        names += [n for n, _ in module.named_buffers() if n.startswith(ignore)]
        DDP._set_params_and_buffers_to_ignore_for_model(module, names)
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DDP(module, device_ids=ids)
