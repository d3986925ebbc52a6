"""The bad inputs and faults tried on the real CLI entry points (in-process, ``main(argv)``).

Shared by the tests of this folder and ``scripts/probe_bad_inputs.py`` (which prints the
counts). A *bad input* must get exit code 2, one ``error:`` line on stderr naming the
problem, no traceback, and leave every file as it was. A *fault* (a kill, a full disk, a
signal, a NaN, a held or stale lock...) must leave nothing lost: following the printed
advice finishes the run with every epoch recorded once.
"""

import contextlib
import errno
import io
import json
import os
import re
import shlex
import shutil
import signal
import sys
from dataclasses import dataclass
from typing import Callable

import pytest

from mdistiller.cli import download, eval as eval_cli, summarize, sweep
from mdistiller.cli.train import main as train_main
from mdistiller.engine import runfolder
from mdistiller.engine.checkpoint import load_checkpoint

from tests.engine.helpers import make_teacher, metrics, run_dir, tiny_argv
from tests.reliability.faults import Faults, SimulatedKill, fixed_accuracy, same_weights, snapshot, student_weights

TOOLS = {"train": train_main, "eval": eval_cli.main, "summarize": summarize.main, "sweep": sweep.main,
         "download": download.main}
FAST = ["LOG.TENSORBOARD", "False", "DATASET.SYNTHETIC_SIZE", "32", "DATASET.TEST.BATCH_SIZE", "64"]


class Env:
    """A scratch folder with a teacher, a finished two-epoch run ``done``, a summarize
    project and a non-run folder; ``patch`` is a MonkeyPatch undone after each case."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.teacher = tmp / "teacher.pth"
        make_teacher(self.teacher)
        self.patch = None
        with quiet():
            assert train_main(self.argv("done", "SOLVER.EPOCHS", "2")) == 0
        self.done = run_dir(tmp, "done")
        self.other = tmp / "out" / "tests" / "notarun"  # someone's folder where a run folder would go
        self.other.mkdir(parents=True)
        (self.other / "precious.txt").write_text("keep me")
        self.project = tmp / "out" / "tests"
        legacy = tmp / "out" / "tests" / "legacy"  # a run folder of a version without the marker
        shutil.copytree(self.done, legacy, ignore=shutil.ignore_patterns(runfolder.MARKER, runfolder.LOCK))

    def argv(self, name, *extra, teacher=False):
        return tiny_argv(self.tmp, name, *FAST, *extra, teacher=self.teacher if teacher else None)

    def file(self, name, content):
        path = self.tmp / "inputs" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)


@contextlib.contextmanager
def quiet():
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def call(tool, argv):
    """Run a tool's main in-process; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = TOOLS[tool](list(argv))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def error_lines(err):
    return [ln for ln in err.strip().splitlines() if ln.strip() and not ln.startswith("warning:")]


def check_one_line(code, err, pattern, expected_code=2):
    lines = error_lines(err)
    assert code == expected_code, (code, err)
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


# ---------------------------------------------------------------------------------------
# bad inputs
# ---------------------------------------------------------------------------------------
@dataclass
class Bad:
    id: str
    tool: str
    build: Callable  # env -> argv (may set up patches through env.patch)
    pattern: str


def fake_wandb(env):
    class UsageError(Exception):
        pass

    def init(**kw):
        raise UsageError("api_key not configured (no-tty). call wandb.login(key=[your_api_key])")

    env.patch.setitem(sys.modules, "wandb", type(sys)("wandb"))
    env.patch.setattr(sys.modules["wandb"], "init", init, raising=False)
    return env.argv("wb", "LOG.WANDB", "True")


