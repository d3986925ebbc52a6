"""Every bad input of tests/reliability/cases.py gets exit code 2 and one ``error:`` line
naming the problem and the fix, with no traceback, and nothing saved changes or vanishes."""

import pytest

from tests.reliability.cases import BAD_INPUTS, Env, try_bad_input


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return Env(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c.id for c in BAD_INPUTS])
def test_bad_input_is_answered_cleanly(env, case):
    try_bad_input(env, case)


def test_every_tool_has_ten_bad_inputs():
    """Each tool of tools/ (train.py is train_ours.py; download_ckpts.py is the download tool)
    is tried with at least ten bad inputs."""
    import os

    from tests.conftest import REPO_ROOT

    alias = {"train_ours": "train", "download_ckpts": "download"}
    tools = {alias.get(f[:-3], f[:-3]) for f in os.listdir(os.path.join(REPO_ROOT, "tools")) if f.endswith(".py")}
    counts = {t: sum(c.tool == t for c in BAD_INPUTS) for t in tools}
    assert all(n >= 10 for n in counts.values()), counts
