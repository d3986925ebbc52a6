"""Run a grid of experiments one after another, or print their commands for a scheduler.

    python3 tools/sweep.py --cfg configs/cifar100/sld/res32x4_res8x4.yaml \\
        --grid SLD.GAMMA=0,100,150,200 --grid "SLD.TEMPERATURES=[1,2,3,4,5,6];[2,3,4]" \\
        --seeds 3 [--seed-start 0] [--project P] [--print] [KEY VALUE ...]

``--grid KEY=VALUES`` sweeps one key: values are separated by ``,`` or, when a value holds
commas itself (lists), by ``;``; a single list (``KEY=[1,2]``) is one value. The runs are the
product of all grids times the seeds ``seed-start .. seed-start+seeds-1`` (default start:
the config's EXPERIMENT.SEED), ordered seed by seed. Each run gets EXPERIMENT.SEED and a
readable, filesystem-safe EXPERIMENT.NAME made of the config's NAME (or TAG), the swept
keys and the seed, e.g. ``sld_gamma100_temps2-3-4_seed1``. Trailing ``KEY VALUE`` pairs
apply to every run.

Every run's config is built and checked before anything starts. A run whose folder
(LOG.PREFIX/EXPERIMENT.PROJECT/NAME) already holds all SOLVER.EPOCHS epochs in
metrics.jsonl is skipped; an unfinished one with a checkpoint (``latest``/``interrupted``)
is resumed (``--resume``); a non-empty folder without checkpoint is restarted
(``--overwrite``). Runs go through ``mdistiller.engine.run.train`` in this process; a failing
run is reported and the rest still run (exit code 1 if any failed); a run stopped by a
signal (exit code 130) or Ctrl-C stops the sweep. ``--print`` prints one
shell command per pending run instead (``python3 tools/train_ours.py --cfg ...``).

``--launcher submitit-local|slurm`` runs the pending runs as submitit jobs instead (one job
array; ``slurm``: ``--slurm-partition``, ``--gpus-per-job``, ``--cpus-per-job``, ``--time``,
``--slurm-array-parallelism``, ``--slurm-extra KEY=VALUE``; needs ``pip install -e .[slurm]``),
with their logs in ``LOG.PREFIX/EXPERIMENT.PROJECT/jobs``; a job preempted or out of time is
requeued and resumes its run folder (``--resume``). See docs/tuning.md.
"""

import argparse
import hashlib
import itertools
import logging
import os
import re
import shlex
import sys
import traceback
import warnings
from dataclasses import dataclass

from ..config.load import ConfigWarning, get_key, load_cfg, overrides_to_dict
from ..engine import run as run_mod
from ..runs.folder import has_checkpoint, run_dir_of
from ..runs.loggers import read_metrics, setup_logging
from ..tune import launch
from ..tune.launch import Job
from ..utils.errors import ConfigError
from .common import ArgumentParser, add_debug_flag, number, run_tool
from .launch_options import add_launcher_args, slurm_options
from .summarize import format_value

log = logging.getLogger("mdistiller.sweep")

TRAIN_COMMAND = ["python3", "tools/train_ours.py"]
SWEEP_KEYS = ("EXPERIMENT.NAME", "EXPERIMENT.SEED")  # set per run by the sweep
KEY_ABBREVIATIONS = {"TEMPERATURES": "temps", "TEMPERATURE": "temp"}
MAX_NAME = 120
INTERRUPTED = 130  # exit code of a run stopped by a signal (or Ctrl-C): the sweep stops too
STATE_FLAGS = {"start": [], "resume": ["--resume"], "restart": ["--overwrite"]}


@dataclass
class Run:
    name: str
    opts: list  # KEY VALUE strings given to the trainer
    settings: list  # (key, raw value) pairs of the grid
    cfg: object  # the run's merged config, EXPERIMENT.NAME set to ``name``

    @property
    def folder(self):
        return run_dir_of(self.cfg)

    def state(self):
        """``done`` (all epochs in metrics.jsonl), ``resume`` (a checkpoint to continue from),
        ``restart`` (a non-empty folder without checkpoint) or ``start``."""
        records = read_metrics(self.folder)
        if records and records[-1]["epoch"] >= self.cfg.SOLVER.EPOCHS:
            return "done"
        if has_checkpoint(self.folder):
            return "resume"
        return "restart" if os.path.isdir(self.folder) and os.listdir(self.folder) else "start"


# ---------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------
def parse_grid(spec):
    """``"KEY=1,2"`` -> ``("KEY", ["1", "2"])``; ``"KEY=[1,2];[3]"`` -> ``("KEY", ["[1,2]", "[3]"])``."""
    key, sep, values = (s.strip() for s in spec.partition("="))
    if not sep or not key or not values:
        raise ConfigError(f"--grid '{spec}' must look like KEY=V1,V2 (or KEY=[..];[..] for list values)")
    if ";" in values:
        parts = values.split(";")
    else:
        parts = [values] if values[0] in "[(" else values.split(",")
    parts = [p.strip() for p in parts]
    if not all(parts):
        raise ConfigError(f"--grid '{spec}' has an empty value; remove the extra ',' or ';'")
    if len(set(parts)) < len(parts):
        raise ConfigError(f"--grid '{spec}' lists a value twice; give each value once")
    return key, parts


