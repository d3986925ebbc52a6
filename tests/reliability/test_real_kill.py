"""The one real-process fault: a second start against a running tool, then SIGKILL and
--resume (the in-process suite covers every write point; this checks the lock and a real
kill across processes)."""

from tests.reliability.cases import Env, fault_real_sigkill_and_lock


def test_real_sigkill_and_lock(tmp_path):
    fault_real_sigkill_and_lock(Env(tmp_path))
