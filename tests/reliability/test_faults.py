"""Faults other than the commit matrix (tests/reliability/test_epoch_commit.py): NaN before
and after the first checkpoint, a second signal, a signal during start-up, a full disk at the
first commit, stale locks and checkpoints, torn files, and the advice each error prints,
followed to the end of the run."""

import pytest

from tests.reliability.cases import FAULTS, Env


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return Env(tmp_path_factory.mktemp("faults"))


@pytest.mark.parametrize("fault", FAULTS, ids=[f.__name__[len("fault_"):] for f in FAULTS])
def test_fault_leaves_nothing_lost(env, fault):
    fault(env)
