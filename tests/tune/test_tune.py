"""tools/tune.py end to end on tiny synthetic data with a holdout: the study's values are the
run folders' best val_acc, best.yaml trains the best trial's values, reruns continue the
study, a killed worker leaves a failed (resumable) trial, and a pruned trial stops cleanly."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import warnings

import pytest

optuna = pytest.importorskip("optuna")

from mdistiller.cli import summarize, tune  # noqa: E402
from mdistiller.cli.train import main as train_main  # noqa: E402
from mdistiller.config.load import load_cfg  # noqa: E402
from mdistiller.runs.loggers import read_metrics  # noqa: E402
from mdistiller.tune import study as study_mod  # noqa: E402
from tests.conftest import REPO_ROOT  # noqa: E402
from tests.engine.helpers import TINY  # noqa: E402

SLOW_PLUGIN = os.path.join(os.path.dirname(__file__), "slow_hook.py")
S = optuna.trial.TrialState


def tiny(tmp_path, epochs=2, *extra):
    """TINY without the searched keys, with a holdout."""
    searched = ("SOLVER.LR", "SOLVER.LR_DECAY_STAGES")
    base = [x for k, v in zip(TINY[0::2], TINY[1::2]) if k not in searched for x in (k, v)]
    return base + ["LOG.PREFIX", str(tmp_path / "out"), "LOG.TENSORBOARD", "False", "DATASET.HOLDOUT", "0.25",
                   "SOLVER.EPOCHS", str(epochs)] + [str(x) for x in extra]


def config_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text("EXPERIMENT:\n  NAME: tiny\n")
    return str(path)


def load_study(tmp_path, name):
    url = f"sqlite:///{tmp_path / 'out' / 'tests' / name / 'study.db'}"
    return optuna.load_study(study_name=name, storage=url)


def folder_best(run_dir):
    return max(r["val_acc"] for r in read_metrics(run_dir))


def test_four_trials_on_two_workers_then_a_rerun_continues(tmp_path, capsys):
    cfg = config_file(tmp_path)
    argv = ["--cfg", cfg, "--study", "lr", "--space", "SOLVER.LR=float:0.01:0.3:log",
            "--space", "SOLVER.LR_DECAY_STAGES=choice:[1];[5]", "--prune", "none"]
    assert tune.main(argv + ["--trials", "4", "--workers", "2"] + tiny(tmp_path)) == 0
    out = capsys.readouterr().out
    study_dir = tmp_path / "out" / "tests" / "lr"
    study = load_study(tmp_path, "lr")
    trials = study.get_trials()
    assert [t.state for t in trials] == [S.COMPLETE] * 4
    assert {f"trial_{i:04d}" for i in range(4)} <= set(os.listdir(study_dir))
    for t in trials:
        run_dir = study_dir / f"trial_{t.number:04d}"
        assert t.value == folder_best(run_dir)  # the objective: the run folder's best val_acc
        run = load_cfg(str(run_dir / "config.yaml"))
        assert run.SOLVER.LR == t.params["SOLVER.LR"]
        assert list(run.SOLVER.LR_DECAY_STAGES) == json.loads(t.params["SOLVER.LR_DECAY_STAGES"])
        assert json.load(open(run_dir / "trial.json"))["state"] == "COMPLETE"
    assert f"best trial {study.best_trial.number}: best val_acc {study.best_value:.2f}" in out
    best = load_cfg(str(study_dir / "best.yaml"))
    assert best.SOLVER.LR == study.best_params["SOLVER.LR"]
    assert list(best.SOLVER.LR_DECAY_STAGES) == json.loads(study.best_params["SOLVER.LR_DECAY_STAGES"])
    assert best.DATASET.HOLDOUT == 0.25 and best.SOLVER.EPOCHS == 2 and best.EXPERIMENT.HOOKS == []

    # rerunning continues the study up to the new total, and does nothing at it
    assert tune.main(argv + ["--trials", "5"] + tiny(tmp_path)) == 0
    assert tune.main(argv + ["--trials", "5"] + tiny(tmp_path)) == 0
    trials = load_study(tmp_path, "lr").get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3, 4] and all(t.state == S.COMPLETE for t in trials)
    capsys.readouterr()
    assert tune.main(argv + ["--report"] + tiny(tmp_path)) == 0  # the table again, nothing run
    table = capsys.readouterr().out
    assert "study 'lr'" in table and "5/5 trials complete or pruned" in table
    assert len([ln for ln in table.splitlines() if ln.split()[1:2] == ["COMPLETE"]]) == 5
    assert summarize.main([str(study_dir)]) == 0  # the trials are runs
    assert "SOLVER.LR" in capsys.readouterr().out
    # another space on the same study is refused
    assert tune.main(["--cfg", cfg, "--study", "lr", "--space", "SOLVER.LR=float:0.01:0.2", "--trials", "6"]
                     + tiny(tmp_path)) == 2
    assert "was made with another space" in capsys.readouterr().err


def test_a_killed_worker_leaves_a_failed_trial_that_resumes(tmp_path, capsys):
    cfg = config_file(tmp_path)
    opts = tiny(tmp_path, 2, "EXPERIMENT.PLUGINS", f"['{SLOW_PLUGIN}']", "EXPERIMENT.HOOKS", "['SLOW_EPOCH']")
    argv = ["--cfg", cfg, "--study", "kill", "--space", "SOLVER.LR=float:0.01:0.1", "--trials", "2"] + opts
    env = dict(os.environ, MDISTILLER_TEST_SLOW="30", OMP_NUM_THREADS="1", PYTHONPATH=REPO_ROOT)
    proc = subprocess.Popen([sys.executable, os.path.join(REPO_ROOT, "tools", "tune.py")] + argv, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "out" / "tests" / "kill" / "trial_0000" / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and metrics.read_text().strip()) and time.time() < deadline:
        assert proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # mid-trial: epoch 1 of 2 committed, the worker sleeps
    proc.wait()
    assert load_study(tmp_path, "kill").get_trials()[0].state == S.RUNNING  # what the kill left

    assert tune.main(argv) == 0  # the same command: trial 0 failed, two more complete
    out = capsys.readouterr().out
    trials = load_study(tmp_path, "kill").get_trials()
    assert [t.state for t in trials] == [S.FAIL, S.COMPLETE, S.COMPLETE]
    line = next(ln for ln in out.splitlines() if ln.startswith("trial 0 failed; resume its run folder with: "))
    words = shlex.split(line.split("with: ", 1)[1])
    assert words[:2] == ["python3", "tools/train_ours.py"] and "--resume" in words
    assert train_main(words[2:]) == 0  # the failed trial's folder resumes to its last epoch
    assert [r["epoch"] for r in read_metrics(str(metrics.parent))] == [1, 2]


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return True


def test_a_pruned_trial_stops_cleanly_and_keeps_its_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(study_mod, "pruner_of", lambda optuna, name: AlwaysPrune())
    argv = ["--cfg", config_file(tmp_path), "--study", "prune", "--space", "SOLVER.LR=float:0.01:0.1",
            "--trials", "1"] + tiny(tmp_path, 3)
    assert tune.main(argv) == 0
    (trial,) = load_study(tmp_path, "prune").get_trials()
    run_dir = tmp_path / "out" / "tests" / "prune" / "trial_0000"
    assert trial.state == S.PRUNED and list(trial.intermediate_values) == [1]
    assert [r["epoch"] for r in read_metrics(str(run_dir))] == [1] and (run_dir / "latest").is_file()
    record = json.load(open(run_dir / "trial.json"))
    assert record["state"] == "PRUNED" and record["pruned_after_epoch"] == 1


def test_without_a_holdout_tuning_is_refused(tmp_path, capsys):
    argv = ["--cfg", config_file(tmp_path), "--space", "SOLVER.LR=float:0.01:0.1", "--trials", "1"] + \
        tiny(tmp_path) + ["DATASET.HOLDOUT", "0"]
    assert tune.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "DATASET.HOLDOUT" in err
    assert not (tmp_path / "out").exists()  # nothing created


def test_submitit_local_workers_and_the_preemption_protocol(tmp_path, capsys):
    pytest.importorskip("submitit")
    from mdistiller.tune import launch, pruning

    cfg = config_file(tmp_path)
    argv = ["--cfg", cfg, "--study", "jobs", "--space", "SOLVER.LR=float:0.01:0.1", "--trials", "1",
            "--launcher", "submitit-local"] + tiny(tmp_path, 1)
    assert tune.main(argv) == 0
    assert [t.state for t in load_study(tmp_path, "jobs").get_trials()] == [S.COMPLETE]
    assert any(f.endswith("_log.out") for f in os.listdir(tmp_path / "out" / "tests" / "jobs" / "jobs"))

    # preempted mid-trial: the running trial is failed (its folder resumable), the job requeued as itself
    spec = study_mod.plan(cfg, ["SOLVER.LR=float:0.01:0.1"], 2, "jobs", opts=tiny(tmp_path, 1))
    study = study_mod.open_study(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "heartbeat ... with Study.optimize": a worker's ask, by hand
        trial = study.ask()
    job = launch.TuneJob(spec)
    pruning.ACTIVE = pruning.Reporter(trial)
    try:
        requeued = job.checkpoint()
    finally:
        pruning.ACTIVE = None
    assert requeued.function is job
    frozen = load_study(tmp_path, "jobs").get_trials()[trial.number]
    assert frozen.state == S.FAIL and frozen.user_attrs["preempted"]
    # ... and a trial with its values is enqueued that continues its run folder: the requeued
    # worker takes it first and trains in trial_<preempted>, not a folder of its own
    waiting = load_study(tmp_path, "jobs").get_trials(states=(S.WAITING,))
    assert [t.user_attrs["continues"] for t in waiting] == [frozen.number]
    assert requeued.function() == 0
    last = load_study(tmp_path, "jobs").get_trials()[-1]
    assert last.state == S.COMPLETE and last.number == frozen.number + 1
    assert last.user_attrs["run_dir"] == spec.trial_dir(frozen.number)
    assert last.value == folder_best(spec.trial_dir(frozen.number))
    assert not os.path.exists(spec.trial_dir(last.number))


def test_two_workers_racing_for_the_last_trial_make_no_extra_one(tmp_path):
    """Trial numbers come from the storage: the worker whose trial has N non-failed trials
    before it closes it as failed (surplus) without running it."""
    cfg = config_file(tmp_path)
    spec = study_mod.plan(cfg, ["SOLVER.LR=float:0.01:0.1"], 1, "race", opts=tiny(tmp_path, 1))
    os.makedirs(spec.study_dir)
    study = study_mod.open_study(spec, create=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first, second = study.ask(), study.ask()  # both workers counted 0 of 1 and asked
    with pytest.raises(study_mod.Surplus):
        study_mod.run_trial(spec, study, second)
    assert second.user_attrs["surplus"] and not os.path.exists(spec.trial_dir(second.number))
    study_mod.fail(study, second.number)
    assert study_mod.run_trial(spec, study, first) == folder_best(spec.trial_dir(first.number))
    assert study_mod.counts(study) == (0, 1)  # told by study.optimize in a worker; here by hand
