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

from mdistiller.cli import benchmark, demo, download, eval as eval_cli, export as export_cli, make_image_folder
from mdistiller.cli import summarize, sweep, tune
from mdistiller.cli.train import main as train_main
from mdistiller.runs import folder as runfolder
from mdistiller.runs.checkpoint import load_checkpoint

from tests.engine.helpers import make_teacher, metrics, run_dir, tiny_argv
from tests.reliability.faults import Faults, SimulatedKill, fixed_accuracy, same_weights, snapshot, student_weights

# every tool of tools/ (train.py and train_ours.py are the one tool "train"; download_ckpts.py is "download")
TOOLS = {"train": train_main, "eval": eval_cli.main, "summarize": summarize.main, "sweep": sweep.main, "tune": tune.main,
         "download": download.main, "benchmark": benchmark.main, "demo": demo.main,
         "make_image_folder": make_image_folder.main, "export": export_cli.main}
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


def fake_run(env, name, student_best, student="resnet8"):
    """A run folder under inputs/: the finished run's config (student changed) and a given student_best."""
    folder = env.tmp / "inputs" / name
    folder.mkdir(parents=True, exist_ok=True)
    cfg = open(os.path.join(env.done, "config.yaml")).read().replace("STUDENT: resnet8", f"STUDENT: {student}")
    (folder / "config.yaml").write_text(cfg)
    best = open(os.path.join(env.done, "student_best"), "rb").read() if student_best is None else student_best
    (folder / "student_best").write_bytes(best)
    return str(folder)


def without_onnx(env):
    env.patch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    return [env.done]


def _train(name, *extra, pattern):
    return Bad(name, "train", lambda env: env.argv("x", *extra), pattern)


def _images(name, *args, pattern):
    return Bad(f"images {name}", "make_image_folder", lambda env: [str(env.tmp / "if"), *args], pattern)


def _bench(name, *args, pattern):
    return Bad(f"benchmark {name}", "benchmark", lambda env: list(args), pattern)


def tune_argv(env, *opts, trials="2", space=("SOLVER.LR=float:0.01:0.1",)):
    """A tune.py command on a config with a holdout, its study under env.tmp."""
    cfg = env.file("tune.yaml", "DATASET:\n  HOLDOUT: 0.25\n")
    argv = ["--cfg", cfg] + [x for s in space for x in ("--space", s)] + (["--trials", trials] if trials else [])
    return argv + ["LOG.PREFIX", str(env.tmp / "tuneout")] + list(opts)


def orphan_trials(env):
    """A study folder holding a trial folder but no study.db (under inputs/: made by the case)."""
    prefix = env.tmp / "inputs" / "orphan"
    (prefix / "distill" / "lost" / "trial_0000").mkdir(parents=True, exist_ok=True)
    return ["--study", "lost"] + tune_argv(env, "LOG.PREFIX", str(prefix))


