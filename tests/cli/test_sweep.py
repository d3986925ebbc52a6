"""tools/sweep.py: grid expansion, naming, --print, validation, skip/resume with a fake trainer
following the trainer's contract, and an end-to-end sweep with the real trainer."""

import argparse
import csv
import importlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import warnings

import pytest

from mdistiller.cli import summarize, sweep
from mdistiller.config.load import ConfigWarning, load_cfg
from mdistiller.runs.folder import run_dir_of
from mdistiller.utils.runtime import REPO_ROOT
from mdistiller.utils.errors import ConfigError

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def write_base(tmp_path, epochs=3, **sections):
    """A base config file whose runs go to tmp_path/output/sweep."""
    text = (f"EXPERIMENT:\n  NAME: 'sld'\n  PROJECT: sweep\nDISTILLER:\n  TYPE: SLD\n"
            f"SOLVER:\n  EPOCHS: {epochs}\nLOG:\n  PREFIX: '{tmp_path / 'output'}'\n")
    path = tmp_path / "base.yaml"
    path.write_text(text + "".join(sections.values()))
    return str(path)


def load_quiet(path, opts):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        return load_cfg(path, opts)


def fake_acc(cfg, epoch):
    return 10.0 + cfg.SLD.GAMMA / 10 + 5 * epoch + 0.7 * cfg.EXPERIMENT.SEED


class FakeTrainer:
    """Stands in for the trainer's command line and keeps its run-folder contract.

    ``fail[name] = (epochs, outcome)`` makes that run stop after ``epochs`` epochs of this
    call with exit code ``outcome`` (an int) or by raising it (an exception)."""

    def __init__(self):
        self.calls = []
        self.fail = {}

    def __call__(self, argv):
        self.calls.append(list(argv))
        p = argparse.ArgumentParser()
        p.add_argument("--cfg")
        p.add_argument("--resume", action="store_true")
        p.add_argument("--overwrite", action="store_true")
        p.add_argument("opts", nargs=argparse.REMAINDER)
        args = p.parse_args(argv)
        cfg = load_quiet(args.cfg, args.opts)
        run_dir = run_dir_of(cfg)
        metrics = os.path.join(run_dir, "metrics.jsonl")
        if args.resume and not os.path.isfile(os.path.join(run_dir, "latest")):
            return 2
        if os.path.isdir(run_dir) and os.listdir(run_dir) and not (args.resume or args.overwrite):
            return 2
        if args.overwrite:
            shutil.rmtree(run_dir, ignore_errors=True)
        os.makedirs(run_dir, exist_ok=True)
        start = len(summarize.read_metrics(run_dir)) + 1 if args.resume else 1
        if not args.resume:
            with open(os.path.join(run_dir, "config.yaml"), "w") as f:
                f.write(cfg.dump())
            with open(os.path.join(run_dir, "provenance.json"), "w") as f:
                json.dump({"git_commit": "unknown", "seed": cfg.EXPERIMENT.SEED, "argv": argv}, f)
        stop_after, outcome = self.fail.get(cfg.EXPERIMENT.NAME, (None, None))
        best = 0.0
        for epoch in range(start, cfg.SOLVER.EPOCHS + 1):
            if stop_after is not None and epoch > start - 1 + stop_after:
                if isinstance(outcome, Exception):
                    raise outcome
                return outcome
            acc = fake_acc(cfg, epoch)
            best = max(best, acc)
            record = {"epoch": epoch, "lr": 0.05, "train_acc": acc, "train_loss": 1.0, "test_acc": acc,
                      "test_acc_top5": acc + 20, "test_loss": 1.0, "best_acc": best, "time": 0.1,
                      "losses": {"loss_ce": 1.0}}
            with open(metrics, "a") as f:
                f.write(json.dumps(record) + "\n")
            with open(os.path.join(run_dir, "worklog.txt"), "a") as f:
                f.write(f"epoch: {epoch}\n")
            open(os.path.join(run_dir, "latest"), "wb").close()
        return 0