def read_only(env, under):
    """Running as root, chmod cannot make a folder read-only: refuse writes under ``under``."""
    real_makedirs, real_open, real_mkstemp = os.makedirs, os.open, runfolder.tempfile.mkstemp

    def denied(path):
        return str(path).startswith(str(under))

    def makedirs(path, *a, **k):
        if denied(path) and not os.path.isdir(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_makedirs(path, *a, **k)

    def osopen(path, flags, *a, **k):
        if denied(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *a, **k)

    env.patch.setattr(os, "makedirs", makedirs)
    env.patch.setattr(os, "open", osopen)
    return env


def disk_full_at_start(env):
    def text(path, content):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    env.patch.setattr(runfolder, "atomic_write_text", text)
    return env.argv("fullstart")


def plot_denied(env):
    read_only(env, env.tmp / "plots")
    return [str(env.project), "--plot", str(env.tmp / "plots")]


def held_lock(env, *flags):
    env.held = runfolder.RunLock(env.done).acquire()  # released by try_bad_input
    return list(flags) + env.argv("done", "SOLVER.EPOCHS", "3")


def yaml(env, name, text):
    return ["--cfg", env.file(name, text)] + env.argv("y")


def _train(name, *extra, pattern):
    return Bad(name, "train", lambda env: env.argv("x", *extra), pattern)


BAD_INPUTS = [
    # run folders: names are single folder names; nothing outside LOG.PREFIX is touched
    Bad("name ..", "train", lambda env: ["--overwrite"] + tiny_argv(env.tmp, "..", "EXPERIMENT.PROJECT", "p"),
        r"EXPERIMENT.NAME '..' is not a valid folder name"),
    Bad("name absolute", "train", lambda env: env.argv(str(env.other)), r"EXPERIMENT.NAME '/.*' is not a valid"),
    Bad("name with /", "train", lambda env: env.argv("a/b"), r"EXPERIMENT.NAME 'a/b' is not a valid"),
    Bad("name .", "train", lambda env: env.argv("."), r"EXPERIMENT.NAME '.' is not a valid"),
    Bad("name and tag empty", "train", lambda env: ["--overwrite"] + env.argv("", "EXPERIMENT.TAG", ""),
        r"EXPERIMENT.NAME and EXPERIMENT.TAG are both empty"),
    Bad("tag with ..", "train", lambda env: env.argv("", "EXPERIMENT.TAG", "../done"),
        r"EXPERIMENT.TAG '../done' is not a valid"),
    Bad("project ..", "train", lambda env: env.argv("x", "EXPERIMENT.PROJECT", ".."),
        r"EXPERIMENT.PROJECT '..' is not a valid"),
    Bad("empty prefix", "train", lambda env: env.argv("x", "LOG.PREFIX", ""), r"LOG.PREFIX is empty"),
    Bad("overwrite a non-run folder", "train", lambda env: ["--overwrite"] + env.argv("notarun"),
        r"is not a run folder .*nothing there is used or deleted"),
    Bad("start in a non-run folder", "train", lambda env: env.argv("notarun"), r"is not a run folder"),
    Bad("overwrite an unmarked run folder", "train", lambda env: ["--overwrite"] + env.argv("legacy"),
        r"has a checkpoint but no .mdistiller-run marker .*--overwrite does not delete it"),
    Bad("start in an unmarked run folder", "train", lambda env: env.argv("legacy"), r"already used by another run"),
    Bad("start in a used folder", "train", lambda env: env.argv("done", "SOLVER.EPOCHS", "2"),
        r"already used by another run; pass --resume"),
    Bad("resume and overwrite", "train", lambda env: ["--resume", "--overwrite"] + env.argv("done"),
        r"--resume and --overwrite contradict"),
    Bad("resume and overwrite after the pairs", "train", lambda env: env.argv("done") + ["--overwrite", "--resume"],
        r"--resume and --overwrite contradict"),
    Bad("resume below the epochs done", "train", lambda env: ["--resume"] + env.argv("done", "SOLVER.EPOCHS", "1"),
        r"SOLVER.EPOCHS 1 is below the 2 epochs already done"),
    Bad("resume with another momentum", "train",
        lambda env: ["--resume"] + env.argv("done", "SOLVER.EPOCHS", "3", "SOLVER.MOMENTUM", "0.5"),
        r"different config \(differs in SOLVER.MOMENTUM\)"),
    Bad("resume without a run", "train", lambda env: ["--resume"] + env.argv("never"),
        r"no checkpoint .* start without --resume"),
    Bad("folder in use (plain)", "train", lambda env: held_lock(env), r"is in use by process \d+ on "),
    Bad("folder in use (--resume)", "train", lambda env: held_lock(env, "--resume"), r"is in use by process"),
    Bad("folder in use (--overwrite)", "train", lambda env: held_lock(env, "--overwrite"), r"is in use by process"),
    # framework keys
    _train("momentum -5", "SOLVER.MOMENTUM", "-5", pattern=r"SOLVER.MOMENTUM must be a number >= 0"),
    _train("weight decay -1", "SOLVER.WEIGHT_DECAY", "-1", pattern=r"SOLVER.WEIGHT_DECAY must be"),
    _train("lr decay rate -1", "SOLVER.LR_DECAY_RATE", "-1", pattern=r"SOLVER.LR_DECAY_RATE must be a positive"),
    _train("lr decay stage -1", "SOLVER.LR_DECAY_STAGES", "[-1]", pattern=r"SOLVER.LR_DECAY_STAGES must be"),
    _train("lr nan", "SOLVER.LR", "float('nan')", pattern=r"SOLVER.LR"),
    _train("lr 0", "SOLVER.LR", "0", pattern=r"SOLVER.LR must be a positive"),
    _train("epochs 0", "SOLVER.EPOCHS", "0", pattern=r"SOLVER.EPOCHS must be at least 1"),
    _train("batch 0", "SOLVER.BATCH_SIZE", "0", pattern=r"BATCH_SIZE .* must be positive"),
    _train("optimizer Adam", "SOLVER.TYPE", "Adam", pattern=r"SOLVER.TYPE 'Adam' is not implemented"),
    _train("trainer sam", "SOLVER.TRAINER", "sam", pattern=r"SOLVER.TRAINER 'sam' is not implemented"),
    _train("amp fp8", "SOLVER.AMP", "fp8", pattern=r"SOLVER.AMP must be one of"),
    _train("device tpu", "SOLVER.DEVICE", "tpu", pattern=r"SOLVER.DEVICE must be"),
    _train("workers -1", "DATASET.NUM_WORKERS", "-1", pattern=r"DATASET.NUM_WORKERS must be"),
    _train("subset 0", "DATASET.SUBSET", "0.0", pattern=r"DATASET.SUBSET and DATASET.VAL_SUBSET must be"),
    _train("subset below one batch", "DATASET.SUBSET", "0.0001",
           pattern=r"DATASET.SUBSET 0.0001 leaves \d+ training images, less than one batch"),
    _train("synthetic size 0", "DATASET.SYNTHETIC_SIZE", "0", pattern=r"DATASET.SYNTHETIC_SIZE must be"),
    _train("decode gpu", "DATASET.DECODE", "gpu", pattern=r"DATASET.DECODE must be one of cpu, device; got 'gpu'"),
    _train("dataset root is a file", "DATASET.ROOT", __file__, pattern=r"DATASET.ROOT .* is a file"),
    _train("read freq 0", "LOG.READ_FREQ", "0", pattern=r"LOG.READ_FREQ must be at least 1"),
    _train("checkpoint freq 0", "LOG.SAVE_CHECKPOINT_FREQ", "0", pattern=r"LOG.SAVE_CHECKPOINT_FREQ must be"),
    _train("tensorboard freq -1", "LOG.TENSORBOARD_FREQ", "-1", pattern=r"LOG.TENSORBOARD_FREQ must be"),
    _train("seed -1", "EXPERIMENT.SEED", "-1", pattern=r"EXPERIMENT.SEED must be an integer >= 0"),
    _train("unknown key", "SOLVER.LRR", "1", pattern=r"unknown config key 'SOLVER.LRR'; did you mean 'SOLVER.LR'"),
    _train("odd overrides", "SOLVER.LR", pattern=r"odd number"),
    _train("extra methods without a teacher", "DISTILLER.EXTRA", "['AT']",
           pattern=r"DISTILLER.EXTRA \['AT'\] needs a teacher, but DISTILLER.TYPE NONE"),
    # files
    Bad("cfg binary", "train", lambda env: ["--cfg", env.file("bin.yaml", bytes(range(256)) * 4)],
        r"is not a text YAML file"),
    Bad("cfg NUL bytes", "train", lambda env: ["--cfg", env.file("nul.yaml", b"SOLVER:\x00\x00")],
        r"is not a text YAML file"),
    Bad("cfg _BASE_ 5", "train", lambda env: yaml(env, "base5.yaml", "_BASE_: 5\n"),
        r"'_BASE_' in .* must be a path or a list of paths"),
    Bad("cfg _BASE_ list of numbers", "train", lambda env: yaml(env, "basel.yaml", "_BASE_: [1]\n"),
        r"'_BASE_' in .* must be a path"),
    Bad("cfg _BASE_ missing", "train", lambda env: yaml(env, "basem.yaml", "_BASE_: nothere.yaml\n"),
        r"nothere.yaml' does not exist"),
    Bad("cfg duplicate top-level key", "train",
        lambda env: yaml(env, "dup.yaml", "SOLVER:\n  LR: 0.1\nDISTILLER:\n  TYPE: NONE\nSOLVER:\n  EPOCHS: 3\n"),
        r"key 'SOLVER' appears twice .*line 5"),
    Bad("cfg duplicate nested key", "train", lambda env: yaml(env, "dup2.yaml", "SOLVER:\n  LR: 0.1\n  LR: 0.2\n"),
        r"key 'LR' appears twice"),
    Bad("cfg a list", "train", lambda env: yaml(env, "list.yaml", "- 1\n- 2\n"), r"must hold a mapping"),
    Bad("cfg syntax", "train", lambda env: yaml(env, "syn.yaml", "SOLVER:\n  LR: [0.1\n"), r"YAML syntax error .*line"),
    Bad("cfg a folder", "train", lambda env: ["--cfg", str(env.tmp)], r"is a folder; pass a YAML file"),
    Bad("cfg missing", "train", lambda env: ["--cfg", str(env.tmp / "nope.yaml")], r"does not exist"),
    Bad("teacher is a folder", "train",
        lambda env: env.argv("t", "DISTILLER.TYPE", "KD", "DISTILLER.TEACHER_CKPT", str(env.tmp)),
        r"teacher checkpoint .* is a folder"),
    Bad("unknown flag", "train", lambda env: ["--bogus"] + env.argv("x"), r"unrecognized arguments|KEY VALUE"),
    # the environment
    Bad("wandb without credentials", "train", fake_wandb, r"LOG.WANDB is True but wandb could not start .*wandb login"),
    Bad("read-only LOG.PREFIX", "train",
        lambda env: read_only(env, env.tmp / "ro").argv("x", "LOG.PREFIX", str(env.tmp / "ro")),
        r"permission denied writing .*ro.*LOG.PREFIX"),
    Bad("disk full at start", "train", disk_full_at_start, r"no space left on device writing .*fullstart"),
    # the other tools
    Bad("eval missing folder", "eval", lambda env: ["-c", str(env.tmp / "gone"), "-d", "synthetic"],
        r"checkpoint -c .*gone' does not exist"),
    Bad("eval workers -1", "eval", lambda env: ["-c", env.done, "--workers", "-1"], r"--workers must be >= 0"),
    Bad("eval batch 0", "eval", lambda env: ["-c", env.done, "-bs", "0"], r"batch-size must be at least 1"),
    Bad("eval batch abc", "eval", lambda env: ["-c", env.done, "-bs", "abc"], r"invalid int value"),
    Bad("eval folder without a run", "eval", lambda env: ["-c", str(env.other), "-d", "synthetic"],
        r"has no student_best"),
    Bad("summarize missing root", "summarize", lambda env: [str(env.tmp / "gone")], r"is not a folder"),
    Bad("summarize plot denied", "summarize", plot_denied, r"cannot write plots into .*Permission denied"),
    Bad("summarize plot onto a file", "summarize", lambda env: [str(env.project), "--plot", __file__],
        r"cannot write plots into"),
    Bad("summarize unknown flag", "summarize", lambda env: [str(env.project), "--plots"], r"unrecognized arguments"),
    Bad("sweep seeds 0", "sweep", lambda env: ["--cfg", env.file("s.yaml", "{}"), "--seeds", "0", "--print"],
        r"--seeds must be at least 1"),
    Bad("sweep bad grid", "sweep", lambda env: ["--cfg", env.file("s.yaml", "{}"), "--grid", "SOLVER.LR", "--print"],
        r"--grid 'SOLVER.LR' must look like"),
    Bad("sweep missing cfg", "sweep", lambda env: ["--cfg", str(env.tmp / "no.yaml"), "--print"], r"does not exist"),
    Bad("download timeout -1", "download", lambda env: ["--timeout", "-1", "--dest", str(env.tmp / "d")],
        r"--timeout must be a positive"),
    Bad("download archive missing", "download", lambda env: ["--archive", str(env.tmp / "no.tar"),
                                                             "--dest", str(env.tmp / "d")], r"does not exist"),
    Bad("download archive a folder", "download", lambda env: ["--archive", str(env.tmp), "--dest",
                                                              str(env.tmp / "d")], r"is a folder"),
    Bad("download bad sha", "download", lambda env: ["--sha256", "xyz"], r"is not a SHA-256 digest"),
    Bad("download dest a file", "download", lambda env: ["--dest", __file__, "--archive", __file__],
        r"--dest .* is a file"),
]


def try_bad_input(env, case):
    """Run one bad input; raise AssertionError unless it was answered cleanly."""
    def folders():
        return {r for r, _, _ in os.walk(env.tmp) if not r.startswith(str(env.tmp / "inputs"))}

    before, dirs_before = snapshot(env.tmp), folders()
    with pytest.MonkeyPatch.context() as mp:
        env.patch, env.held = mp, None
        try:
            code, _, err = call(case.tool, case.build(env))
        finally:
            if env.held is not None:
                env.held.release()
    check_one_line(code, err, case.pattern)
    after = snapshot(env.tmp)
    changed = [f for f in set(before) | set(after) if before.get(f) != after.get(f)
               and not f.startswith("inputs") and not f.endswith(runfolder.LOCK)]
    assert not changed, f"files changed: {changed}"
    assert folders() == dirs_before, f"folders created: {sorted(folders() - dirs_before)}"


# ---------------------------------------------------------------------------------------
# faults
# ---------------------------------------------------------------------------------------
def commit_points(env, accs=(50.0, 60.0)):
    """The write points of epoch 2's commit (epoch 2 a new best) and the reference run."""
    with pytest.MonkeyPatch.context() as mp, quiet():
        fixed_accuracy(mp, accs)
        faults = Faults(mp, epoch=2)
        assert train_main(env.argv("ref", *COMMIT)) == 0
    d = run_dir(env.tmp, "ref")
    ref = {"metrics": metrics(env.tmp, "ref"), "latest": load_checkpoint(os.path.join(d, "latest"))["model"],
           "best": student_weights(os.path.join(d, "student_best")),
           "student_1": student_weights(os.path.join(d, "student_1"))}
    return faults.points, ref


COMMIT = ["EXPERIMENT.DETERMINISTIC", "True", "SOLVER.EPOCHS", "2", "LOG.SAVE_CHECKPOINT_FREQ", "1"]


def commit_fault(env, ref, i, kind, accs=(50.0, 60.0)):
    """A kill or ENOSPC at write point ``i`` of epoch 2's commit, then --resume: every
    epoch once in metrics.jsonl, student_best = the best epoch's, bit-exact end state."""
    name = f"commit-{kind}{i}"
    argv = env.argv(name, *COMMIT)
    with pytest.MonkeyPatch.context() as mp:
        fixed_accuracy(mp, accs)
        with mp.context() as inner:
            Faults(inner, epoch=2, at=i, kind=kind)
            if kind == "kill":
                with quiet(), pytest.raises(SimulatedKill):
                    train_main(argv)
            else:
                code, _, err = call("train", argv)
                check_one_line(code, err, r"no space left on device.*--resume")
        d = run_dir(env.tmp, name)
        assert load_checkpoint(os.path.join(d, "latest"))["epoch"] in (1, 2)
        with quiet():
            assert train_main(["--resume"] + argv) == 0
    assert [r["epoch"] for r in metrics(env.tmp, name)] == [1, 2]
    assert [r["test_acc"] for r in metrics(env.tmp, name)] == [r["test_acc"] for r in ref["metrics"]]
    assert same_weights(student_weights(os.path.join(d, "student_best")), ref["best"])
    assert same_weights(student_weights(os.path.join(d, "student_1")), ref["student_1"])
    assert same_weights(load_checkpoint(os.path.join(d, "latest"))["model"], ref["latest"])
    assert not [f for f in os.listdir(d) if f.endswith((".tmp", ".stage"))]


def follow(advice_line, extra=()):
    """The argv of the command an error line prints after 'continue with:' / 'start again with:'."""
    cmd = shlex.split(re.split(r"(?:continue|start again) with: ", advice_line)[1])
    return cmd[cmd.index("tools/train_ours.py") + 1:] + list(extra)


def nan_at(mp, epoch, step=1):
    """The loss of ``epoch``'s ``step`` becomes NaN (on the device, as a bad batch would make it)."""
    from mdistiller.engine.trainer import Trainer

    real = Trainer.train_step
    count = {}

    def train_step(self, batch, ep):
        count[ep] = count.get(ep, 0) + 1
        if ep == epoch and count[ep] == step:
            batch = dict(batch, image=batch["image"] * float("nan"))
        return real(self, batch, ep)

    mp.setattr(Trainer, "train_step", train_step)


def fault_nan_before_first_checkpoint(env):
    argv = env.argv("nan1", "SOLVER.EPOCHS", "2")
    with pytest.MonkeyPatch.context() as mp:
        nan_at(mp, 1)
        code, _, err = call("train", argv)
    line = check_one_line(code, err, r"non-finite loss at epoch 1.*no checkpoint was saved yet.*--resume")
    assert "SOLVER.LR 0.005" in line
    code, _, err = call("train", ["--resume"] + argv + ["SOLVER.LR", "0.005"])  # the advice, followed
    assert code == 0, err
    assert [r["epoch"] for r in metrics(env.tmp, "nan1")] == [1, 2]


def fault_nan_then_lower_lr(env):
    argv = env.argv("nan2", "SOLVER.EPOCHS", "3")
    with pytest.MonkeyPatch.context() as mp:
        nan_at(mp, 2)
        code, _, err = call("train", argv)
    check_one_line(code, err, r"non-finite loss at epoch 2.*'.*latest' \(epoch 1\) is intact.*SOLVER.LR 0.005")
    code, _, err = call("train", ["--resume"] + argv + ["SOLVER.LR", "0.005"])
    assert code == 0, err
    d = run_dir(env.tmp, "nan2")
    assert [r["epoch"] for r in metrics(env.tmp, "nan2")] == [1, 2, 3]
    assert [r["lr"] for r in metrics(env.tmp, "nan2")][1:] == [0.005, 0.005]
    history = [json.loads(line) for line in open(os.path.join(d, "config_history.jsonl"))]
    assert history == [{"from_epoch": 2, "changed": {"SOLVER.LR": [0.05, 0.005]}}]
    assert "LR: 0.005" in open(os.path.join(d, "config.yaml")).read()


def fault_second_signal(env):
    from mdistiller.engine.trainer import Trainer

    argv = env.argv("sig2", "SOLVER.EPOCHS", "3")
    real = Trainer.train_step
    with pytest.MonkeyPatch.context() as mp:
        def train_step(self, batch, epoch):
            if epoch == 2:
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGTERM)
            return real(self, batch, epoch)

        mp.setattr(Trainer, "train_step", train_step)
        code, _, err = call("train", argv)
    line = check_one_line(code, err, r"stopped by a second signal without saving.*continue with: ", 130)
    d = run_dir(env.tmp, "sig2")
    assert load_checkpoint(os.path.join(d, "latest"))["epoch"] == 1
    code, _, err = call("train", follow(line))
    assert code == 0, err
    assert [r["epoch"] for r in metrics(env.tmp, "sig2")] == [1, 2, 3]


