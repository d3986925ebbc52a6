"""The composition root (mdistiller.engine.run.train) and the package's messages:
``logging`` on stdout at LOG.LEVEL, ``--quiet`` keeps errors only, errors stay one
``error:`` line on stderr with exit code 2."""

import os

from mdistiller.cli.train import main as cli_main
from mdistiller.engine.run import train
from tests.engine.helpers import metrics, run_dir, tiny_argv


def test_train_prints_epoch_lines_and_levels_or_quiet_silence_them(tmp_path, capsys):
    assert train(None, tiny_argv(tmp_path, "loud", "DISTILLER.TYPE", "NONE")) == 0
    out, err = capsys.readouterr()
    assert "epoch 1: train_acc" in out and "best test top-1" in out and err == ""
    assert train(None, tiny_argv(tmp_path, "warn", "DISTILLER.TYPE", "NONE", "LOG.LEVEL", "WARNING")) == 0
    assert capsys.readouterr().out == ""
    assert cli_main(["--quiet"] + tiny_argv(tmp_path, "quiet", "DISTILLER.TYPE", "NONE")) == 0
    assert capsys.readouterr().out == ""
    for name in ("loud", "warn", "quiet"):  # silence changes nothing of the run
        assert [r["epoch"] for r in metrics(tmp_path, name)] == [1]
    assert "epoch: 1" in open(os.path.join(run_dir(tmp_path, "quiet"), "worklog.txt")).read()


def test_errors_stay_one_line_on_stderr_with_quiet(tmp_path, capsys):
    assert cli_main(["--quiet"] + tiny_argv(tmp_path, "bad", "LOG.LEVEL", "LOUD")) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("error: LOG.LEVEL 'LOUD' is not a level; set one of DEBUG, INFO, WARNING, ERROR")
    assert not os.path.exists(run_dir(tmp_path, "bad"))


def test_ls_flags_are_part_of_the_run_and_its_resume(tmp_path, capsys):
    """The LS flags act like the config they produce: config.yaml holds their values, a
    --resume must repeat them (else the config differs), and the advice to continue has them."""
    from types import SimpleNamespace

    import yaml

    from mdistiller.engine.run import command
    from tests.engine.helpers import make_teacher

    make_teacher(tmp_path / "t.pth")
    flags = ["--logit-stand", "--base-temp", "3", "--kd-weight", "5"]
    argv = tiny_argv(tmp_path, "ls", "DISTILLER.TYPE", "KD", teacher=tmp_path / "t.pth")
    assert cli_main(flags + argv) == 0
    saved = yaml.safe_load(open(os.path.join(run_dir(tmp_path, "ls"), "config.yaml")))
    assert saved["DISTILLER"]["LOGIT_STAND"] is True
    assert (saved["KD"]["TEMPERATURE"], saved["KD"]["LOSS"]["KD_WEIGHT"]) == (3.0, 5.0)
    capsys.readouterr()
    assert cli_main(["--resume"] + argv + ["SOLVER.EPOCHS", "2"]) == 2
    assert "DISTILLER.LOGIT_STAND" in capsys.readouterr().err
    assert cli_main(["--resume"] + flags + argv + ["SOLVER.EPOCHS", "2"]) == 0
    assert [r["epoch"] for r in metrics(tmp_path, "ls")] == [1, 2]
    args = SimpleNamespace(cfg="c.yaml", opts=["SOLVER.LR", "0.1"],
                           ls_flags={"logit_stand": True, "base_temp": 3.0, "kd_weight": None})
    assert command(args) == "python3 tools/train_ours.py --cfg c.yaml --resume --logit-stand --base-temp 3 SOLVER.LR 0.1"