@pytest.fixture
def fake_trainer(monkeypatch):
    """The fake stands in for the composition root the sweep calls (as its command line)."""
    from mdistiller.engine import run

    trainer = FakeTrainer()

    def train(cfg_file, opts, resume=False, overwrite=False, **_):
        flags = (["--resume"] if resume else []) + (["--overwrite"] if overwrite else [])
        return trainer(["--cfg", cfg_file] + flags + list(opts))

    monkeypatch.setattr(run, "train", train)
    return trainer


def called_names(trainer):
    return [argv[argv.index("EXPERIMENT.NAME") + 1] for argv in trainer.calls]


# ---------------------------------------------------------------------------------------
# Grid expansion and naming
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, expected", [
    ("SLD.GAMMA=0,100,150", ("SLD.GAMMA", ["0", "100", "150"])),
    (" SLD.GAMMA = 0 , 100 ", ("SLD.GAMMA", ["0", "100"])),
    ("SLD.TEMPERATURES=[1,2,3,4,5,6];[2,3,4]", ("SLD.TEMPERATURES", ["[1,2,3,4,5,6]", "[2,3,4]"])),
    ("SLD.TEMPERATURES=[2,3]", ("SLD.TEMPERATURES", ["[2,3]"])),
    ("DATASET.TYPE=cifar100;synthetic", ("DATASET.TYPE", ["cifar100", "synthetic"])),
])
def test_parse_grid(spec, expected):
    assert sweep.parse_grid(spec) == expected


@pytest.mark.parametrize("spec", ["SLD.GAMMA", "=1,2", "SLD.GAMMA=", "SLD.GAMMA=1,,2", "SLD.GAMMA=1,1"])
def test_parse_grid_rejects_malformed_specs(spec):
    with pytest.raises(ConfigError, match="--grid"):
        sweep.parse_grid(spec)


def test_plan_expands_grid_times_seeds_with_readable_names(tmp_path):
    cfg_path = write_base(tmp_path, epochs=200)
    runs = sweep.plan_runs(cfg_path, ["SLD.GAMMA=0,100", "SLD.TEMPERATURES=[1,2,3,4,5,6];[2,3,4]"], seeds=3,
                           seed_start=5, opts=["SOLVER.LR", "0.1"])
    assert len(runs) == 2 * 2 * 3
    names = [r.name for r in runs]
    assert len(set(names)) == len(names) and all(SAFE_NAME.fullmatch(n) for n in names)
    assert "sld_gamma100_temps2-3-4_seed6" in names
    assert names[:4] == ["sld_gamma0_temps1-2-3-4-5-6_seed5", "sld_gamma0_temps2-3-4_seed5",
                         "sld_gamma100_temps1-2-3-4-5-6_seed5", "sld_gamma100_temps2-3-4_seed5"]
    for run in runs:
        cfg = load_quiet(cfg_path, run.opts)  # what the trainer will build from the opts
        gamma, temps, seed = re.fullmatch(r"sld_gamma(\d+)_temps([\d-]+)_seed(\d+)", run.name).groups()
        assert cfg.SLD.GAMMA == int(gamma) and cfg.EXPERIMENT.SEED == int(seed)
        assert cfg.SLD.TEMPERATURES == [float(t) for t in temps.split("-")]
        assert cfg.EXPERIMENT.NAME == run.name and cfg.SOLVER.LR == 0.1
        assert run.folder == os.path.join(str(tmp_path / "output"), "sweep", run.name)