def fault_signal_during_startup(env):
    from mdistiller.engine import build

    argv = ["--cfg", env.file("with space.yaml", "SOLVER:\n  EPOCHS: 1\n")] + env.argv("start")
    with pytest.MonkeyPatch.context() as mp:
        def interrupted(*a, **k):  # SIGTERM while the run is being built
            os.kill(os.getpid(), signal.SIGTERM)
            raise AssertionError("SIGTERM was not turned into a clean stop")

        mp.setattr(build, "build_run", interrupted)
        code, _, err = call("train", argv)
    line = check_one_line(code, err, r"interrupted during start-up.*start again with: ", 130)
    assert not os.path.exists(run_dir(env.tmp, "start"))
    code, _, err = call("train", follow(line))  # the printed, shell-quoted command
    assert code == 0, err
    assert [r["epoch"] for r in metrics(env.tmp, "start")] == [1]


def fault_disk_full_first_commit(env):
    argv = env.argv("full1", "SOLVER.EPOCHS", "2")
    with pytest.MonkeyPatch.context() as mp:
        Faults(mp, epoch=1, at=0, kind="full")
        code, _, err = call("train", argv)
    check_one_line(code, err, r"could not save epoch 1 .*no space left on device; no epoch was saved yet "
                              r"\(--resume starts the run again\).*--resume")
    code, out, err = call("train", ["--resume"] + argv)
    assert code == 0, err
    assert "holds no checkpoint yet" in out
    assert [r["epoch"] for r in metrics(env.tmp, "full1")] == [1, 2]