def no_module(env, name, argv):
    """``argv``, with the optional package ``name`` made unimportable."""
    env.patch.setitem(sys.modules, name, None)
    return argv


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
    _train("optimizer LAMB", "SOLVER.TYPE", "LAMB", pattern=r"SOLVER.TYPE 'LAMB' is not an optimizer; known: SGD"),
    # recipes (#25)
    _train("DOT with AdamW", "SOLVER.TYPE", "AdamW", "SOLVER.TRAINER", "dot", pattern=r"needs SOLVER.TYPE SGD"),
    _train("DOT with clipping", "SOLVER.CLIP_GRAD", "1", "SOLVER.TRAINER", "dot",
           pattern=r"dot does not support SOLVER.CLIP_GRAD"),
    _train("betas one number", "SOLVER.BETAS", "[0.9]", pattern=r"SOLVER.BETAS must be two numbers in \[0, 1\)"),
    _train("eps 0", "SOLVER.EPS", "0", pattern=r"SOLVER.EPS must be a positive number"),
    _train("scheduler cosin", "SOLVER.SCHEDULER", "cosin",
           pattern=r"SOLVER.SCHEDULER 'cosin' is not a schedule; known: step"),
    _train("warmup beyond the run", "SOLVER.WARMUP_EPOCHS", "3", "SOLVER.EPOCHS", "2",
           pattern=r"SOLVER.WARMUP_EPOCHS must be >= 0 and below SOLVER.EPOCHS = 2"),
    _train("warmup lr above lr", "SOLVER.WARMUP_LR", "1.0", pattern=r"SOLVER.WARMUP_LR must be in \[0, SOLVER.LR"),
    _train("min lr -1", "SOLVER.MIN_LR", "-1", pattern=r"SOLVER.MIN_LR must be in \[0, SOLVER.LR"),
    _train("label smoothing 1", "SOLVER.LABEL_SMOOTHING", "1.0", pattern=r"SOLVER.LABEL_SMOOTHING must be in \[0, 1\)"),
    _train("weight decay norm bias 2", "SOLVER.WEIGHT_DECAY_NORM_BIAS", "2",
           pattern=r"'SOLVER.WEIGHT_DECAY_NORM_BIAS' expects a bool"),
    _train("clip -1", "SOLVER.CLIP_GRAD", "-1", pattern=r"SOLVER.CLIP_GRAD must be a maximum gradient norm >= 0"),
    _train("ema 1", "SOLVER.EMA", "1.0", pattern=r"SOLVER.EMA must be a decay in \[0, 1\)"),
    _train("ema select without ema", "SOLVER.EMA_SELECT", "True", pattern=r"SOLVER.EMA_SELECT True .* SOLVER.EMA is 0"),
    _train("teacher ckpts fewer than teachers", "DISTILLER.TYPE", "KD", "DISTILLER.TEACHER", "['resnet8', 'resnet8']",
           "DISTILLER.TEACHER_CKPT", "['a.pth']", pattern=r"DISTILLER.TEACHER_CKPT has 1 entries for 2 teachers"),
    _train("teacher weights of another length", "DISTILLER.TYPE", "KD", "DISTILLER.TEACHER", "['resnet8', 'resnet8']",
           "DISTILLER.TEACHER_WEIGHTS", "[1.0]", pattern=r"DISTILLER.TEACHER_WEIGHTS must be 2 numbers"),
    _train("feature method with two teachers", "DISTILLER.TYPE", "AT", "DISTILLER.TEACHER", "['resnet8', 'resnet8']",
           pattern=r"AT reads one teacher's features and cannot distil from 2 teachers"),
    _train("teachers not names", "DISTILLER.TEACHER", "[1, 2]", pattern=r"'DISTILLER.TEACHER' expects a list of str"),
    _train("trainer sam", "SOLVER.TRAINER", "sam", pattern=r"SOLVER.TRAINER 'sam' is not implemented"),
    _train("amp fp8", "SOLVER.AMP", "fp8", pattern=r"SOLVER.AMP must be one of"),
    _train("device tpu", "SOLVER.DEVICE", "tpu", pattern=r"SOLVER.DEVICE must be"),
    _train("workers -1", "DATASET.NUM_WORKERS", "-1", pattern=r"DATASET.NUM_WORKERS must be"),
    _train("subset 0", "DATASET.SUBSET", "0.0", pattern=r"DATASET.SUBSET and DATASET.VAL_SUBSET must be"),
    _train("subset below one batch", "DATASET.SUBSET", "0.0001",
           pattern=r"DATASET.SUBSET 0.0001 leaves \d+ training images, less than one batch"),
    _train("synthetic size 0", "DATASET.SYNTHETIC_SIZE", "0", pattern=r"DATASET.SYNTHETIC_SIZE must be"),
    _train("holdout 1", "DATASET.HOLDOUT", "1.0", pattern=r"DATASET.HOLDOUT must be a fraction in \[0, 1\)"),
    _train("holdout -0.1", "DATASET.HOLDOUT", "-0.1", pattern=r"DATASET.HOLDOUT must be a fraction in \[0, 1\)"),
    _train("holdout empties a class", "DATASET.HOLDOUT", "0.99",
           pattern=r"DATASET.HOLDOUT 0.99 holds out all \d+ training images of class \d+, leaving none"),
    _train("holdout seed -1", "DATASET.HOLDOUT_SEED", "-1", pattern=r"DATASET.HOLDOUT_SEED must be an integer >= 0"),
    _train("decode gpu", "DATASET.DECODE", "gpu", pattern=r"DATASET.DECODE must be one of cpu, device; got 'gpu'"),
    _train("dataset root is a file", "DATASET.ROOT", __file__, pattern=r"DATASET.ROOT .* is a file"),
    _train("read freq 0", "LOG.READ_FREQ", "0", pattern=r"LOG.READ_FREQ must be at least 1"),
    _train("checkpoint freq 0", "LOG.SAVE_CHECKPOINT_FREQ", "0", pattern=r"LOG.SAVE_CHECKPOINT_FREQ must be"),
    _train("tensorboard freq -1", "LOG.TENSORBOARD_FREQ", "-1", pattern=r"LOG.TENSORBOARD_FREQ must be"),
    _train("seed -1", "EXPERIMENT.SEED", "-1", pattern=r"EXPERIMENT.SEED must be an integer >= 0"),
    _train("unknown hook", "EXPERIMENT.HOOKS", "['NOPE']", pattern=r"EXPERIMENT.HOOKS: unknown hook 'NOPE'; known hooks"),
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
    Bad("--base-temp 0", "train", lambda env: ["--logit-stand", "--base-temp", "0"] + env.argv("x"),
        r"--base-temp: must be a number > 0"),
    Bad("--kd-weight nan after the pairs", "train", lambda env: env.argv("x") + ["--kd-weight", "nan"],
        r"--kd-weight: must be a number >= 0"),
    Bad("--base-temp without a value", "train", lambda env: env.argv("x") + ["--base-temp"],
        r"--base-temp: expected one argument"),
    Bad("--print-config with a bad value", "train", lambda env: ["--print-config"] + env.argv("x", "SOLVER.LR", "fast"),
        r"SOLVER.LR' expects a float"),
    _train("tiny-imagenet view unknown", "DATASET.TINY_IMAGENET_VIEW", "crop", pattern=r"TINY_IMAGENET_VIEW 'crop' is not a view"),
    # the environment
    Bad("wandb without credentials", "train", fake_wandb, r"LOG.WANDB is True but wandb could not start .*wandb login"),
    Bad("read-only LOG.PREFIX", "train",
        lambda env: read_only(env, env.tmp / "ro").argv("x", "LOG.PREFIX", str(env.tmp / "ro")),
        r"permission denied writing .*ro.*LOG.PREFIX"),
    Bad("disk full at start", "train", disk_full_at_start, r"no space left on device writing .*fullstart"),
    # the other tools
    Bad("eval missing folder", "eval", lambda env: ["-c", str(env.tmp / "gone"), "-d", "synthetic"],
        r"checkpoint -c .*gone' does not exist"),
    Bad("eval workers -1", "eval", lambda env: ["-c", env.done, "--workers", "-1"],
        r"argument --workers: must be an integer >= 0"),
    Bad("eval batch 0", "eval", lambda env: ["-c", env.done, "-bs", "0"],
        r"argument -bs/--batch-size: must be an integer >= 1"),
    Bad("eval batch abc", "eval", lambda env: ["-c", env.done, "-bs", "abc"],
        r"argument -bs/--batch-size: must be an integer"),
    Bad("eval folder without a run", "eval", lambda env: ["-c", str(env.other), "-d", "synthetic"],
        r"has no student_best"),
    Bad("summarize missing root", "summarize", lambda env: [str(env.tmp / "gone")], r"is not a folder"),
    Bad("summarize plot denied", "summarize", plot_denied, r"cannot write plots into .*Permission denied"),
    Bad("summarize plot onto a file", "summarize", lambda env: [str(env.project), "--plot", __file__],
        r"cannot write plots into"),
    Bad("summarize unknown flag", "summarize", lambda env: [str(env.project), "--plots"], r"unrecognized arguments"),
    Bad("summarize baseline without =", "summarize", lambda env: [str(env.project), "--baseline", "DISTILLER.TYPE"],
        r"--baseline 'DISTILLER.TYPE' is not KEY=VALUE"),
    Bad("summarize baseline matching nothing", "summarize",
        lambda env: [str(env.project), "--baseline", "DISTILLER.TYPE=CRD"], r"matches no group \(DISTILLER.TYPE takes"),
    Bad("summarize baseline unknown key", "summarize", lambda env: [str(env.project), "--baseline", "NO.KEY=1"],
        r"no run has the config key 'NO.KEY'"),
    Bad("summarize paired without baseline", "summarize", lambda env: [str(env.project), "--paired"],
        r"--paired compares with a baseline"),
    Bad("summarize metric selected without holdout", "summarize",
        lambda env: [str(env.project), "--metric", "selected"], r"--metric selected needs runs with a holdout"),
    Bad("summarize metric unknown", "summarize", lambda env: [str(env.project), "--metric", "median"],
        r"invalid choice: 'median'"),
    Bad("export missing folder", "export", lambda env: [str(env.tmp / "gone")], r"is not a run folder"),
    Bad("export not a run", "export", lambda env: [str(env.other)], r"is not a run folder \(no config.yaml\)"),
    Bad("export checkpoint ema absent", "export", lambda env: [env.done, "--checkpoint", "ema"],
        r"has no student_ema .*pick another --checkpoint"),
    Bad("export checkpoint unknown", "export", lambda env: [env.done, "--checkpoint", "top"], r"invalid choice"),
    Bad("export corrupt checkpoint", "export", lambda env: [fake_run(env, "corrupt", b"\x80garbage")],
        r"checkpoint .*student_best' is truncated or corrupt"),
    Bad("export mismatched checkpoint", "export", lambda env: [fake_run(env, "other", None, "resnet14")],
        r"does not fit model resnet14"),
    Bad("export format unknown", "export", lambda env: [env.done, "--format", "tflite"], r"invalid choice"),
    Bad("export onnx without the extra", "export", without_onnx, r"needs onnxruntime .*pip install -e \.\[export\]"),
    Bad("export opset too old", "export", lambda env: [env.done, "--opset", "9"], r"--opset 9 is outside"),
    Bad("export opset for pt2", "export", lambda env: [env.done, "--format", "pt2", "--opset", "18"],
        r"--opset is for --format onnx only"),
    Bad("export batch 0", "export", lambda env: [env.done, "--batch", "0"], r"0 is not a positive number"),
    Bad("export batch word", "export", lambda env: [env.done, "--batch", "many"], r"neither a number .* nor 'dynamic'"),
    Bad("export out onto a file", "export", lambda env: [env.done, "--out", __file__], r"--out .* is a file"),
    Bad("export images 0", "export", lambda env: [env.done, "--images", "0"], r"--images must be >= 1"),
    Bad("export tolerance 0", "export", lambda env: [env.done, "--tolerance", "0"], r"--tolerance must be a positive"),
    Bad("export preprocessing with a corrupt run", "export",
        lambda env: [fake_run(env, "corrupt2", b""), "--with-preprocessing"], r"student_best' is empty"),
    Bad("eval exported file corrupt", "eval", lambda env: ["-c", env.file("student.onnx", b"not onnx"),
                                                           "-d", "synthetic"], r"cannot load exported file"),
    Bad("summarize cost unknown flag", "summarize", lambda env: [str(env.project), "--costs"],
        r"unrecognized arguments"),
    Bad("sweep seeds 0", "sweep", lambda env: ["--cfg", env.file("s.yaml", "{}"), "--seeds", "0", "--print"],
        r"argument --seeds: must be an integer >= 1"),
    Bad("sweep bad grid", "sweep", lambda env: ["--cfg", env.file("s.yaml", "{}"), "--grid", "SOLVER.LR", "--print"],
        r"--grid 'SOLVER.LR' must look like"),
    Bad("sweep missing cfg", "sweep", lambda env: ["--cfg", str(env.tmp / "no.yaml"), "--print"], r"does not exist"),
    Bad("download timeout -1", "download", lambda env: ["--timeout", "-1", "--dest", str(env.tmp / "d")],
        r"argument --timeout: must be a number > 0"),
    Bad("download archive missing", "download", lambda env: ["--archive", str(env.tmp / "no.tar"),
                                                             "--dest", str(env.tmp / "d")], r"does not exist"),
    Bad("download archive a folder", "download", lambda env: ["--archive", str(env.tmp), "--dest",
                                                              str(env.tmp / "d")], r"is a folder"),
    Bad("download bad sha", "download", lambda env: ["--sha256", "xyz"], r"is not a SHA-256 digest"),
    Bad("download dest a file", "download", lambda env: ["--dest", __file__, "--archive", __file__],
        r"--dest .* is a file"),
    # --resume may change LR and AMP only after a non-finite loss; keys are compared whole (#21)
    Bad("resume with another LR", "train", lambda env: ["--resume"] + env.argv("done", "SOLVER.EPOCHS", "3",
                                                                              "SOLVER.LR", "0.01"),
        r"SOLVER.LR may change only after a non-finite loss .*use the original value \(SOLVER.LR 0.05\)"),
    Bad("resume with bf16", "train", lambda env: ["--resume"] + env.argv("done", "SOLVER.EPOCHS", "3",
                                                                        "SOLVER.AMP", "bf16"),
        r"SOLVER.AMP may change only after a non-finite loss"),
    Bad("resume with other decay stages", "train",
        lambda env: ["--resume"] + env.argv("done", "SOLVER.EPOCHS", "3", "SOLVER.LR_DECAY_STAGES", "[1]"),
        r"differs in SOLVER.LR_DECAY_STAGES"),
    Bad("resume with another decay rate", "train",
        lambda env: ["--resume"] + env.argv("done", "SOLVER.EPOCHS", "3", "SOLVER.LR_DECAY_RATE", "0.5"),
        r"differs in SOLVER.LR_DECAY_RATE"),
    Bad("new teacher without resume", "train", lambda env: ["--new-teacher"] + env.argv("nt"),
        r"--new-teacher is for --resume"),
    # training: bounds and inputs (#21)
    _train("workers 100000", "DATASET.NUM_WORKERS", "100000",
           pattern=r"DATASET.NUM_WORKERS 100000 is more than \d+ worker processes .*set it to at most"),
    _train("seed beyond 64 bits", "EXPERIMENT.SEED", str(2**64), pattern=r"EXPERIMENT.SEED must be at most"),
    _train("synthetic size 1e8", "DATASET.SYNTHETIC_SIZE", "100000000",
           pattern=r"DATASET.SYNTHETIC_SIZE must be at most"),
    _train("sync bn on cpu", "SOLVER.SYNC_BN", "True", pattern=r"SOLVER.SYNC_BN needs CUDA"),
    _train("newline in name", "EXPERIMENT.NAME", "a\nb", pattern=r"EXPERIMENT.NAME 'a\\nb' is not a valid folder name"),
    _train("batch above the training set", "SOLVER.BATCH_SIZE", "64",
           pattern=r"leaves 32 training images, less than one batch of SOLVER.BATCH_SIZE 64"),
    Bad("cfg empty string", "train", lambda env: ["--cfg", ""] + env.argv("x"), r"argument --cfg: is empty"),
    Bad("cfg Latin-1", "train", lambda env: yaml(env, "latin1.yaml", b"EXPERIMENT:\n  TAG: caf\xe9\n"),
        r"is not UTF-8 .*save it as UTF-8"),
    Bad("plugin calls sys.exit", "train",
        lambda env: env.argv("x", "EXPERIMENT.PLUGINS", f"['{env.file('exits.py', 'import sys; sys.exit(3)')}']"),
        r"plugin .*exits.py' called sys.exit\(3\) while being imported"),
    Bad("image folder with one class", "train", lambda env: env.argv("x", "DATASET.TYPE", "imagefolder",
                                                                     "DATASET.ROOT", image_folder(env, classes=1)),
        r"has 1 class folder; a classifier needs at least 2"),
    Bad("image folder with an empty class", "train",
        lambda env: env.argv("x", "DATASET.TYPE", "imagefolder", "DATASET.ROOT", image_folder(env, empty="class_9")),
        r"class folder class_9 under .* holds no images"),
    # eval (#21)
    Bad("eval batch -1", "eval", lambda env: ["-c", env.done, "-bs", "-1"], r"argument -bs/--batch-size: must be"),
    Bad("eval workers abc", "eval", lambda env: ["-c", env.done, "--workers", "abc"], r"argument --workers: must be"),
    Bad("eval workers 100000", "eval", lambda env: ["-c", env.done, "--workers", "100000"],
        r"DATASET.NUM_WORKERS 100000 is more than"),
    Bad("eval a text file", "eval", lambda env: ["-c", env.file("notes.txt", "not a checkpoint\n"), "-d", "synthetic",
                                                 "-m", "resnet8"], r"is a text file, not a checkpoint"),
    Bad("eval run folder without config.yaml", "eval", lambda env: ["-c", copy_student_only(env)],
        r"has no config.yaml, so its dataset and model are unknown; pass --cfg"),
    Bad("eval no published checkpoint", "eval", lambda env: ["-m", "resnet8", "-d", "synthetic"],
        r"published checkpoint of resnet8 is not installed|resnet8 has no published checkpoint"),
    Bad("eval device tpu", "eval", lambda env: ["-c", env.done, "--device", "tpu"], r"SOLVER.DEVICE must be"),
    Bad("eval checkpoint ema of a run without EMA", "eval", lambda env: ["-c", env.done, "--checkpoint", "ema"],
        r"has no student_ema checkpoint \(the run kept no EMA of its student: train with SOLVER.EMA"),
    Bad("eval checkpoint bogus", "eval", lambda env: ["-c", env.done, "--checkpoint", "bogus"],
        r"argument --checkpoint: invalid choice"),
    Bad("eval unknown flag", "eval", lambda env: ["-c", env.done, "--bogus"], r"unrecognized arguments|KEY VALUE"),
    # summarize (#21)
    Bad("summarize root a file", "summarize", lambda env: [__file__], r"is not a folder"),
    Bad("summarize root without runs", "summarize", lambda env: [str(env.other)], r"no run folders"),
    Bad("summarize csv and markdown", "summarize", lambda env: [str(env.project), "--csv", "--markdown"],
        r"not allowed with argument"),
    Bad("summarize no root", "summarize", lambda env: [], r"the following arguments are required: root"),
    Bad("summarize plot under a file", "summarize", lambda env: [str(env.project), "--plot", __file__ + "/plots"],
        r"cannot write plots into"),
    Bad("summarize empty root", "summarize", lambda env: [""], r"is not a folder"),
    # sweep (#21)
    Bad("sweep seeds -1", "sweep", lambda env: ["--cfg", env.file("s.yaml", "{}"), "--seeds", "-1", "--print"],
        r"argument --seeds: must be an integer >= 1"),
    Bad("sweep seeds abc", "sweep", lambda env: ["--cfg", env.file("s.yaml", "{}"), "--seeds", "abc", "--print"],
        r"argument --seeds: must be"),
    Bad("sweep seed start -1", "sweep",
        lambda env: ["--cfg", env.file("s.yaml", "{}"), "--seed-start", "-1", "--print"],
        r"argument --seed-start: must be an integer >= 0"),
    Bad("sweep no cfg", "sweep", lambda env: ["--print"], r"the following arguments are required: --cfg"),
    Bad("sweep cfg a folder", "sweep", lambda env: ["--cfg", str(env.tmp), "--print"], r"is a folder"),
    Bad("sweep unknown grid key", "sweep",
        lambda env: ["--cfg", env.file("s.yaml", "{}"), "--grid", "SOLVER.LRR=0.1,0.2", "--print"],
        r"unknown config key 'SOLVER.LRR'"),
    Bad("sweep odd overrides", "sweep", lambda env: ["--cfg", env.file("s.yaml", "{}"), "--print", "SOLVER.LR"],
        r"odd number"),
    # sweep --launcher (#24)
    Bad("sweep launcher unknown", "sweep", lambda env: ["--cfg", env.file("s.yaml", "{}"), "--launcher", "pbs"],
        r"argument --launcher: invalid choice: 'pbs'"),
    Bad("sweep array parallelism 0", "sweep",
        lambda env: ["--cfg", env.file("s.yaml", "{}"), "--launcher", "slurm", "--slurm-array-parallelism", "0"],
        r"argument --slurm-array-parallelism: must be an integer >= 1"),
    Bad("sweep slurm extra malformed", "sweep",
        lambda env: ["--cfg", env.file("s.yaml", "{}"), "--launcher", "slurm", "--slurm-extra", "account"],
        r"--slurm-extra 'account' must look like KEY=VALUE"),
    Bad("sweep partition without slurm", "sweep",
        lambda env: ["--cfg", env.file("s.yaml", "{}"), "--slurm-partition", "gpu"],
        r"--slurm-partition is a SLURM option; add --launcher slurm"),
    Bad("sweep print with a launcher", "sweep",
        lambda env: ["--cfg", env.file("s.yaml", "{}"), "--print", "--launcher", "submitit-local"],
        r"--print and --launcher submitit-local contradict"),
    Bad("sweep time 0", "sweep", lambda env: ["--cfg", env.file("s.yaml", "{}"), "--launcher", "slurm", "--time", "0"],
        r"argument --time: must be an integer >= 1"),
    Bad("sweep gpus -1", "sweep",
        lambda env: ["--cfg", env.file("s.yaml", "{}"), "--launcher", "slurm", "--gpus-per-job", "-1"],
        r"argument --gpus-per-job: must be an integer >= 0"),
    Bad("sweep cpus 0", "sweep", lambda env: ["--cfg", env.file("s.yaml", "{}"), "--launcher", "slurm",
                                              "--cpus-per-job", "0"], r"argument --cpus-per-job: must be an integer >= 1"),
    Bad("sweep submitit missing", "sweep", lambda env: no_module(env, "submitit", [
        "--cfg", env.file("s.yaml", "{}"), "--launcher", "submitit-local"]),
        r"needs submitit.*pip install -e \.\[slurm\]"),
    # tune (#24)
    Bad("tune no cfg", "tune", lambda env: ["--space", "SOLVER.LR=float:0.01:0.1", "--trials", "2"],
        r"the following arguments are required: --cfg"),
    Bad("tune no holdout", "tune", lambda env: tune_argv(env, "DATASET.HOLDOUT", "0"),
        r"DATASET.HOLDOUT is 0: tune.py selects on the holdout split"),
    Bad("tune trials 0", "tune", lambda env: tune_argv(env, trials="0"), r"argument --trials: must be an integer >= 1"),
    Bad("tune trials abc", "tune", lambda env: tune_argv(env, trials="abc"), r"argument --trials: must be"),
    Bad("tune no trials", "tune", lambda env: tune_argv(env, trials=None), r"--trials is required"),
    Bad("tune workers 0", "tune", lambda env: ["--workers", "0"] + tune_argv(env),
        r"argument --workers: must be an integer >= 1"),
    Bad("tune prune unknown", "tune", lambda env: ["--prune", "mean"] + tune_argv(env),
        r"argument --prune: invalid choice: 'mean'"),
    Bad("tune launcher unknown", "tune", lambda env: ["--launcher", "pbs"] + tune_argv(env),
        r"argument --launcher: invalid choice: 'pbs'"),
    Bad("tune no space", "tune", lambda env: tune_argv(env, space=()), r"no --space given"),
    Bad("tune space without =", "tune", lambda env: tune_argv(env, space=("SOLVER.LR",)),
        r"--space 'SOLVER.LR' must look like KEY=SPEC"),
    Bad("tune space unknown kind", "tune", lambda env: tune_argv(env, space=("SOLVER.LR=normal:0:1",)),
        r"unknown kind 'normal'"),
    Bad("tune space unknown key", "tune", lambda env: tune_argv(env, space=("SOLVER.LRR=float:0.1:0.2",)),
        r"SOLVER.LRR"),
    Bad("tune space log from 0", "tune", lambda env: tune_argv(env, space=("SOLVER.LR=float:0:0.1:log",)),
        r"a log range needs LOW > 0"),
    Bad("tune space bad value", "tune", lambda env: tune_argv(env, space=("SOLVER.EPOCHS=int:0:3",)),
        r"--space SOLVER.EPOCHS=int:0:3: .*SOLVER.EPOCHS"),
    Bad("tune space reserved key", "tune", lambda env: tune_argv(env, space=("EXPERIMENT.NAME=choice:a;b",)),
        r"EXPERIMENT.NAME is set by tune.py"),
    Bad("tune space and override", "tune", lambda env: tune_argv(env, "SOLVER.LR", "0.1"),
        r"SOLVER.LR is given more than once"),
    Bad("tune name override", "tune", lambda env: tune_argv(env, "EXPERIMENT.NAME", "x"),
        r"EXPERIMENT.NAME is set by tune.py"),
    Bad("tune study with a slash", "tune", lambda env: ["--study", "a/b"] + tune_argv(env),
        r"--study 'a/b' is not a valid folder name"),
    Bad("tune bad storage", "tune", lambda env: ["--storage", "nosuchdb://x"] + tune_argv(env), r"--storage nosuchdb://x"),
    Bad("tune report of no study", "tune", lambda env: ["--report"] + tune_argv(env, trials=None),
        r"no study folder .*run tune.py with --trials first"),
    Bad("tune trials without study.db", "tune", orphan_trials, r"holds trial folders but no study.db"),
    Bad("tune partition without slurm", "tune", lambda env: ["--slurm-partition", "gpu"] + tune_argv(env),
        r"--slurm-partition is a SLURM option; add --launcher slurm"),
    Bad("tune gpus -1", "tune", lambda env: ["--gpus-per-job", "-1"] + tune_argv(env),
        r"argument --gpus-per-job: must be an integer >= 0"),
    Bad("tune cpus 0", "tune", lambda env: ["--launcher", "slurm", "--cpus-per-job", "0"] + tune_argv(env),
        r"argument --cpus-per-job: must be an integer >= 1"),
    Bad("tune time abc", "tune", lambda env: ["--launcher", "slurm", "--time", "abc"] + tune_argv(env),
        r"argument --time: must be an integer >= 1"),
    Bad("tune slurm extra malformed", "tune", lambda env: ["--launcher", "slurm", "--slurm-extra", "=x"] +
        tune_argv(env), r"--slurm-extra '=x' must look like KEY=VALUE"),
    Bad("tune cpus without slurm", "tune", lambda env: ["--cpus-per-job", "4"] + tune_argv(env),
        r"--cpus-per-job is a SLURM option; add --launcher slurm"),
    Bad("tune odd overrides", "tune", lambda env: tune_argv(env, "SOLVER.EPOCHS"), r"odd number"),
    Bad("tune optuna missing", "tune", lambda env: no_module(env, "optuna", tune_argv(env)),
        r"needs optuna.*pip install -e \.\[tune\]"),
    # download (#21)
    Bad("download timeout 0", "download", lambda env: ["--timeout", "0", "--dest", str(env.tmp / "d")],
        r"argument --timeout: must be a number > 0"),
    Bad("download timeout nan", "download", lambda env: ["--timeout", "nan", "--dest", str(env.tmp / "d")],
        r"argument --timeout: must be a number > 0"),
    Bad("download timeout abc", "download", lambda env: ["--timeout", "abc", "--dest", str(env.tmp / "d")],
        r"argument --timeout: must be"),
    Bad("download unknown flag", "download", lambda env: ["--bogus"], r"unrecognized arguments"),
    Bad("download archive not a tar", "download",
        lambda env: ["--archive", env.file("fake.tar", "not a tar\n"), "--dest", str(env.tmp / "d")],
        r"fake.tar"),
    # benchmark (#21: refused before anything is timed)
    _bench("steps 0", "--steps", "0", pattern=r"argument --steps: must be an integer >= 1"),
    _bench("repeats 0", "--repeats", "0", pattern=r"argument --repeats: must be"),
    _bench("threads 0", "--threads", "0", pattern=r"argument --threads: must be"),
    _bench("warmup -1", "--warmup", "-1", pattern=r"argument --warmup: must be"),
    _bench("pipeline seconds -1", "--pipeline-seconds", "-1",
           pattern=r"argument --pipeline-seconds: must be a number > 0"),
    _bench("batch -5", "--batch-size", "-5", pattern=r"argument --batch-size: must be"),
    _bench("one class", "--num-classes", "1", pattern=r"argument --num-classes: must be"),
    _bench("device tpu", "--device", "tpu", pattern=r"argument --device: must be auto"),
    _bench("unknown distiller", "--matrix", "FOO/fp32", pattern=r"unknown distiller 'FOO'"),
    _bench("bad case", "--matrix", "SLD/fp8", pattern=r"bad case 'SLD/fp8'"),
    _bench("fp16 on cpu", "--device", "cpu", "--distiller", "KD", "--precision", "fp16", pattern=r"fp16 needs CUDA"),
    _bench("steps abc", "--steps", "abc", pattern=r"argument --steps: must be"),
    # demo (#21: refused before the first run)
    Bad("demo epochs scale 0", "demo", lambda env: ["--epochs-scale", "0"], r"argument --epochs-scale: must be"),
    Bad("demo epochs scale -1", "demo", lambda env: ["--epochs-scale", "-1"], r"argument --epochs-scale: must be"),
    Bad("demo epochs scale nan", "demo", lambda env: ["--epochs-scale", "nan"], r"argument --epochs-scale: must be"),
    Bad("demo epochs scale abc", "demo", lambda env: ["--epochs-scale", "abc"], r"argument --epochs-scale: must be"),
    Bad("demo seed -1", "demo", lambda env: ["--seed", "-1"], r"argument --seed: must be an integer >= 0"),
    Bad("demo odd overrides", "demo", lambda env: ["--output", str(env.tmp / "demo"), "SOLVER.LR"], r"odd number"),
    Bad("demo unknown key", "demo", lambda env: ["--output", str(env.tmp / "demo"), "SOLVER.LRR", "1"],
        r"unknown config key 'SOLVER.LRR'"),
    Bad("demo bad value", "demo", lambda env: ["--output", str(env.tmp / "demo"), "SOLVER.LR", "abc"],
        r"config key 'SOLVER.LR' expects a float"),
    Bad("demo output a file", "demo", lambda env: ["--output", __file__], r"argument --output: .* is a file"),
    Bad("demo output under a file", "demo", lambda env: ["--output", __file__ + "/demo"],
        r"argument --output: .* is under a file"),
    # make_image_folder (#21: nothing half-written)
    _images("classes 0", "--classes", "0", pattern=r"argument --classes: must be an integer >= 2"),
    _images("classes -3", "--classes", "-3", pattern=r"argument --classes: must be"),
    _images("size 0", "--size", "0", pattern=r"argument --size: must be"),
    _images("size huge", "--size", "100000", pattern=r"argument --size: must be an integer >= 8 and <= 1024"),
    _images("val 0", "--val", "0", pattern=r"argument --val: must be"),
    _images("train -1", "--train", "-1", pattern=r"argument --train: must be"),
    _images("train abc", "--train", "abc", pattern=r"argument --train: must be"),
    Bad("images under a file", "make_image_folder", lambda env: [__file__ + "/if"], r"is under a file"),
    _images("too few for the classes", "--classes", "10", "--train", "5",
            pattern=r"--train 5 gives some of the 10 classes no image"),
    _images("too few val", "--classes", "10", "--val", "3", pattern=r"--val 3 gives some of the 10 classes"),
    Bad("images dest exists", "make_image_folder", lambda env: [str(env.other)], r"already exists"),
    Bad("images no dest", "make_image_folder", lambda env: [], r"the following arguments are required: dest"),
]