def test_names_from_tag_ambiguous_keys_and_project(tmp_path):
    cfg_path = tmp_path / "kd.yaml"
    cfg_path.write_text("EXPERIMENT:\n  TAG: 'kd,res32x4,res8x4'\n  SEED: 4\n")
    runs = sweep.plan_runs(str(cfg_path), ["KD.LOSS.CE_WEIGHT=0.1,0.5", "SLD.CE_WEIGHT=1"], project="p2")
    assert [r.name for r in runs] == ["kd_res32x4_res8x4_kd-loss-ce_weight0.1_sld-ce_weight1_seed4",
                                      "kd_res32x4_res8x4_kd-loss-ce_weight0.5_sld-ce_weight1_seed4"]
    assert all(r.cfg.EXPERIMENT.PROJECT == "p2" for r in runs)
    assert sweep.run_name("x", [("a", "b/../c d")], 0) == "x_ab_.._c_d_seed0"
    long = sweep.run_name("s", [("k", list(range(200)))], 1)
    assert len(long) < 140 and long.endswith("_seed1") and long != sweep.run_name("s", [("k", list(range(201)))], 1)


def test_print_writes_one_quoted_command_per_run(tmp_path, capsys, fake_trainer):
    cfg_path = write_base(tmp_path)
    code = sweep.main(["--cfg", cfg_path, "--grid", "SLD.GAMMA=0,2", "--grid", "SLD.TEMPERATURES=[1,2];[3]",
                       "--seeds", "2", "--print", "DATASET.TYPE", "synthetic"])
    out, err = capsys.readouterr()
    assert code == 0 and fake_trainer.calls == []
    lines = out.splitlines()
    assert len(lines) == 8 and "[1,2]" not in out.replace("'[1,2]'", "")  # lists are quoted for the shell
    seen = set()
    for line in lines:
        argv = shlex.split(line)
        assert argv[:4] == ["python3", "tools/train_ours.py", "--cfg", cfg_path]
        cfg = load_quiet(cfg_path, argv[4:])
        assert cfg.DATASET.TYPE == "synthetic" and cfg.SLD.TEMPERATURES in ([1.0, 2.0], [3.0])
        seen.add((cfg.SLD.GAMMA, tuple(cfg.SLD.TEMPERATURES), cfg.EXPERIMENT.SEED, cfg.EXPERIMENT.NAME))
    assert len(seen) == 8 and {s[2] for s in seen} == {0, 1}
    assert err.strip().splitlines()[-1].startswith("sweep: 8 runs: 8 commands printed")


def test_tools_wrapper_prints_commands(tmp_path):
    cfg_path = write_base(tmp_path)
    out = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools", "sweep.py"), "--cfg", cfg_path,
                          "--grid", "SLD.GAMMA=1,2", "--print"], capture_output=True, text=True, cwd=tmp_path,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert [shlex.split(line)[-1] for line in out.stdout.splitlines()] == ["sld_gamma1_seed0", "sld_gamma2_seed0"]


@pytest.mark.parametrize("argv, message", [
    (["--grid", "SLD.GAMA=0,100"], "--grid SLD.GAMA=0: unknown config key 'SLD.GAMA'"),
    (["--grid", "SLD.GAMMA=0,abc"], "--grid SLD.GAMMA=abc: config key 'SLD.GAMMA' expects a int"),
    (["--grid", "SLD.TEMPERATURES=[1];[0]"], "--grid SLD.TEMPERATURES=[0]: SLD.TEMPERATURES must be"),
    (["--grid", "EXPERIMENT.SEED=1,2"], "EXPERIMENT.SEED is set by the sweep"),
    (["--grid", "SLD.GAMMA=1,2", "SLD.GAMMA", "3"], "SLD.GAMMA is given more than once"),
    (["--grid", "SOLVER.LR=0.1,0.10"], "give the same run name"),
    (["--seeds", "0"], "--seeds: must be an integer >= 1"),
    (["SOLVER.LR"], "KEY VALUE pairs"),
])
def test_bad_grid_fails_before_any_run(tmp_path, capsys, fake_trainer, argv, message):
    cfg_path = write_base(tmp_path)
    try:
        code = sweep.main(["--cfg", cfg_path] + argv)
    except SystemExit as e:  # a bad option value: refused by the argument parser
        code = e.code
    out, err = capsys.readouterr()
    assert code == 2 and fake_trainer.calls == [] and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "output").exists()