def safe_name(text):
    """Filesystem-safe run-name part: letters, digits, ``.+-_`` (no leading dot or dash)."""
    return re.sub(r"[^\w.+-]+", "_", text, flags=re.ASCII).strip("_").lstrip(".-")


def _name_value(value):
    if isinstance(value, (list, tuple)):
        return "-".join(_name_value(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).lower() if isinstance(value, bool) else format_value(value)


def short_keys(keys):
    """Lower-case last key parts (``SLD.TEMPERATURES`` -> ``temps``); full keys where ambiguous."""
    short = {k: KEY_ABBREVIATIONS.get(k.split(".")[-1], k.split(".")[-1]).lower() for k in keys}
    clash = {s for s in short.values() if list(short.values()).count(s) > 1}
    return {k: k.lower().replace(".", "-") if s in clash else s for k, s in short.items()}


def run_name(stem, parts, seed):
    """``stem_key1value1_key2value2_seedN`` made safe; over-long names keep a hash suffix."""
    body = safe_name("_".join([stem] + [f"{k}{_name_value(v)}" for k, v in parts]))
    if len(body) > MAX_NAME:
        body = body[:MAX_NAME - 9] + "_" + hashlib.sha1(body.encode()).hexdigest()[:8]
    return f"{body}_seed{seed}" if body else f"seed{seed}"


def _load(cfg_path, opts, where):
    try:
        return load_cfg(cfg_path, opts)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def plan_runs(cfg_path, grid_specs=(), seeds=1, seed_start=None, project=None, opts=()):
    """Every run of the sweep, its config built and validated (raises ConfigError)."""
    opts = list(opts)
    overrides_to_dict(opts)  # checks the KEY VALUE pairing
    grid = [parse_grid(s) for s in grid_specs]
    keys = [k for k, _ in grid]
    reserved = SWEEP_KEYS + (("EXPERIMENT.PROJECT",) if project else ())
    for key in keys + opts[0::2]:
        if key in reserved:
            raise ConfigError(f"{key} is set by the sweep; use --seeds/--seed-start/--project instead")
    for key in set(keys):
        if keys.count(key) > 1 or key in opts[0::2]:
            raise ConfigError(f"{key} is given more than once (--grid and/or overrides); keep one")
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    if project:
        opts += ["EXPERIMENT.PROJECT", project]
    base = load_cfg(cfg_path, opts)
    stem = safe_name(base.EXPERIMENT.NAME or base.EXPERIMENT.TAG)
    start = base.EXPERIMENT.SEED if seed_start is None else seed_start
    for key, values in grid:
        for value in values:
            _load(cfg_path, opts + [key, value], f"--grid {key}={value}")
    short = short_keys(keys)
    runs = []
    for seed in range(start, start + seeds):
        for values in itertools.product(*(v for _, v in grid)):
            settings = list(zip(keys, values))
            run_opts = opts + [x for kv in settings for x in kv] + ["EXPERIMENT.SEED", str(seed)]
            where = "run with " + " ".join(f"{k}={v}" for k, v in settings + [("seed", seed)])
            cfg = _load(cfg_path, run_opts, where)
            name = run_name(stem, [(short[k], get_key(cfg, k)) for k in keys], seed)
            cfg.defrost()
            cfg.EXPERIMENT.NAME = name
            cfg.freeze()
            runs.append(Run(name, run_opts + ["EXPERIMENT.NAME", name], settings, cfg))
    names = [r.name for r in runs]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        clashing = [" ".join(f"{k}={v}" for k, v in r.settings) for r in runs if r.name == dups[0]]
        raise ConfigError(f"grid values {' and '.join(clashing)} give the same run name '{dups[0]}'; "
                          f"sweep distinct values")
    return runs


# ---------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------
def trainer_argv(cfg_path, run, state):
    return ["--cfg", cfg_path] + STATE_FLAGS[state] + run.opts


def shell_command(argv):
    return " ".join(shlex.quote(a) for a in TRAIN_COMMAND + argv)


def _train(cfg_path, run, state, debug=False, quiet=False):
    """Run ``run`` through the composition root; return its exit code (exceptions and
    SystemExit become codes)."""
    try:
        return run_mod.train(cfg_path, run.opts, resume=state == "resume", overwrite=state == "restart",
                             debug=debug, quiet=quiet, argv=trainer_argv(cfg_path, run, state))
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception as e:  # one failing run must not stop the sweep
        if debug:
            traceback.print_exc()
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


class SweepJob(Job):
    """One run of the sweep as a submitit job: started, resumed or skipped by its folder's
    state when it starts (so a requeued job resumes it)."""

    def __init__(self, cfg_path, run, debug=False, quiet=False):
        self.cfg_path, self.run, self.debug, self.quiet = cfg_path, run, debug, quiet

    def __call__(self):
        state = self.run.state()
        if state == "done":
            return 0
        with setup_logging(quiet=self.quiet):
            log.info(f"{self.run.name}: {state} in {self.run.folder}")
            return _train(self.cfg_path, self.run, state, self.debug, self.quiet)


def print_commands(runs, cfg_path):
    skipped = resumed = 0
    for run in runs:
        state = run.state()
        skipped += state == "done"
        resumed += state == "resume"
        if state != "done":
            print(shell_command(trainer_argv(cfg_path, run, state)))
    print(f"sweep: {len(runs)} runs: {len(runs) - skipped} commands printed ({resumed} resuming), "
          f"{skipped} skipped (finished)", file=sys.stderr)
    return 0


def run_all(runs, cfg_path, debug=False, quiet=False):
    trained, skipped, failed = [], [], []
    interrupted = False
    for i, run in enumerate(runs, 1):
        state = run.state()
        if state == "done":
            log.info(f"[sweep {i}/{len(runs)}] {run.name}: finished already, skipped")
            skipped.append(run)
            continue
        log.info(f"[sweep {i}/{len(runs)}] {run.name}: {state} in {run.folder}")
        try:
            code = _train(cfg_path, run, state, debug, quiet)
        except KeyboardInterrupt:
            code = INTERRUPTED
        if code == INTERRUPTED:
            interrupted = True
            failed.append(run)
            break
        if code == 0 and run.state() != "done":
            print(f"error: run {run.name} exited 0 but {run.folder}/metrics.jsonl does not reach epoch "
                  f"{run.cfg.SOLVER.EPOCHS}", file=sys.stderr)
            code = 1
        (trained if code == 0 else failed).append(run)
        if code != 0:
            print(f"error: run {run.name} failed (exit code {code}); continuing with the others",
                  file=sys.stderr)
    return summary_line(runs, trained, skipped, failed, interrupted)


def summary_line(runs, trained, skipped, failed, interrupted=False):
    line = (f"sweep: {len(runs)} runs: {len(trained)} trained, {len(skipped)} skipped (finished), "
            f"{len(failed)} failed" + (": " + ", ".join(r.name for r in failed) if failed else ""))
    print(line + (" (interrupted)" if interrupted else ""), flush=True)
    return INTERRUPTED if interrupted else int(bool(failed))


def submit_all(runs, cfg_path, kind, options, debug=False, quiet=False):
    """The pending runs as one submitit job array (``kind``: submitit-local or slurm), their
    logs in the project folder's ``jobs``; waits for them."""
    pending = [r for r in runs if r.state() != "done"]
    skipped = [r for r in runs if r not in pending]
    for r in skipped:
        log.info(f"{r.name}: finished already, skipped")
    folder = os.path.join(os.path.dirname(os.path.abspath(runs[0].folder)), "jobs")
    jobs = [SweepJob(cfg_path, r, debug, quiet) for r in pending]
    codes = launch.submit(jobs, kind, folder, options) if jobs else []
    trained, failed = [], []
    for run, code in zip(pending, codes):
        ok = code == 0 and run.state() == "done"
        (trained if ok else failed).append(run)
        if not ok:
            print(f"error: run {run.name} failed (exit code {code}; log in {folder}); continuing with the others",
                  file=sys.stderr)
    return summary_line(runs, trained, skipped, failed)


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------
def parse_args(argv=None):
    summary, details = __doc__.split("\n\n", 1)
    p = ArgumentParser(description=summary, epilog=details,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", required=True, help="base config file")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=VALUES",
                   help="swept key and values: KEY=V1,V2 or KEY=[..];[..] (repeatable)")
    p.add_argument("--seeds", type=number(int, low=1), default=1, help="number of seeds per configuration")
    p.add_argument("--seed-start", type=number(int, low=0, high=2**63 - 1), default=None,
                   help="first seed (default: the config's)")
    p.add_argument("--project", default=None, help="EXPERIMENT.PROJECT of every run")
    p.add_argument("--print", dest="print_only", action="store_true",
                   help="print one training command per pending run instead of running")
    add_launcher_args(p, array=True)
    add_debug_flag(p)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every run")
    return p.parse_args(argv)


def plan_and_run(args):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConfigWarning)
        runs = plan_runs(args.cfg, args.grid, args.seeds, args.seed_start, args.project, args.opts)
    for message in dict.fromkeys(str(w.message) for w in caught):
        print(f"warning: {message}", file=sys.stderr)
    options = slurm_options(args, cpus_default=runs[0].cfg.DATASET.NUM_WORKERS + 1)
    if args.print_only and args.launcher != "local":
        raise ConfigError(f"--print and --launcher {args.launcher} contradict each other; pass one of them")
    if args.print_only:
        return print_commands(runs, args.cfg)
    if args.launcher != "local":
        return submit_all(runs, args.cfg, args.launcher, options, args.debug, args.quiet)
    return run_all(runs, args.cfg, args.debug, args.quiet)


def main(argv=None):
    args = parse_args(argv)
    return run_tool(lambda: plan_and_run(args), args.debug, args.quiet)


if __name__ == "__main__":
    sys.exit(main())
