"""The SLURM executor gets the command's options (checked on a machine without SLURM through
a stand-in ``srun``): partition, GPUs, CPUs, time, array parallelism, extra sbatch parameters,
the USR2 signal of submitit's requeue protocol, and its logs in the given folder."""

import os

import pytest

from mdistiller.tune.launch import SlurmOptions, executor
from mdistiller.utils.errors import ConfigError

pytest.importorskip("submitit")


def test_slurm_executor_options(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    folder = tmp_path / "study" / "jobs"
    ex = executor("slurm", str(folder), SlurmOptions("gpu", 1, 8, 240, (("account", "me"),), 16))
    script = ex._executor._make_submission_file_text("python3 -m job", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--time=240", "--account=me",
                 "--signal=USR2@", f"--output={folder}/%j_0_log.out", "--job-name=study"):
        assert line in script, line
    assert ex._executor.parameters["array_parallelism"] == 16


def test_slurm_without_slurm_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun here
    with pytest.raises(ConfigError, match="--launcher slurm: .*use --launcher submitit-local"):
        executor("slurm", str(tmp_path / "jobs"), SlurmOptions())
