"""The CPU thread defaults for shared machines (mdistiller.utils.threads)."""

import os
import subprocess
import sys

import pytest
import torch

from mdistiller.utils import threads
from tests.conftest import REPO_ROOT, torch_threads


@pytest.mark.parametrize("usable,idle,processes,expected", [
    (2, 2.0, 1, 2),    # quiet machine: every core
    (2, 1.4, 1, 1),    # one core taken (a busy loop, a 1-thread training): one thread
    (2, 0.0, 1, 1),    # both taken: still one
    (8, 5.6, 1, 6),    # rounded idle cores
    (8, 8.0, 4, 2),    # torchrun with 4 local processes: a quarter each
    (8, 2.0, 4, 1),
    (4, None, 1, 4),   # idle unknown (no /proc/stat): the usable cores
    (16, 40.0, 1, 16),  # never more than usable
])
def test_choose_threads(usable, idle, processes, expected):
    assert threads.choose_threads(usable, idle, processes) == expected


def test_idle_cpus_from_two_samples(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    reads = iter([(100, 1000), (100 + 150, 1000 + 200)])  # 75% busy over the sample
    assert threads.idle_cpus(0.0, read=lambda: next(reads), sleep=lambda s: None) == pytest.approx(0.5)
    assert threads.idle_cpus(0.0, read=lambda: None, sleep=lambda s: None) is None


def test_read_cpu_times_parses_proc_stat(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  10 1 5 80 4 0 0 0 0 0\ncpu0 5 0 2 40 2 0 0 0 0 0\n")
    assert threads.read_cpu_times(str(stat)) == (16, 100)  # idle = idle + iowait
    assert threads.read_cpu_times(str(tmp_path / "missing")) is None


def test_cgroup_cpu_limit(tmp_path):
    f = tmp_path / "cpu.max"
    f.write_text("150000 100000\n")
    assert threads.cgroup_cpu_limit(str(f)) == 1.5
    f.write_text("max 100000\n")
    assert threads.cgroup_cpu_limit(str(f)) == float("inf")


def test_cpu_threads_sets_idle_cores_and_restores():
    env = {"LOCAL_WORLD_SIZE": "1"}
    with torch_threads(2):
        with threads.cpu_threads("cpu", environ=env, measure=lambda: 0.2) as n:
            assert n == 1 and torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        # the user's OMP_NUM_THREADS, the switch, and CUDA leave torch's count alone
        for environ, device in [({"OMP_NUM_THREADS": "2"}, "cpu"), ({threads.SWITCH: "0"}, "cpu"),
                                ({}, torch.device("cuda", 0))]:
            with threads.cpu_threads(device, environ=environ, measure=lambda: 0.2) as n:
                assert n == 2 and torch.get_num_threads() == 2


def test_wait_policy_only_before_torch_and_never_over_the_user():
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert threads.set_openmp_wait_policy(env, modules={})
    assert env == {"OMP_WAIT_POLICY": "ACTIVE", "KMP_BLOCKTIME": "0"}
    env = {}
    assert not threads.set_openmp_wait_policy(env, modules={"torch": torch}) and env == {}
    assert not threads.set_openmp_wait_policy({threads.SWITCH: "0"}, modules={})


def test_importing_mdistiller_sets_the_policy_before_torch():
    """A fresh interpreter: ``import mdistiller`` does not import torch and sets the policy."""
    code = "import os, sys, mdistiller; print('torch' in sys.modules, os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", threads.SWITCH)}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "PASSIVE"]
