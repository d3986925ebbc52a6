"""``mdistiller.utils.runtime``: the host-memory setting the trainer applies on the CPU."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

# Page faults of writing a 64 MiB buffer twice, before and after retain_host_memory().
PROBE = """
import resource
from mdistiller.utils.runtime import host_memory_retained, retain_host_memory

def faults_of_second_touch():
    buf = bytearray(b"1") * (64 << 20); del buf  # written, so its pages are faulted in
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buf = bytearray(b"1") * (64 << 20); del buf
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

before = faults_of_second_touch()
assert not host_memory_retained()
ok = retain_host_memory()
print(before, faults_of_second_touch(), ok, host_memory_retained())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_retained_host_memory_is_reused_without_page_faults():
    """By default a large freed block goes back to the OS and is faulted in again (~16k
    faults for 64 MiB); once retained, the second buffer reuses the heap's pages."""
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    before, after, ok, retained = out.stdout.split()
    if ok == "False":
        pytest.skip("the C library is not glibc")
    assert retained == "True"
    assert int(before) > 10_000 and int(after) < 1_000


def test_trainer_retains_host_memory_on_cpu_only_when_configured():
    """The trainer calls retain_host_memory() on the CPU when SOLVER.RETAIN_HOST_MEMORY is on."""
    from unittest import mock

    import torch

    from mdistiller.engine import trainer as trainer_mod
    from mdistiller.config.load import load_cfg
    from mdistiller.utils.dist import DistContext

    model = torch.nn.Linear(2, 2)
    model.get_learnable_parameters = lambda: list(model.parameters())
    for value, device, called in (("True", "cpu", True), ("False", "cpu", False), ("True", "meta", False)):
        cfg = load_cfg(opts=["SOLVER.RETAIN_HOST_MEMORY", value])
        with mock.patch.object(trainer_mod, "retain_host_memory") as retain, \
                mock.patch.object(trainer_mod, "build_optimizer"):
            trainer_mod.Trainer(cfg, model, (None, None), (None, None), DistContext(device=torch.device(device)))
        assert retain.called == called, (value, device)
