"""The epoch commit survives a kill or a full disk at every one of its write points: after
``--resume`` every epoch is in metrics.jsonl once, student_best holds the best epoch's
weights, and the run ends bit-exact to an uninterrupted one (see cases.commit_fault)."""

import pytest

from tests.reliability.cases import Env, commit_fault, commit_points


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return Env(tmp_path_factory.mktemp("commit"))


@pytest.fixture(scope="module")
def reference(env):
    return commit_points(env)


def test_the_commit_stages_every_file_before_latest(reference):
    points, _ = reference
    names = " ".join(points)
    for f in ("student_latest.e2.stage", "best.e2.stage", "student_best.e2.stage", "epoch_2.e2.stage",
              "-> latest", "metrics.jsonl"):
        assert f in names, (f, points)
    commit = points.index(next(p for p in points if p.endswith("-> latest")))
    # before the commit point only staged files are written; after it, only renames into place
    assert all(p.endswith(".stage") or p.startswith("write") for p in points[:commit]), points
    assert not any(p.endswith(".stage") for p in points[commit + 1:]), points


@pytest.mark.parametrize("kind", ["kill", "full"])
def test_a_fault_at_every_write_point_then_resume(env, reference, kind):
    points, ref = reference
    for i, point in enumerate(points):
        try:
            commit_fault(env, ref, i, kind)
        except AssertionError as e:
            raise AssertionError(f"{kind} at write point {i} ({point}): {e}") from e