def fault_disk_full_inside_torch_save(env):
    """The disk fills while torch.save writes (torch reports it as 'unexpected pos'): the
    message still says 'no space left on device', and --resume finishes the run."""
    argv = env.argv("fullsave", "SOLVER.EPOCHS", "2")
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, f):
            self.f, self.written = f, 0

        def write(self, data):
            self.written += len(data)
            if self.written > 2000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

    def fdopen(fd, mode="r", *a, **k):
        f = real_fdopen(fd, mode, *a, **k)
        return FullDisk(f) if mode == "wb" else f

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "fdopen", fdopen)
        code, _, err = call("train", argv)
    check_one_line(code, err, r"could not save epoch 1 .*: no space left on device; .*--resume")
    assert "unexpected pos" not in err
    assert call("train", ["--resume"] + argv)[0] == 0
    assert [r["epoch"] for r in metrics(env.tmp, "fullsave")] == [1, 2]


def fault_stale_lock(env):
    argv = env.argv("stale", "SOLVER.EPOCHS", "1")
    assert call("train", argv)[0] == 0
    d = run_dir(env.tmp, "stale")
    with open(os.path.join(d, runfolder.LOCK), "w") as f:
        f.write("process 999999 on a-dead-host")  # left by a killed run; nobody holds the flock
    code, out, err = call("train", ["--resume"] + argv[:-2] + ["SOLVER.EPOCHS", "2"])
    assert code == 0, err
    assert "locked by process 999999 on a-dead-host, which is no longer running; taking it over" in out
    assert [r["epoch"] for r in metrics(env.tmp, "stale")] == [1, 2]


