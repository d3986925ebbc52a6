"""Start a function in N local processes as torchrun would (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR/PORT in the environment), with free loopback ports and a deadline."""

import os
import socket
import sys
import time

import torch
import torch.multiprocessing as mp


def free_ports(n):
    """``n`` distinct loopback ports free at the time of the call."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def use_port(port):
    """The next process group of this process meets at ``port`` (set before each init)."""
    os.environ["MASTER_PORT"] = str(port)


def _entry(rank, fn, world_size, ports, args):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1")
    use_port(ports[0])
    torch.set_num_threads(1)
    fn(rank, ports, *args)
    # What the tests check is on disk by now. Leave without the interpreter's teardown, where
    # gloo's threads have aborted a finished process (SIGABRT, "terminate called without an
    # active exception"; pytorch/pytorch#65237): once in a full-suite CI run, after all of
    # the job's training had completed on both ranks.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_ranks(fn, *args, world_size=2, num_ports=1, timeout=120):
    """Run ``fn(rank, ports, *args)`` in ``world_size`` spawned processes; an exception in
    any of them is re-raised here (``ProcessRaisedException`` with its traceback)."""
    ctx = mp.start_processes(_entry, args=(fn, world_size, free_ports(num_ports), args), nprocs=world_size,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                raise TimeoutError(f"distributed job did not finish within {timeout} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