def image_folder(env, classes=2, empty=None):
    """A tiny image folder under inputs/ (PNG files), with an optional empty class folder."""
    from PIL import Image

    root = env.tmp / "inputs" / f"if{classes}{empty or ''}"
    for split in ("train", "val"):
        for k in range(classes):
            d = root / split / f"class_{k}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(2):
                Image.new("RGB", (32, 32), (40 * k, 10 * i, 0)).save(d / f"{i}.png")
        if empty:
            (root / split / empty).mkdir(exist_ok=True)
    return str(root)


def copy_student_only(env):
    """A folder holding a run's student_best but no config.yaml."""
    d = env.tmp / "inputs" / "student_only"
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(os.path.join(env.done, "student_best"), d / "student_best")
    return str(d)


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
    code, out, err = call("train", ["--resume"] + argv + ["SOLVER.LR", "0.005"])
    assert code == 0, err
    d = run_dir(env.tmp, "nan2")
    assert [r["epoch"] for r in metrics(env.tmp, "nan2")] == [1, 2, 3]
    assert [r["lr"] for r in metrics(env.tmp, "nan2")][1:] == [0.005, 0.005]
    history = [json.loads(line) for line in open(os.path.join(d, "config_history.jsonl"))]
    assert history == [{"from_epoch": 2, "changed": {"SOLVER.LR": [0.05, 0.005]}}]
    assert "LR: 0.005" in open(os.path.join(d, "config.yaml")).read()
    assert "SOLVER.LR 0.05 -> 0.005" in out  # #21 item 3: every accepted change is named
    # the non-finite loss allowed one resume with a changed LR, not another one
    code, _, err = call("train", ["--resume"] + argv[:-2] + ["SOLVER.EPOCHS", "4", "SOLVER.LR", "0.001"])
    check_one_line(code, err, r"SOLVER.LR may change only after a non-finite loss")


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
    check_one_line(code, err,
                   r"interrupted' is (truncated or corrupt|a text file).*delete it to resume from the last epoch end")
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
        if os.path.exists(os.path.join(d, f)):  # .lock is removed by the writer that ends
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