def fault_stale_interrupted(env):
    """Killed after the commit of the epoch an 'interrupted' checkpoint was taken in, before
    deleting it: --resume must continue from the newer 'latest'."""
    from mdistiller.engine.trainer import Trainer

    argv = env.argv("inter", "SOLVER.EPOCHS", "2")
    real = Trainer.train_step
    with pytest.MonkeyPatch.context() as mp:
        def train_step(self, batch, epoch):
            out = real(self, batch, epoch)
            if epoch == 2 and not os.path.exists(os.path.join(self.run_dir, "interrupted")):
                self._stop = True
            return out

        mp.setattr(Trainer, "train_step", train_step)
        assert call("train", argv)[0] == 130
    with pytest.MonkeyPatch.context() as mp:
        faults = Faults(mp, epoch=2)
        real_unlink = os.unlink

        def unlink(path, *a, **k):
            if faults.active and str(path).endswith("interrupted"):
                raise SimulatedKill(path)
            return real_unlink(path, *a, **k)

        mp.setattr(os, "unlink", unlink)
        with quiet(), pytest.raises(SimulatedKill):
            train_main(["--resume"] + argv)
    d = run_dir(env.tmp, "inter")
    assert os.path.exists(os.path.join(d, "interrupted"))
    code, out, err = call("train", ["--resume"] + argv + ["SOLVER.EPOCHS", "3"])
    assert code == 0, err
    assert "from latest at epoch 3" in out
    assert [r["epoch"] for r in metrics(env.tmp, "inter")] == [1, 2, 3]


