"""docs/tuning.md's worked example runs as written (its first bash block, in order, from a
folder where ``configs/`` is the repository's) on tiny synthetic data: the only additions
are size and speed settings (overrides, and ``--trials 3 --workers 1`` for tune.py)."""

import os
import re
import shlex

import pytest

from mdistiller.cli import summarize, sweep, train, tune
from mdistiller.config.load import load_cfg
from tests.conftest import REPO_ROOT

pytest.importorskip("optuna")

with open(os.path.join(REPO_ROOT, "docs", "tuning.md"), encoding="utf-8") as f:
    DOC = f.read()
EXAMPLE = DOC.split("## Worked example", 1)[1]
COMMANDS = [shlex.split(line) for line in re.findall(r"```bash\n(.*?)```", EXAMPLE, re.S)[0].strip().splitlines()]
TOOLS = {"tools/train_ours.py": train.main, "tools/tune.py": tune.main, "tools/sweep.py": sweep.main,
         "tools/summarize.py": summarize.main}
SMALL = ["DATASET.TYPE", "synthetic", "DATASET.SYNTHETIC_SIZE", "48", "DATASET.SYNTHETIC_CLASSES", "4",
         "DATASET.SUBSET", "1.0", "DATASET.HOLDOUT", "0.25", "DATASET.VAL_SUBSET", "1.0", "DATASET.NUM_WORKERS", "0",
         "DATASET.TEST.BATCH_SIZE", "16", "SOLVER.BATCH_SIZE", "12", "SOLVER.EPOCHS", "2", "SOLVER.DEVICE", "cpu",
         "LOG.PROGRESS", "False", "LOG.TENSORBOARD", "False"]


def with_small(words):
    """The documented arguments with the test's settings: tune.py's options before its
    overrides (argparse: the last one wins), overrides appended (the last one wins)."""
    args = words[2:]
    if words[1] == "tools/summarize.py":
        return args
    if words[1] == "tools/tune.py":
        first = next(i for i, a in enumerate(args) if re.fullmatch(r"[A-Z_]+(\.[A-Z_0-9]+)+", a))
        args = args[:first] + ["--trials", "3", "--workers", "1"] + args[first:]
    return args + SMALL


def test_the_worked_example_runs_as_written(tmp_path, monkeypatch, capsys):
    assert [w[1] for w in COMMANDS] == ["tools/train_ours.py", "tools/tune.py", "tools/sweep.py", "tools/sweep.py",
                                        "tools/summarize.py"]
    os.symlink(os.path.join(REPO_ROOT, "configs"), tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    for words in COMMANDS:
        assert TOOLS[words[1]](with_small(words)) == 0, words
    out = capsys.readouterr().out
    study = os.path.join("output", "fashion_mnist_demo", "sld_tune")
    assert sorted(f for f in os.listdir(study) if f.startswith("trial_")) == ["trial_0000", "trial_0001", "trial_0002"]
    best = load_cfg(os.path.join(study, "best.yaml"))
    assert best.DISTILLER.TYPE == "SLD" and best.DATASET.HOLDOUT == 0.25
    runs = sorted(os.listdir(os.path.join("output", "sld_tuned")))
    assert runs == ["sld_seed1", "sld_seed2", "sld_seed3", "sld_tune_best_seed1", "sld_tune_best_seed2",
                    "sld_tune_best_seed3"]
    tuned = load_cfg(os.path.join("output", "sld_tuned", "sld_tune_best_seed1", "config.yaml"))
    assert (tuned.SLD.GAMMA, list(tuned.SLD.TEMPERATURES)) == (best.SLD.GAMMA, list(best.SLD.TEMPERATURES))
    # the baseline's label names the keys that differ between the two groups
    differ = [label for label, same in (("SLD.GAMMA=30", best.SLD.GAMMA == 30),
                                        ("SLD.TEMPERATURES=[1,2,3,4,5,6]",
                                         list(best.SLD.TEMPERATURES) == [1, 2, 3, 4, 5, 6])) if not same]
    if differ:  # else one group: nothing to compare
        assert f"the baseline's ({', '.join(differ)})" in out and "Welch's t-test" in out