def saved(d):
    """{name: bytes} of a run folder's checkpoints (to prove none was deleted or changed)."""
    return {f: open(os.path.join(d, f), "rb").read() for f in runfolder.saved_files(d)}


def fault_missing_latest(env):
    """#21 item 1: 'latest' deleted from a finished run; --resume rebuilds it from the newest
    whole epoch_N (with a message) and deletes nothing; with a later epoch recorded it is
    refused in one line naming epoch_N, and a start without --resume is refused."""
    argv = env.argv("nolatest", "SOLVER.EPOCHS", "4", "LOG.SAVE_CHECKPOINT_FREQ", "2")
    assert call("train", argv)[0] == 0
    d = run_dir(env.tmp, "nolatest")
    os.unlink(os.path.join(d, "latest"))
    before = saved(d)
    code, out, err = call("train", ["--resume"] + argv)
    assert code == 0, err
    assert "rebuilt it from epoch_4" in out and "starting it from epoch 1" not in out
    assert "has finished all 4 epochs (SOLVER.EPOCHS); nothing to train" in out  # not "at epoch 5" (item 12)
    after = saved(d)
    assert {f: after[f] for f in before} == before  # epoch_2, epoch_4, student_* untouched
    assert after["latest"] == before["epoch_4"]
    assert [r["epoch"] for r in metrics(env.tmp, "nolatest")] == [1, 2, 3, 4]
    # latest and epoch_4 gone: epoch 4 is recorded, so rebuilding from epoch_2 is refused
    for f in ("latest", "epoch_4"):
        os.unlink(os.path.join(d, f))
    before = snapshot(d)
    for flags in (["--resume"], []):
        code, _, err = call("train", flags + argv)
        line = check_one_line(code, err, r"newest whole epoch checkpoint is epoch_2, but epoch 4 was recorded; "
                                         r"nothing was changed or deleted; .*cp '" if flags else
                              r"already used by another run; pass --resume")
        assert {k: v for k, v in snapshot(d).items() if not k.endswith(runfolder.LOCK)} == \
            {k: v for k, v in before.items() if not k.endswith(runfolder.LOCK)}
        if flags:
            advice = line
    src, dst = shlex.split(advice.split("copy it: cp ")[1].split(", then")[0])
    shutil.copyfile(src, dst)  # the advice, followed
    assert call("train", ["--resume"] + argv)[0] == 0
    assert [r["epoch"] for r in metrics(env.tmp, "nolatest")] == [1, 2, 3, 4]
    assert load_checkpoint(os.path.join(d, "latest"))["epoch"] == 4