def fault_corrupt_interrupted(env):
    argv = env.argv("corrupt", "SOLVER.EPOCHS", "1")
    assert call("train", argv)[0] == 0
    d = run_dir(env.tmp, "corrupt")
    path = os.path.join(d, "interrupted")
    with open(path, "wb") as f:
        f.write(b"garbage" * 10)
    resume = ["--resume"] + argv[:-2] + ["SOLVER.EPOCHS", "2"]
    code, _, err = call("train", resume)
    check_one_line(code, err, r"interrupted' is truncated or corrupt .*delete it to resume from the last epoch end")
    os.unlink(path)  # the advice, followed
    assert call("train", resume)[0] == 0
    assert [r["epoch"] for r in metrics(env.tmp, "corrupt")] == [1, 2]


def fault_overwrite_a_damaged_run(env):
    """--overwrite replaces a run folder whose 'latest' is damaged (it is not read)."""
    argv = env.argv("damaged", "SOLVER.EPOCHS", "1")
    assert call("train", argv)[0] == 0
    with open(os.path.join(run_dir(env.tmp, "damaged"), "latest"), "wb") as f:
        f.write(b"not a checkpoint")
    code, _, err = call("train", ["--overwrite"] + argv)
    assert code == 0, err
    assert load_checkpoint(os.path.join(run_dir(env.tmp, "damaged"), "latest"))["epoch"] == 1


