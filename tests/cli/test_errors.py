"""Every bad input gets one line on stderr naming the problem and the fix, a non-zero
exit and no traceback; finished work is never lost (SIGTERM, NaN, disk full, reuse)."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from mdistiller.cli.eval import main as eval_main
from mdistiller.cli.train import main as train_main
from mdistiller.runs.checkpoint import load_checkpoint

from tests.conftest import REPO_ROOT
from tests.engine.helpers import make_teacher, metrics, run_dir, tiny_argv


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    path = tmp_path_factory.mktemp("t") / "teacher.pth"
    make_teacher(path)
    return path


def one_line_error(capsys, code, pattern):
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("warning:")]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    import re

    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def corrupt_files(tmp_path):
    files = {}
    files["truncated"] = tmp_path / "trunc.pth"
    make_teacher(files["truncated"])
    data = files["truncated"].read_bytes()
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["garbage"] = tmp_path / "garbage.pth"
    files["garbage"].write_bytes(b"this is not a checkpoint" * 10)
    files["empty"] = tmp_path / "empty.pth"
    files["empty"].write_bytes(b"")
    files["arch"] = tmp_path / "arch.pth"
    make_teacher(files["arch"], name="resnet20")
    files["classes"] = tmp_path / "classes.pth"
    make_teacher(files["classes"], num_classes=100)
    return files


BAD_TRAIN_INPUTS = [
    # (name, argv builder(tmp_path, teacher, files) -> argv, expected message pattern)
    ("cfg missing", lambda t, te, f: ["--cfg", str(t / "nope.yaml")], r"config file .*nope.yaml' does not exist"),
    ("odd overrides", lambda t, te, f: tiny_argv(t, "x") + ["SOLVER.LR"], r"KEY VALUE pairs, got an odd number"),
    ("unknown key", lambda t, te, f: tiny_argv(t, "x", "SOLVER.EPOCH", "3"), r"did you mean 'SOLVER.EPOCHS'"),
    ("wrong type", lambda t, te, f: tiny_argv(t, "x", "SOLVER.BATCH_SIZE", "big"), r"'SOLVER.BATCH_SIZE' expects a int"),
    ("unknown student", lambda t, te, f: tiny_argv(t, "x", "DISTILLER.STUDENT", "resnet9"),
     r"unknown CIFAR model 'resnet9'.*known CIFAR models: .*resnet8x4"),
    ("unknown teacher", lambda t, te, f: tiny_argv(t, "x", "DISTILLER.TYPE", "KD", "DISTILLER.TEACHER", "resnet99"),
     r"unknown CIFAR model 'resnet99'"),
    ("unknown distiller", lambda t, te, f: tiny_argv(t, "x", "DISTILLER.TYPE", "SLDD"),
     r"unknown distiller 'SLDD' \(did you mean 'SLD'\?\); known distillers: .*MLKD"),
    ("unknown dataset", lambda t, te, f: tiny_argv(t, "x", "DATASET.TYPE", "cifar10"), r"unknown dataset 'cifar10'.*cifar100"),
    ("teacher missing", lambda t, te, f: tiny_argv(t, "x", "DISTILLER.TYPE", "KD", teacher=t / "absent.pth"),
     r"teacher checkpoint .*absent.pth' not found; .*download_ckpts.py.*DISTILLER.TYPE NONE"),
    ("teacher truncated", lambda t, te, f: tiny_argv(t, "x", "DISTILLER.TYPE", "KD", teacher=f["truncated"]),
     r"truncated or corrupt"),
    ("teacher garbage", lambda t, te, f: tiny_argv(t, "x", "DISTILLER.TYPE", "KD", teacher=f["garbage"]),
     r"is a text file, not a checkpoint; give a checkpoint written by torch.save"),
    ("teacher empty", lambda t, te, f: tiny_argv(t, "x", "DISTILLER.TYPE", "KD", teacher=f["empty"]), r"is empty"),
    ("teacher other architecture", lambda t, te, f: tiny_argv(t, "x", "DISTILLER.TYPE", "KD", teacher=f["arch"]),
     r"does not fit model resnet8: unexpected keys: layer1.1"),
    ("teacher other classes", lambda t, te, f: tiny_argv(t, "x", "DISTILLER.TYPE", "KD", teacher=f["classes"]),
     r"is for 100 classes but resnet8 here has 10"),
    ("dataset folder missing", lambda t, te, f: tiny_argv(t, "x", "DATASET.TYPE", "fashion_mnist",
                                                           "DATASET.ROOT", str(t / "nodata")),
     r"Fashion-MNIST not found in DATASET.ROOT"),
    ("imagenet folder missing", lambda t, te, f: tiny_argv(t, "x", "DATASET.TYPE", "imagenet",
                                                            "DATASET.ROOT", str(t / "nodata")),
     r"ImageNet train split not found"),
    ("empty temperatures", lambda t, te, f: tiny_argv(t, "x", "SLD.TEMPERATURES", "[]"), r"non-empty list of positive"),
    ("negative temperature", lambda t, te, f: tiny_argv(t, "x", "SLD.TEMPERATURES", "[-1.0, 2.0]"),
     r"non-empty list of positive"),
    ("negative gamma", lambda t, te, f: tiny_argv(t, "x", "SLD.GAMMA", "-5"), r"SLD.GAMMA must be >= 0"),
    ("negative weight", lambda t, te, f: tiny_argv(t, "x", "SLD.KD_WEIGHT", "-1.0"), r"SLD.KD_WEIGHT must be a non-negative"),
    ("weight not a number", lambda t, te, f: tiny_argv(t, "x", "DKD.BETA", "lots"), r"'DKD.BETA' expects a float"),
    ("stages not increasing", lambda t, te, f: tiny_argv(t, "x", "SOLVER.LR_DECAY_STAGES", "[5, 3]"),
     r"LR_DECAY_STAGES must be strictly increasing"),
    ("resume without checkpoint", lambda t, te, f: ["--resume"] + tiny_argv(t, "never"),
     r"--resume: no checkpoint .* start without --resume"),
    ("fp16 on cpu", lambda t, te, f: tiny_argv(t, "x", "SOLVER.AMP", "fp16"), r"fp16 needs CUDA"),
]


@pytest.mark.parametrize("case", BAD_TRAIN_INPUTS, ids=[c[0] for c in BAD_TRAIN_INPUTS])
def test_bad_train_input_is_one_line(tmp_path, teacher, capsys, case):
    _, build, pattern = case
    files = corrupt_files(tmp_path) if "teacher" in case[0] else {}
    code = train_main(build(tmp_path, teacher, files))
    one_line_error(capsys, code, pattern)


def test_debug_shows_the_traceback(tmp_path):
    from mdistiller.utils.errors import ConfigError

    with pytest.raises(ConfigError):
        train_main(["--debug"] + tiny_argv(tmp_path, "x", "SOLVER.EPOCH", "3"))


def test_yaml_syntax_error_names_the_line(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("DISTILLER:\n  TYPE: KD\nSOLVER:\n  LR: [0.1\n")
    one_line_error(capsys, train_main(["--cfg", str(cfg)]), r"YAML syntax error in .*bad.yaml' at line \d+")


def test_gamma_at_least_epochs_is_a_one_line_warning(tmp_path, teacher, capsys):
    assert train_main(tiny_argv(tmp_path, "g", "DISTILLER.TYPE", "SLD", "SLD.GAMMA", "5", teacher=teacher)) == 0
    err = capsys.readouterr().err
    assert "warning: SLD.GAMMA = 5 >= SOLVER.EPOCHS = 1: the student swap loss" in err
    assert "Traceback" not in err and "ConfigWarning" not in err


def test_second_run_in_the_same_folder_is_refused(tmp_path, teacher, capsys):
    argv = tiny_argv(tmp_path, "same", "DISTILLER.TYPE", "KD", teacher=teacher)
    assert train_main(argv) == 0
    before = load_checkpoint(os.path.join(run_dir(tmp_path, "same"), "latest"))
    capsys.readouterr()
    one_line_error(capsys, train_main(argv), r"already used by another run; pass --resume .* --overwrite")
    after = load_checkpoint(os.path.join(run_dir(tmp_path, "same"), "latest"))
    assert all(torch.equal(before["model"][k], after["model"][k]) for k in before["model"])
    assert train_main(["--overwrite"] + argv) == 0
    assert len(metrics(tmp_path, "same")) == 1


def test_resume_with_a_different_config_names_the_keys(tmp_path, teacher, capsys):
    argv = tiny_argv(tmp_path, "r", "DISTILLER.TYPE", "KD", teacher=teacher)
    assert train_main(argv) == 0
    capsys.readouterr()
    code = train_main(["--resume"] + argv + ["KD.TEMPERATURE", "2.0", "SOLVER.MOMENTUM", "0.5"])
    one_line_error(capsys, code, r"different config \(differs in KD.TEMPERATURE, SOLVER.MOMENTUM\)")


def test_disk_full_during_training_keeps_the_previous_checkpoint(tmp_path, teacher, capsys, monkeypatch):
    from mdistiller.runs import checkpoint as ckpt_mod

    argv = tiny_argv(tmp_path, "full", "DISTILLER.TYPE", "KD", "SOLVER.EPOCHS", "2", teacher=teacher)
    real_save = ckpt_mod.torch.save
    def save(obj, f):
        if isinstance(obj, dict) and obj.get("epoch") == 2:
            f.write(b"partial")
            raise OSError(28, "No space left on device")
        return real_save(obj, f)

    monkeypatch.setattr(ckpt_mod.torch, "save", save)
    code = train_main(argv)
    line = one_line_error(capsys, code, r"could not save epoch 2 in .*full': no space left on device; "
                                        r"the run folder holds epoch 1, whole")
    assert "--resume" in line
    d = run_dir(tmp_path, "full")
    assert load_checkpoint(os.path.join(d, "latest"))["epoch"] == 1
    assert not [f for f in os.listdir(d) if f.endswith(".tmp")]


def test_eval_errors_are_one_line(tmp_path, capsys):
    one_line_error(capsys, eval_main(["-c", str(tmp_path), "-d", "synthetic"]), r"has no student_best checkpoint")
    one_line_error(capsys, eval_main(["-m", "resnet8", "-c", str(tmp_path / "x.pth"), "-d", "synthetic"]),
                   r"checkpoint .*x.pth' does not exist")
    make_teacher(tmp_path / "y.pth")
    one_line_error(capsys, eval_main(["-m", "resnet_nope", "-c", str(tmp_path / "y.pth"), "-d", "synthetic"]),
                   r"unknown CIFAR model 'resnet_nope'")


def _wait_for(path, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if os.path.exists(path):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.2)
    return False


def test_real_command_line_sigterm_then_resume(tmp_path, teacher):
    """Through the real tool: SIGTERM mid-training saves 'interrupted' and exits 130 with
    how to resume; --resume then finishes the run; a config error is one line."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", WANDB_MODE="offline")
    tool = os.path.join(REPO_ROOT, "tools", "train_ours.py")
    bad = subprocess.run([sys.executable, tool, "SOLVER.LRR", "1"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip() == \
        "error: unknown config key 'SOLVER.LRR'; did you mean 'SOLVER.LR'?"
    argv = tiny_argv(tmp_path, "sig", "DISTILLER.TYPE", "KD", "SOLVER.EPOCHS", "400",
                     "DATASET.SYNTHETIC_SIZE", "64", teacher=teacher)
    proc = subprocess.Popen([sys.executable, tool] + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    d = run_dir(tmp_path, "sig")
    try:
        assert _wait_for(os.path.join(d, "latest"), proc), proc.communicate()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "stopped by signal; saved" in err and "--resume" in err and "Traceback" not in err
    state = load_checkpoint(os.path.join(d, "interrupted"))
    done = load_checkpoint(os.path.join(d, "latest"))["epoch"]
    assert state["interrupted"]["epoch"] == done + 1
    resume = argv + ["SOLVER.EPOCHS", str(done + 1)]  # finish the interrupted epoch only
    assert train_main(["--resume"] + resume) == 0
    assert [r["epoch"] for r in metrics(tmp_path, "sig")] == list(range(1, done + 2))
    assert not os.path.exists(os.path.join(d, "interrupted"))