def fault_corrupt_latest(env):
    """#21 item 1: a corrupt 'latest': one line quoting the reason whole and naming epoch_N
    as the replacement; nothing changed; the advice, followed, finishes the run."""
    argv = env.argv("badlatest", "SOLVER.EPOCHS", "2", "LOG.SAVE_CHECKPOINT_FREQ", "1")
    assert call("train", argv)[0] == 0
    d = run_dir(env.tmp, "badlatest")
    with open(os.path.join(d, "latest"), "wb") as f:
        f.write(b"PK\x03\x04" + bytes(range(256)) * 3)
    try:
        load_checkpoint(os.path.join(d, "latest"))
    except Exception as e:  # noqa: BLE001
        reason = e.cause
    before = snapshot(d)
    resume = ["--resume"] + argv[:-4] + ["SOLVER.EPOCHS", "3", "LOG.SAVE_CHECKPOINT_FREQ", "1"]
    code, _, err = call("train", resume)
    line = check_one_line(code, err, r"latest' cannot be read \(.*\); nothing was changed or deleted; replace it "
                                     r"with the newest whole epoch checkpoint, epoch_2: cp ")
    assert f"({reason})" in line
    assert {k: v for k, v in snapshot(d).items() if not k.endswith(runfolder.LOCK)} == \
        {k: v for k, v in before.items() if not k.endswith(runfolder.LOCK)}
    src, dst = shlex.split(line.split(": cp ")[1].split(", then")[0])
    shutil.copyfile(src, dst)
    assert call("train", resume)[0] == 0
    assert [r["epoch"] for r in metrics(env.tmp, "badlatest")] == [1, 2, 3]


