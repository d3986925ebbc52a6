"""docs/models_and_data.md's worked example runs as written (its bash commands, in order,
from a folder where ``configs/`` is the repository's), on a tiny image folder and one short
epoch: the only additions are size and speed settings."""

import os
import re
import shlex

from mdistiller.cli import eval as eval_cli
from mdistiller.cli import make_image_folder, train
from mdistiller.config.load import load_cfg
from tests.conftest import REPO_ROOT

with open(os.path.join(REPO_ROOT, "docs", "models_and_data.md"), encoding="utf-8") as f:
    DOC = f.read()
COMMANDS = [shlex.split(code.strip()) for code in re.findall(r"```bash\n(.*?)```", DOC, re.S)]
TOOLS = {"tools/make_image_folder.py": make_image_folder.main, "tools/train_ours.py": train.main,
         "tools/eval.py": eval_cli.main}
# what the test adds to each tool's documented arguments (argparse and overrides: last wins)
SMALL = {
    "tools/make_image_folder.py": ["--classes", "3", "--train", "24", "--val", "6", "--size", "40"],
    "tools/train_ours.py": ["SOLVER.EPOCHS", "1", "SOLVER.BATCH_SIZE", "8", "DATASET.TEST.BATCH_SIZE", "8",
                            "DATASET.NUM_WORKERS", "0", "SOLVER.DEVICE", "cpu", "LOG.WANDB", "False",
                            "LOG.PROGRESS", "False"],
    "tools/eval.py": ["--device", "cpu", "--workers", "0"],
}


def test_the_worked_example_runs_as_written(tmp_path, monkeypatch, capsys):
    assert [words[:2] for words in COMMANDS] == [["python3", t] for t in
                                                 ("tools/make_image_folder.py", "tools/train_ours.py",
                                                  "tools/train_ours.py", "tools/eval.py")]
    os.symlink(os.path.join(REPO_ROOT, "configs"), tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    for words in COMMANDS:
        assert TOOLS[words[1]](words[2:] + SMALL[words[1]]) == 0, words
    out = capsys.readouterr().out
    best = os.path.join("output", "imagefolder", "kd_resnet8x4", "student_best")  # eval names the file (#23)
    assert f"resnet8x4 {best} on imagefolder: top-1" in out
    run = load_cfg(os.path.join("output", "imagefolder", "kd_resnet8x4", "config.yaml"), [])
    assert (run.DISTILLER.TEACHER, run.DISTILLER.STUDENT, run.DISTILLER.TEACHER_INPUT_SIZE) == \
        ("timm:resnet10t", "resnet8x4", 64)
    assert run.DATASET.IMAGE_SIZE == 32 and os.path.isfile(os.path.join("output", "imagefolder", "timm_teacher",
                                                                          "student_best"))
