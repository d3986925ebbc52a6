"""Hyper-parameter search on the held-out split (Optuna) and cluster launch (submitit).

* :mod:`.space` -- ``--space KEY=SPEC`` parsed, checked against the config, sampled.
* :mod:`.pruning` -- the ``TUNE_PRUNING`` engine hook: each epoch's ``val_acc`` to the trial.
* :mod:`.study` -- the study (storage, checks), a worker's loop of trials, the report.
* :mod:`.launch` -- the job objects of ``tune.py`` and ``sweep.py`` and their executors
  (local processes, submitit's local executor, SLURM).

Optuna and submitit are optional (``pip install -e .[tune]``, ``.[slurm]``); nothing here
imports them before it needs them (:func:`require`).
"""

import importlib

from ..utils.errors import ConfigError

EXTRAS = {"optuna": "tune", "submitit": "slurm"}


def require(module, tool="tune.py"):
    """Import ``module`` (optuna or submitit) or raise a one-line ConfigError naming the
    extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = EXTRAS[module]
        raise ConfigError(f"{tool} needs {module}, which is not installed; pip install -e .[{extra}] "
                          f"(or pip install {module})") from None