def fault_lock_file_deleted(env):
    """#21 item 4: deleting .lock while a run holds the folder does not let a second writer in."""
    argv = env.argv("rmlock", "SOLVER.EPOCHS", "1")
    assert call("train", argv)[0] == 0
    d = run_dir(env.tmp, "rmlock")
    held = runfolder.RunLock(d).acquire()  # the running writer
    try:
        os.unlink(os.path.join(d, runfolder.LOCK))
        for flags in (["--resume"], ["--overwrite"], []):
            code, _, err = call("train", flags + argv[:-2] + ["SOLVER.EPOCHS", "2"])
            check_one_line(code, err, rf"run folder '{re.escape(d)}' is in use by ")
    finally:
        held.release()
    assert call("train", ["--resume"] + argv[:-2] + ["SOLVER.EPOCHS", "2"])[0] == 0
    assert [r["epoch"] for r in metrics(env.tmp, "rmlock")] == [1, 2]


def fault_signal_during_resume_startup(env):
    """#21 item 5: SIGTERM while --resume starts: the advice is the command that continues
    the run (with --resume), and following it finishes the run."""
    from mdistiller.engine import build

    argv = env.argv("resstart", "SOLVER.EPOCHS", "1")
    assert call("train", argv)[0] == 0
    resume = ["--resume"] + argv[:-2] + ["SOLVER.EPOCHS", "2"]
    with pytest.MonkeyPatch.context() as mp:
        def interrupted(*a, **k):
            os.kill(os.getpid(), signal.SIGTERM)
            raise AssertionError("SIGTERM was not turned into a clean stop")

        mp.setattr(build, "build_run", interrupted)
        code, _, err = call("train", resume)
    line = check_one_line(code, err, r"interrupted during start-up.*continue with: .*--resume", 130)
    assert "--overwrite" not in line
    code, _, err = call("train", follow(line))
    assert code == 0, err
    assert [r["epoch"] for r in metrics(env.tmp, "resstart")] == [1, 2]