def fault_leftover_tmp(env):
    argv = env.argv("tmpfiles", "SOLVER.EPOCHS", "1")
    assert call("train", argv)[0] == 0
    d = run_dir(env.tmp, "tmpfiles")
    for name in (".latest.abc.tmp", "best.e7.stage"):
        with open(os.path.join(d, name), "wb") as f:
            f.write(b"half")
    assert call("train", ["--resume"] + argv[:-2] + ["SOLVER.EPOCHS", "2"])[0] == 0
    assert not [f for f in os.listdir(d) if f.endswith((".tmp", ".stage"))]


def fault_torn_metrics(env):
    argv = env.argv("torn", "SOLVER.EPOCHS", "1")
    assert call("train", argv)[0] == 0
    path = os.path.join(run_dir(env.tmp, "torn"), "metrics.jsonl")
    with open(path, "a") as f:
        f.write('{"epoch": 2, "test_ac')
    code, _, err = call("train", ["--resume"] + argv[:-2] + ["SOLVER.EPOCHS", "2"])
    assert code == 0, err
    assert [r["epoch"] for r in metrics(env.tmp, "torn")] == [1, 2]
    assert open(path).read().count("\n") == 2


def fault_resume_flag_after_pairs(env):
    argv = env.argv("late", "SOLVER.EPOCHS", "1")
    assert call("train", argv)[0] == 0
    code, _, err = call("train", argv[:-2] + ["SOLVER.EPOCHS", "2", "--resume"])
    assert code == 0, err
    assert [r["epoch"] for r in metrics(env.tmp, "late")] == [1, 2]


