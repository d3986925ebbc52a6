"""The epoch commit survives a kill or a full disk at every one of its write points: after
``--resume`` every epoch is in metrics.jsonl once, student_best holds the best epoch's
weights, and the run ends bit-exact to an uninterrupted one."""

import os

import pytest

from mdistiller.cli.train import main as train_main
from mdistiller.engine.checkpoint import load_checkpoint

from tests.engine.helpers import metrics, run_dir, tiny_argv
from tests.reliability.faults import Faults, SimulatedKill, fixed_accuracy, same_weights, student_weights

COMMON = ["EXPERIMENT.DETERMINISTIC", "True", "SOLVER.EPOCHS", "2", "LOG.SAVE_CHECKPOINT_FREQ", "1",
          "LOG.TENSORBOARD", "False", "DATASET.SYNTHETIC_SIZE", "32",
          "DATASET.TEST.BATCH_SIZE", "64"]
ACCS = [50.0, 60.0]  # epoch 2 is a new best: its commit writes every kind of file


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run and the write points of its epoch-2 commit."""
    tmp = tmp_path_factory.mktemp("ref")
    with pytest.MonkeyPatch.context() as mp:
        fixed_accuracy(mp, ACCS)
        faults = Faults(mp, epoch=2)
        assert train_main(tiny_argv(tmp, "ref", *COMMON)) == 0
    d = run_dir(tmp, "ref")
    return {"points": faults.points, "metrics": metrics(tmp, "ref"),
            "latest": load_checkpoint(os.path.join(d, "latest"))["model"],
            "best": student_weights(os.path.join(d, "student_best")),
            "student_1": student_weights(os.path.join(d, "student_1"))}


def test_the_commit_has_the_expected_write_points(reference):
    points = reference["points"]
    names = " ".join(points)
    for f in ("student_latest.e2.stage", "best.e2.stage", "student_best.e2.stage", "epoch_2.e2.stage", "latest",
              "metrics.jsonl"):
        assert f in names, (f, points)
    # every side file is staged before 'latest' is renamed into place (the commit point)
    commit = points.index(next(p for p in points if p.endswith("-> latest")))
    assert all(".stage" not in p or "->" in p.split(".stage", 1)[1] or points.index(p) < commit for p in points)
    assert [p for p in points[:commit] if p.startswith("rename") and not p.endswith(".stage")] == []


def check_resumed(tmp, name, reference, point):
    d = run_dir(tmp, name)
    assert [r["epoch"] for r in metrics(tmp, name)] == [1, 2], point
    assert [r["test_acc"] for r in metrics(tmp, name)] == [r["test_acc"] for r in reference["metrics"]], point
    assert same_weights(student_weights(os.path.join(d, "student_best")), reference["best"]), point
    assert same_weights(student_weights(os.path.join(d, "student_1")), reference["student_1"]), point
    assert same_weights(load_checkpoint(os.path.join(d, "latest"))["model"], reference["latest"]), point
    left = [f for f in os.listdir(d) if f.endswith((".tmp", ".stage"))]
    assert not left, (point, left)


@pytest.mark.parametrize("kind", ["kill", "full"])
def test_a_fault_at_every_write_point_then_resume(tmp_path, reference, monkeypatch, capsys, kind):
    fixed_accuracy(monkeypatch, ACCS)
    for i, point in enumerate(reference["points"]):
        name = f"{kind}{i}"
        argv = tiny_argv(tmp_path, name, *COMMON)
        with monkeypatch.context() as mp:
            Faults(mp, epoch=2, at=i, kind=kind)
            if kind == "kill":
                with pytest.raises(SimulatedKill):
                    train_main(argv)
            else:
                capsys.readouterr()
                assert train_main(argv) == 2, point
                err = capsys.readouterr().err.strip().splitlines()
                assert len(err) == 1 and err[0].startswith("error: ") and "no space left on device" in err[0], err
                assert "--resume" in err[0]
        # the folder now holds epoch 1 or epoch 2 whole, whatever the point
        d = run_dir(tmp_path, name)
        epoch = load_checkpoint(os.path.join(d, "latest"))["epoch"]
        assert epoch in (1, 2), point
        assert train_main(["--resume"] + argv) == 0, point
        check_resumed(tmp_path, name, reference, f"{kind} at {point}")


def test_a_torn_metrics_line_does_not_block_resume(tmp_path, monkeypatch):
    argv = tiny_argv(tmp_path, "torn", *COMMON[:2])
    assert train_main(argv + ["SOLVER.EPOCHS", "1"]) == 0
    path = os.path.join(run_dir(tmp_path, "torn"), "metrics.jsonl")
    with open(path, "a") as f:
        f.write('{"epoch": 2, "test_ac')
    assert train_main(["--resume"] + argv + ["SOLVER.EPOCHS", "2"]) == 0
    assert [r["epoch"] for r in metrics(tmp_path, "torn")] == [1, 2]
    assert open(path).read().count("\n") == 2