def fault_teacher_replaced(env):
    """#21 item 6: the teacher file replaced at the same path: --resume is refused in one
    line; --new-teacher accepts it and config_history.jsonl records both SHA-256."""
    teacher = env.tmp / "inputs" / "swapped_teacher.pth"
    teacher.parent.mkdir(exist_ok=True)
    make_teacher(teacher, seed=0)
    argv = tiny_argv(env.tmp, "teach", *FAST, "DISTILLER.TYPE", "KD", "SOLVER.EPOCHS", "1", teacher=teacher)
    assert call("train", argv)[0] == 0
    d = run_dir(env.tmp, "teach")
    recorded = json.load(open(os.path.join(d, "teacher.json")))
    make_teacher(teacher, seed=1)  # another teacher, same path
    before = snapshot(d)
    resume = ["--resume"] + argv + ["SOLVER.EPOCHS", "2"]
    code, _, err = call("train", resume)
    check_one_line(code, err, r"teacher checkpoint .*swapped_teacher.pth' is not the file this run started with "
                              r".*--new-teacher")
    assert {k: v for k, v in snapshot(d).items() if not k.endswith(runfolder.LOCK)} == \
        {k: v for k, v in before.items() if not k.endswith(runfolder.LOCK)}
    code, out, err = call("train", ["--new-teacher"] + resume)
    assert code == 0, err
    assert "teacher_sha256" in out
    history = [json.loads(line) for line in open(os.path.join(d, "config_history.jsonl"))]
    from mdistiller.engine.checkpoint import file_sha256

    assert history == [{"from_epoch": 2, "changed": {"SOLVER.EPOCHS": [1, 2],
                                                     "teacher_sha256": [recorded["sha256"], file_sha256(teacher)]}}]
    assert [r["epoch"] for r in metrics(env.tmp, "teach")] == [1, 2]


