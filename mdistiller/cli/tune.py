"""Search hyper-parameters on the held-out split with Optuna, on this machine or a cluster.

    python3 tools/tune.py --cfg configs/fashion_mnist/sld.yaml --space SLD.GAMMA=int:0:40 \\
        --space "SLD.TEMPERATURES=choice:[1,2,3,4,5,6];[2,3,4];[4]" --trials 20 [--study NAME] \\
        [--storage URL] [--workers K] [--prune median|none] [--launcher local|submitit-local|slurm]
        [--report] [KEY VALUE ...]

``--space KEY=SPEC`` (repeatable): ``int:LOW:HIGH``, ``float:LOW:HIGH``, ``float:LOW:HIGH:log``
or ``choice:V1;V2;...`` (config values; lists are stored in the study as text). The Optuna
parameters are the config keys, so the best parameters read as ``KEY VALUE`` overrides.
The objective is a trial's best holdout top-1 (``val_acc``): the config needs
``DATASET.HOLDOUT`` > 0. Each trial is a run folder
``<LOG.PREFIX>/<PROJECT>/<study>/trial_NNNN``; ``--prune median`` (default) stops trials
whose ``val_acc`` falls below the median of the others' at the same epoch.

``--trials N`` is the study's total of complete or pruned trials over all workers and reruns
(failed ones do not count): rerunning the command continues the study up to N. The study
lives in ``--storage`` (default ``sqlite:///<study folder>/study.db``; PostgreSQL or MySQL
URLs for many machines), so several ``tune.py`` processes, ``--workers K`` local processes
(the cores split between them) or K SLURM jobs (``--launcher slurm``) share its trials.
At the end, and alone with ``--report``: the table of trials, the best parameters and
``<study folder>/best.yaml``, a config that trains the winner with ``train_ours.py``.
Needs optuna (``pip install -e .[tune]``), and submitit for ``--launcher`` other than
local (``pip install -e .[slurm]``).
"""

import argparse
import logging
import os
import sys
import warnings

from ..config.load import ConfigWarning, load_cfg
from ..tune import launch, require
from ..tune.launch import TuneJob
from ..tune.study import open_study, plan, report, run_worker, storage_of
from ..utils.errors import ConfigError
from ..utils.threads import choose_threads, usable_cpus
from .common import ArgumentParser, add_debug_flag, number, run_tool
from .launch_options import add_launcher_args, slurm_options
from .sweep import safe_name

log = logging.getLogger("mdistiller.tune")


def parse_args(argv=None):
    summary, details = __doc__.split("\n\n", 1)
    p = ArgumentParser(prog="tune.py", description=summary, epilog=details,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", required=True, help="base config file (with DATASET.HOLDOUT > 0)")
    p.add_argument("--space", action="append", default=[], metavar="KEY=SPEC",
                   help="a searched key: int:LOW:HIGH, float:LOW:HIGH[:log], choice:V1;V2 (repeatable)")
    p.add_argument("--trials", type=number(int, low=1), default=None,
                   help="complete or pruned trials of the study, in total (required unless --report)")
    p.add_argument("--study", default=None, help="study name and folder (default: the config's NAME or TAG + _tune)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: sqlite:///<study folder>/study.db)")
    p.add_argument("--workers", type=number(int, low=1, high=1024), default=1,
                   help="worker processes (local: on this machine, cores split; slurm: jobs)")
    p.add_argument("--prune", choices=("median", "none"), default="median", help="pruner (default: median)")
    p.add_argument("--report", action="store_true", help="print the study's table and write best.yaml; run nothing")
    add_launcher_args(p)
    add_debug_flag(p)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides of every trial")
    return p.parse_args(argv)


def default_study(cfg):
    return safe_name(cfg.EXPERIMENT.NAME or cfg.EXPERIMENT.TAG) + "_tune"


def tune(args):
    require("optuna")
    if args.trials is None:
        if not args.report:
            raise ConfigError("--trials is required (the study's total of trials); or pass --report alone")
        args.trials = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConfigWarning)
        spec = plan(args.cfg, args.space, args.trials, args.study or default_study, args.storage, args.prune,
                    args.opts, quiet=args.quiet, debug=args.debug)
    for message in dict.fromkeys(str(w.message) for w in caught):
        print(f"warning: {message}", file=sys.stderr)
    options = slurm_options(args, cpus_default=load_cfg(spec.cfg, spec.opts).DATASET.NUM_WORKERS + 1)
    if args.launcher != "local":
        require("submitit", f"--launcher {args.launcher}")
    if args.report:
        if not os.path.isdir(spec.study_dir) and args.storage is None:
            raise ConfigError(f"no study folder '{spec.study_dir}'; run tune.py with --trials first (or check --study)")
        spec.trials = spec.trials or _stored_trials(spec)
        report(spec)
        return 0
    if args.launcher == "slurm" and args.storage is None and args.workers > 1:
        print("warning: SLURM workers on a SQLite study (the default --storage) need a file system with working "
              "locks; on many nodes use a PostgreSQL or MySQL --storage URL (see docs/tuning.md)", file=sys.stderr)
    if args.storage is not None:
        storage_of(spec)  # a bad URL or an unreachable server: before anything is created
    elif not os.path.isfile(os.path.join(spec.study_dir, "study.db")) and os.path.isdir(spec.study_dir) and \
            any(f.startswith("trial_") for f in os.listdir(spec.study_dir)):
        raise ConfigError(f"'{spec.study_dir}' holds trial folders but no study.db (deleted?); its trials cannot be "
                          f"continued: choose another --study, or move the folder away")
    os.makedirs(spec.study_dir, exist_ok=True)
    study = open_study(spec, create=True)
    study.set_user_attr("trials", spec.trials)
    code = 0
    if args.launcher == "local" and args.workers == 1:
        code = run_worker(spec)
    elif args.launcher == "local":
        threads = choose_threads(usable_cpus(), None, args.workers)
        log.info(f"{args.workers} workers, {threads} thread(s) each; logs in {spec.study_dir}/worker_<i>.log")
        codes = launch.run_local_processes([TuneJob(spec) for _ in range(args.workers)], spec.study_dir, threads)
        code = next((c for c in codes if c), 0)
    else:
        codes = launch.submit([TuneJob(spec) for _ in range(args.workers)], args.launcher,
                              os.path.join(spec.study_dir, "jobs"), options)
        code = next((1 if c is None else c for c in codes if c != 0), 0)
    report(spec)
    return code


def _stored_trials(spec):
    return int(open_study(spec).user_attrs.get("trials", 0))


def main(argv=None):
    args = parse_args(argv)
    return run_tool(lambda: tune(args), args.debug, args.quiet)


if __name__ == "__main__":
    sys.exit(main())
