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
