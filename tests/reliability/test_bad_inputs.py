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