def fault_workers_die_with_parent(env):
    """#21 item 2: the run's loader workers die when the training process is SIGKILLed."""
    import subprocess
    import time

    from tests.conftest import REPO_ROOT

    script = (
        "import sys, time\n"
        "from mdistiller.engine.cfg import load_cfg\n"
        "from mdistiller.dataset import get_dataset\n"
        "from mdistiller.dataset.loader import build_loaders\n"
        "cfg = load_cfg(None, ['DATASET.TYPE', 'synthetic', 'DATASET.NUM_WORKERS', '1', 'SOLVER.BATCH_SIZE', '8'])\n"
        "train, _ = build_loaders(cfg, get_dataset(cfg))\n"
        "it = iter(train)\n"
        "next(it)\n"
        "print(' '.join(str(w.pid) for w in it._workers), flush=True)\n"
        "time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO_ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert pids, proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()

    def alive(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(")")[-1].split()[0] not in ("Z", "X")
        except OSError:
            return False

    # at once: torch's own watchdog would notice only after its 5 s poll, and a busy worker never
    t0 = time.time()
    while any(alive(p) for p in pids) and time.time() - t0 < 3:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids), f"loader workers {pids} outlived their parent"


def fault_summarize_infinity(env):
    """#21 item 11: a run whose metrics.jsonl holds Infinity: the table of the good runs."""
    project = env.tmp / "sinf"
    for name, acc in [("good", 42.0), ("inf", float("inf"))]:
        (project / name).mkdir(parents=True)
        (project / name / "config.yaml").write_text("SOLVER:\n  EPOCHS: 1\n")
        (project / name / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "test_acc": acc}) + "\n")
    code, out, err = call("summarize", [str(project)])
    assert code == 0, err
    assert "42.00" in out and "Traceback" not in err


def fault_file_modes_follow_umask(env):
    """#21 item 13: checkpoints, config.yaml and metrics.jsonl get the umask's mode (not
    mkstemp's 0600); a missing provenance.json is recreated on resume."""
    old = os.umask(0o022)
    try:
        argv = env.argv("modes", "SOLVER.EPOCHS", "1")
        assert call("train", argv)[0] == 0
        d = run_dir(env.tmp, "modes")
        for f in ("latest", "student_best", "config.yaml", "metrics.jsonl"):
            assert os.stat(os.path.join(d, f)).st_mode & 0o777 == 0o644, f
        os.unlink(os.path.join(d, "provenance.json"))
        assert call("train", ["--resume"] + argv[:-2] + ["SOLVER.EPOCHS", "2"])[0] == 0
        assert os.path.isfile(os.path.join(d, "provenance.json"))
    finally:
        os.umask(old)


FAULTS = [fault_nan_before_first_checkpoint, fault_nan_then_lower_lr, fault_second_signal,
          fault_signal_during_startup, fault_disk_full_first_commit, fault_disk_full_inside_torch_save,
          fault_stale_lock, fault_stale_interrupted, fault_corrupt_interrupted, fault_overwrite_a_damaged_run,
          fault_leftover_tmp, fault_torn_metrics, fault_resume_flag_after_pairs, fault_resume_unmarked_run_folder,
          fault_summarize_damaged_runs, fault_missing_latest, fault_corrupt_latest, fault_lock_file_deleted,
          fault_signal_during_resume_startup, fault_teacher_replaced, fault_workers_die_with_parent,
          fault_summarize_infinity, fault_file_modes_follow_umask]


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