def fault_resume_unmarked_run_folder(env):
    """A run folder of a version without the marker resumes, and is marked from then on."""
    assert call("train", env.argv("oldrun", "SOLVER.EPOCHS", "1"))[0] == 0
    d = run_dir(env.tmp, "oldrun")
    for f in (runfolder.MARKER, runfolder.LOCK):
        os.unlink(os.path.join(d, f))
    code, _, err = call("train", ["--resume"] + env.argv("oldrun", "SOLVER.EPOCHS", "2"))
    assert code == 0, err
    assert runfolder.is_run_folder(d)
    assert [r["epoch"] for r in metrics(env.tmp, "oldrun")] == [1, 2]


def fault_summarize_damaged_runs(env):
    """summarize over a project with a garbage config.yaml and a non-numeric test_acc still
    prints the table of the good runs."""
    project = env.tmp / "sproj"
    for name, cfg, acc in [("good", "SOLVER:\n  EPOCHS: 1\n", 42.0), ("garbage", "\x00\x01junk", 1.0),
                           ("text", "SOLVER:\n  EPOCHS: 1\n", "n/a")]:
        (project / name).mkdir(parents=True)
        (project / name / "config.yaml").write_text(cfg)
        (project / name / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "test_acc": acc}) + "\n")
    code, out, err = call("summarize", [str(project)])
    assert code == 0, err
    assert "42.00" in out and "Traceback" not in err and "skipping" in err


FAULTS = [fault_nan_before_first_checkpoint, fault_nan_then_lower_lr, fault_second_signal,
          fault_signal_during_startup, fault_disk_full_first_commit, fault_disk_full_inside_torch_save,
          fault_stale_lock, fault_stale_interrupted, fault_corrupt_interrupted, fault_overwrite_a_damaged_run,
          fault_leftover_tmp, fault_torn_metrics, fault_resume_flag_after_pairs, fault_resume_unmarked_run_folder,
          fault_summarize_damaged_runs]


def fault_real_sigkill_and_lock(env):
    """Through the real tool in a subprocess: while it trains, a second start and a --resume
    of the same folder are refused (the lock names its PID); after SIGKILL, --resume takes
    the stale lock over and finishes with every epoch recorded once."""
    import subprocess
    import time

    from tests.conftest import REPO_ROOT

    argv = env.argv("killed", "SOLVER.EPOCHS", "400")
    d = run_dir(env.tmp, "killed")
    tool = os.path.join(REPO_ROOT, "tools", "train_ours.py")
    proc = subprocess.Popen([sys.executable, tool] + argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        t0 = time.time()
        while not os.path.exists(os.path.join(d, "latest")) and proc.poll() is None and time.time() - t0 < 120:
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        for flags in ([], ["--resume"], ["--overwrite"]):
            code, _, err = call("train", flags + argv)
            check_one_line(code, err, rf"'{re.escape(d)}' is in use by process {proc.pid} on ")
    finally:
        proc.kill()
        proc.wait()
    done = load_checkpoint(os.path.join(d, "latest"))["epoch"]
    code, out, err = call("train", ["--resume"] + argv + ["SOLVER.EPOCHS", str(done + 1)])
    assert code == 0, err
    assert f"locked by process {proc.pid}" in out and "taking it over" in out
    assert [r["epoch"] for r in metrics(env.tmp, "killed")] == list(range(1, done + 2))
    assert not [f for f in os.listdir(d) if f.endswith((".tmp", ".stage"))]


REAL_FAULTS = [fault_real_sigkill_and_lock]