# ---------------------------------------------------------------------------------------
# Running with a fake trainer: skip, resume, restart, failures
# ---------------------------------------------------------------------------------------
def test_sweep_skips_finished_and_resumes_interrupted_runs(tmp_path, capsys, fake_trainer):
    cfg_path = write_base(tmp_path, epochs=3)
    argv = ["--cfg", cfg_path, "--grid", "SLD.GAMMA=0,100", "--seeds", "2"]
    project = tmp_path / "output" / "sweep"
    # a folder left without any finished epoch or checkpoint is restarted with --overwrite
    (project / "sld_gamma100_seed1").mkdir(parents=True)
    (project / "sld_gamma100_seed1" / "worklog.txt").write_text("crashed while building\n")
    fake_trainer.fail = {"sld_gamma0_seed1": (1, 1), "sld_gamma100_seed0": (2, RuntimeError("boom"))}
    assert sweep.main(argv) == 1
    out, err = capsys.readouterr()
    assert called_names(fake_trainer) == ["sld_gamma0_seed0", "sld_gamma100_seed0", "sld_gamma0_seed1",
                                          "sld_gamma100_seed1"]  # failures do not stop the sweep
    flags = {name: argv_[2] for name, argv_ in zip(called_names(fake_trainer), fake_trainer.calls)}
    assert flags["sld_gamma100_seed1"] == "--overwrite" and flags["sld_gamma0_seed0"] != "--resume"
    assert out.strip().splitlines()[-1] == ("sweep: 4 runs: 2 trained, 0 skipped (finished), 2 failed: "
                                           "sld_gamma100_seed0, sld_gamma0_seed1")
    assert "RuntimeError: boom" in err and "run sld_gamma0_seed1 failed (exit code 1)" in err

    fake_trainer.calls.clear()
    fake_trainer.fail = {}
    assert sweep.main(argv) == 0
    out, _ = capsys.readouterr()
    assert called_names(fake_trainer) == ["sld_gamma100_seed0", "sld_gamma0_seed1"]
    assert all(c[2] == "--resume" for c in fake_trainer.calls)
    assert out.strip().splitlines()[-1] == "sweep: 4 runs: 2 trained, 2 skipped (finished), 0 failed"
    for run_dir in project.iterdir():
        records = summarize.read_metrics(run_dir)
        assert [r["epoch"] for r in records] == [1, 2, 3]

    fake_trainer.calls.clear()
    assert sweep.main(argv + ["--print"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "0 commands printed" in err and fake_trainer.calls == []


def test_print_marks_resumable_runs(tmp_path, capsys, fake_trainer):
    cfg_path = write_base(tmp_path, epochs=3)
    fake_trainer.fail = {"sld_gamma1_seed0": (1, 1)}
    assert sweep.main(["--cfg", cfg_path, "--grid", "SLD.GAMMA=1,2"]) == 1
    capsys.readouterr()
    assert sweep.main(["--cfg", cfg_path, "--grid", "SLD.GAMMA=1,2,3", "--print"]) == 0
    out, err = capsys.readouterr()
    lines = [shlex.split(line) for line in out.splitlines()]
    assert [(a[4], a[-1]) for a in lines] == [("--resume", "sld_gamma1_seed0"), ("SLD.GAMMA", "sld_gamma3_seed0")]
    assert "(1 resuming), 1 skipped (finished)" in err


def test_interrupted_run_stops_the_sweep(tmp_path, capsys, fake_trainer):
    cfg_path = write_base(tmp_path, epochs=2)
    fake_trainer.fail = {"sld_gamma1_seed0": (1, sweep.INTERRUPTED)}
    assert sweep.main(["--cfg", cfg_path, "--grid", "SLD.GAMMA=1,2"]) == sweep.INTERRUPTED
    assert called_names(fake_trainer) == ["sld_gamma1_seed0"]
    assert capsys.readouterr().out.strip().endswith("(interrupted)")


def test_trainer_exit_zero_without_finished_metrics_is_a_failure(tmp_path, capsys, fake_trainer):
    cfg_path = write_base(tmp_path, epochs=2)
    fake_trainer.fail = {"sld_gamma1_seed0": (1, 0)}
    assert sweep.main(["--cfg", cfg_path, "--grid", "SLD.GAMMA=1,2"]) == 1
    assert "does not reach epoch 2" in capsys.readouterr().err


def test_summary_of_fake_sweep_matches_metrics(tmp_path, capsys, fake_trainer):
    cfg_path = write_base(tmp_path, epochs=2)
    assert sweep.main(["--cfg", cfg_path, "--grid", "SLD.GAMMA=0,100", "--seeds", "2"]) == 0
    capsys.readouterr()
    project = tmp_path / "output" / "sweep"
    assert summarize.main([str(project), "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["SLD.GAMMA"] for r in rows] == ["0", "100"]
    for row in rows:
        cfgs = [load_quiet(cfg_path, ["SLD.GAMMA", row["SLD.GAMMA"], "EXPERIMENT.SEED", str(s)]) for s in (0, 1)]
        finals = [fake_acc(c, 2) for c in cfgs]
        assert float(row["last_top1_mean"]) == pytest.approx(sum(finals) / 2)
        assert row["seeds"] == "2" and row["unfinished"] == "0"


# ---------------------------------------------------------------------------------------
# End to end with the real trainer on synthetic data
# ---------------------------------------------------------------------------------------
def _real_trainer_missing():
    try:
        importlib.import_module("mdistiller.cli.train")
        datasets = importlib.import_module("mdistiller.dataset")
        registry = getattr(datasets, "DATASETS", None) or getattr(datasets, "dataset_dict", {})
        if "synthetic" not in registry:
            return "the 'synthetic' dataset is not registered in mdistiller.dataset"
    except Exception as e:  # noqa: BLE001 - any import failure means the trainer is not ready
        return f"the trainer (mdistiller.cli.train) is not importable yet: {type(e).__name__}: {e}"
    return None


@pytest.mark.skipif(_real_trainer_missing() is not None, reason=str(_real_trainer_missing()))
def test_end_to_end_sweep_on_synthetic_data(tmp_path, capsys):
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(
        "EXPERIMENT:\n  NAME: tiny\n  PROJECT: e2e\n"
        "DATASET:\n  TYPE: synthetic\n  NUM_WORKERS: 0\n  SYNTHETIC_SIZE: 16\n  SYNTHETIC_CLASSES: 10\n"
        "  TEST:\n    BATCH_SIZE: 32\n"
        "DISTILLER:\n  TYPE: NONE\n  STUDENT: resnet8\n  TEACHER: resnet8\n"
        "SOLVER:\n  EPOCHS: 1\n  BATCH_SIZE: 16\n  DEVICE: cpu\n  LR_DECAY_STAGES: [5]\n"
        f"LOG:\n  PREFIX: '{tmp_path / 'out'}'\n  WANDB: False\n  TENSORBOARD: False\n  PROGRESS: False\n")
    argv = ["--cfg", str(cfg_path), "--grid", "SOLVER.LR=0.01,0.1", "--seeds", "2"]
    assert sweep.main(argv) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == "sweep: 4 runs: 4 trained, 0 skipped (finished), 0 failed"
    project = tmp_path / "out" / "e2e"
    names = sorted(os.listdir(project))
    assert names == ["tiny_lr0.01_seed0", "tiny_lr0.01_seed1", "tiny_lr0.1_seed0", "tiny_lr0.1_seed1"]
    for name in names:
        assert {"config.yaml", "provenance.json", "worklog.txt", "metrics.jsonl"} <= set(os.listdir(project / name))

    assert sweep.main(argv) == 0  # everything finished: nothing runs again
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith("0 trained, 4 skipped (finished), 0 failed")

    assert summarize.main([str(project), "--csv", "--plot"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["SOLVER.LR"] for r in rows] == ["0.01", "0.1"]
    for row in rows:
        finals = [summarize.read_metrics(project / n)[-1] for n in row["runs"].split(";")]
        assert len(finals) == 2 and row["epochs_done_max"] == "1" and row["unfinished"] == "0"
        for key, field in (("test_acc", "last_top1"), ("test_acc_top5", "last_top5")):
            assert float(row[f"{field}_mean"]) == pytest.approx(sum(f[key] for f in finals) / 2)
        assert float(row["best_top1_mean"]) == pytest.approx(sum(f["best_acc"] for f in finals) / 2)
    for png in ("top1_curves.png", "top1_vs_SOLVER.LR.png"):
        assert (project / png).stat().st_size > 1000


def tiny_sweep_config(tmp_path, epochs=1):
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "EXPERIMENT:\n  NAME: tiny\n  PROJECT: jobs\n"
        "DATASET:\n  TYPE: synthetic\n  NUM_WORKERS: 0\n  SYNTHETIC_SIZE: 16\n  SYNTHETIC_CLASSES: 10\n"
        "  TEST:\n    BATCH_SIZE: 32\n"
        "DISTILLER:\n  TYPE: NONE\n  STUDENT: resnet8\n  TEACHER: resnet8\n"
        f"SOLVER:\n  EPOCHS: {epochs}\n  BATCH_SIZE: 16\n  DEVICE: cpu\n  LR_DECAY_STAGES: [5]\n"
        f"LOG:\n  PREFIX: '{tmp_path / 'out'}'\n  WANDB: False\n  TENSORBOARD: False\n  PROGRESS: False\n")
    return str(path)


def test_submitit_local_launcher_runs_the_grid_as_jobs(tmp_path, capsys):
    pytest.importorskip("submitit")
    argv = ["--cfg", tiny_sweep_config(tmp_path), "--grid", "SOLVER.LR=0.01,0.1", "--launcher", "submitit-local"]
    assert sweep.main(argv) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == \
        "sweep: 2 runs: 2 trained, 0 skipped (finished), 0 failed"
    project = tmp_path / "out" / "jobs"
    for name in ("tiny_lr0.01_seed0", "tiny_lr0.1_seed0"):  # both run folders complete
        assert {"config.yaml", "provenance.json", "worklog.txt", "metrics.jsonl", "latest", "student_best"} <= \
            set(os.listdir(project / name))
        assert [r["epoch"] for r in summarize.read_metrics(project / name)] == [1]
    assert any(f.endswith("_log.out") for f in os.listdir(project / "jobs"))  # submitit's logs, beside the runs


def test_a_requeued_sweep_job_resumes_its_run_folder(tmp_path):
    """submitit's checkpointing protocol: the job preempted is requeued as itself, and it
    continues its run with --resume from the last committed epoch."""
    pytest.importorskip("submitit")
    from mdistiller.engine import run as run_mod

    cfg = tiny_sweep_config(tmp_path, epochs=2)
    (run,) = sweep.plan_runs(cfg)
    job = sweep.SweepJob(cfg, run, quiet=True)
    assert run_mod.train(cfg, run.opts + ["SOLVER.EPOCHS", "1"], quiet=True) == 0  # killed after epoch 1
    assert run.state() == "resume"
    requeued = job.checkpoint()
    assert requeued.function is job
    assert requeued.function() == 0
    assert [r["epoch"] for r in summarize.read_metrics(run.folder)] == [1, 2] and run.state() == "done"
