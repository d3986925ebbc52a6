"""CPU thread defaults that survive a shared machine.

Two torch intra-op threads on two cores wait for each other at the end of every operation;
when another process holds one of the cores, each wait lasts a scheduler time slice, and a
short training runs several times slower than alone (``scripts/contention.py`` measures
it). Two defaults, both off when ``MDISTILLER_THREAD_DEFAULTS=0``:

* :func:`set_openmp_wait_policy` (called when ``mdistiller`` is imported, so before torch
  loads its OpenMP runtime, if torch is not imported yet): ``OMP_WAIT_POLICY=PASSIVE`` and
  ``KMP_BLOCKTIME=0`` unless already set, so idle OpenMP threads sleep instead of spinning
  on a core another process needs;
* :func:`cpu_threads` (around a training run, on the CPU): unless ``OMP_NUM_THREADS`` is set,
  as many torch threads as the machine has idle cores right now (measured over
  ``SAMPLE_SECONDS`` from ``/proc/stat``), at least one and at most the usable cores
  (``os.sched_getaffinity`` and a cgroup CPU quota), split over the node's processes.
"""

import contextlib
import logging
import math
import os
import sys
import time

log = logging.getLogger(__name__)

SWITCH = "MDISTILLER_THREAD_DEFAULTS"
OPENMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
SAMPLE_SECONDS = 0.3


def enabled(environ=os.environ):
    return environ.get(SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def set_openmp_wait_policy(environ=os.environ, modules=sys.modules):
    """Set :data:`OPENMP_DEFAULTS` where unset; only before torch is imported (OpenMP reads
    them once, when it is loaded). Returns whether it did."""
    if not enabled(environ) or "torch" in modules:
        return False
    for key, value in OPENMP_DEFAULTS.items():
        environ.setdefault(key, value)
    return True


def cgroup_cpu_limit(path="/sys/fs/cgroup/cpu.max"):
    """The cgroup v2 CPU quota in cores (``inf`` without one)."""
    try:
        with open(path) as f:
            quota, period = f.read().split()[:2]
        return math.inf if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return math.inf


def usable_cpus():
    """CPUs this process may run on (its affinity, capped by a cgroup quota)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return max(1, n if limit == math.inf else min(n, math.floor(limit)))


def read_cpu_times(path="/proc/stat"):
    """(busy, total) jiffies summed over the machine's CPUs, or None where unavailable."""
    try:
        with open(path) as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def idle_cpus(seconds=SAMPLE_SECONDS, read=read_cpu_times, sleep=time.sleep):
    """Cores idle over the next ``seconds`` (this process sleeps meanwhile), or None."""
    first = read()
    sleep(seconds)
    second = read()
    if first is None or second is None or second[1] <= first[1]:
        return None
    busy = (second[0] - first[0]) / (second[1] - first[1])
    return (1.0 - busy) * (os.cpu_count() or 1)


def choose_threads(usable, idle, processes=1):
    """Torch threads for one of ``processes`` processes sharing ``usable`` cores of which
    ``idle`` (None: unknown) are idle: idle cores rounded, in [1, usable // processes]."""
    share = max(1, usable // max(1, processes))
    if idle is None:
        return share
    return max(1, min(share, math.floor(idle / max(1, processes) + 0.5)))


def on_cpu(device):
    """Whether ``device`` (a torch.device or a SOLVER.DEVICE name) is the CPU."""
    import torch  # deferred: torch loads OpenMP, which must start after set_openmp_wait_policy

    name = str(device)
    return name == "cpu" or (name == "auto" and not torch.cuda.is_available())


@contextlib.contextmanager
def cpu_threads(device, local_processes=None, environ=os.environ, measure=idle_cpus):
    """Run the block with the thread count of :func:`choose_threads` on a CPU ``device``
    (a torch.device or a SOLVER.DEVICE name; ``local_processes`` defaults to torchrun's
    ``LOCAL_WORLD_SIZE``). Nothing changes on CUDA, with ``OMP_NUM_THREADS`` set, or with
    the defaults switched off. Restores torch's previous count afterwards."""
    import torch  # deferred: torch loads OpenMP, which must start after set_openmp_wait_policy

    if not on_cpu(device) or not enabled(environ) or environ.get("OMP_NUM_THREADS"):
        yield torch.get_num_threads()
        return
    if local_processes is None:
        local_processes = int(environ.get("LOCAL_WORLD_SIZE", "1"))
    usable, idle = usable_cpus(), measure()
    threads = choose_threads(usable, idle, local_processes)
    log.info("torch threads %d (%d usable cores, %s idle; set OMP_NUM_THREADS to choose)", threads, usable,
             "?" if idle is None else f"{idle:.1f}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)
