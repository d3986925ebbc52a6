"""A tuning study: its storage and checks, a worker's loop of trials, and the report.

Each trial is an ordinary run folder ``<LOG.PREFIX>/<PROJECT>/<study>/trial_NNNN`` (NNNN the
Optuna trial number) trained through :func:`mdistiller.engine.run.train` in the worker's
process, its sampled values recorded as ``KEY VALUE`` overrides in its config; the
objective is its best holdout top-1 (``val_acc`` in its ``metrics.jsonl``).

``--trials N`` is the study's total of complete or pruned trials, over all workers and
reruns: before each trial a worker counts the finished and running ones, and after asking
for its trial checks that fewer than N non-failed trials precede it (trial numbers are given
out atomically by the storage), so two workers racing for the last place never make N+1;
the loser's trial is closed as failed with the user attribute ``surplus`` and never run.
A trial whose worker died (killed, node lost) is marked failed: at once by any worker on the
same host (the trial records its worker's host and PID), else by Optuna's heartbeat after
:data:`GRACE_SECONDS`; its run folder can be resumed with the command the report prints.
"""

import contextlib
import json
import logging
import os
import socket
import sys
import warnings
from dataclasses import dataclass, field
from types import SimpleNamespace

import yaml

from ..config.load import load_cfg
from ..engine import run as run_mod
from ..runs.selection import HOLDOUT, select_epoch
from ..runs import folder as rf
from ..runs.loggers import read_metrics
from ..utils.checks import get_key
from ..utils.errors import ConfigError
from . import pruning, require
from .space import check_space, parse_space, trial_overrides

log = logging.getLogger("mdistiller.tune")

HEARTBEAT_SECONDS = 60  # a running trial's heartbeat in the storage
GRACE_SECONDS = 600  # a running trial without heartbeat this long is failed (its worker is gone)
MAX_FAILURES = 3  # a worker stops after this many failed trials in a row
TRIAL_FORMAT = "trial_{:04d}"
INTERRUPTED = 130


@dataclass
class TuneSpec:
    """Everything a worker needs (picklable: submitit sends it to the cluster)."""

    cfg: str  # the config file (absolute)
    opts: list  # trailing KEY VALUE overrides of every trial
    space: list  # the --space specs
    trials: int
    study: str
    storage: str
    study_dir: str  # <LOG.PREFIX>/<PROJECT>/<study> (absolute)
    prune: str = "median"
    plugins: list = field(default_factory=list)  # the config's EXPERIMENT.PLUGINS, then this package's hook
    hooks: list = field(default_factory=list)
    quiet: bool = False
    debug: bool = False

    def trial_opts(self, number, params):
        """The overrides of trial ``number``: the command's, the sampled values, the folder."""
        prefix, project = os.path.split(self.study_dir)
        return (list(self.opts) + trial_overrides(params) +
                ["EXPERIMENT.PLUGINS", repr(self.plugins), "EXPERIMENT.HOOKS", repr(self.hooks),
                 "LOG.PREFIX", prefix, "EXPERIMENT.PROJECT", project, "EXPERIMENT.NAME", TRIAL_FORMAT.format(number)])

    def trial_dir(self, number):
        return os.path.join(self.study_dir, TRIAL_FORMAT.format(number))

    def resume_command(self, number, params):
        return run_mod.command(SimpleNamespace(cfg=self.cfg, opts=self.trial_opts(number, params)))


def plan(cfg_path, space, trials, study, storage=None, prune="median", opts=(), quiet=False, debug=False):
    """Check the command (config, holdout, space) and return its :class:`TuneSpec`; raises
    ConfigError (one line) before anything is created."""
    opts = [str(o) for o in opts]
    if "EXPERIMENT.NAME" in opts[0::2]:
        raise ConfigError("EXPERIMENT.NAME is set by tune.py (trial_NNNN); name the study with --study instead")
    base = load_cfg(cfg_path, opts)
    if not base.DATASET.HOLDOUT > 0:
        raise ConfigError("DATASET.HOLDOUT is 0: tune.py selects on the holdout split, never the test set; "
                          "set DATASET.HOLDOUT (e.g. DATASET.HOLDOUT 0.1)")
    params = check_space([parse_space(s) for s in space], cfg_path, opts)
    study = study(base) if callable(study) else study  # the default name is made from the config
    rf.check_component("--study", study)
    root = rf.run_dir_of(base)  # checks LOG.PREFIX and PROJECT
    study_dir = os.path.abspath(os.path.join(os.path.dirname(root), study))
    if os.path.isfile(study_dir):
        raise ConfigError(f"study folder '{study_dir}' exists as a file; choose another --study")
    plugins = list(base.EXPERIMENT.PLUGINS) + [pruning.MODULE] * (pruning.MODULE not in base.EXPERIMENT.PLUGINS)
    hooks = list(base.EXPERIMENT.HOOKS) + [pruning.NAME] * (pruning.NAME not in base.EXPERIMENT.HOOKS)
    spec = TuneSpec(os.path.abspath(cfg_path), opts, [p.spec for p in params], trials, study,
                    storage or "sqlite:///" + os.path.join(study_dir, "study.db"), study_dir, prune, plugins, hooks,
                    quiet, debug)
    spec._params = params
    return spec


def params_of(spec):
    if getattr(spec, "_params", None) is None:
        spec._params = check_space([parse_space(s) for s in spec.space], spec.cfg, spec.opts)
    return spec._params


# ---------------------------------------------------------------------------------------
# The study
# ---------------------------------------------------------------------------------------
def _optuna():
    optuna = require("optuna")
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials: our own lines
    return optuna


def storage_of(spec):
    optuna = _optuna()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # heartbeat: ExperimentalWarning
            return optuna.storages.RDBStorage(spec.storage, heartbeat_interval=HEARTBEAT_SECONDS,
                                              grace_period=GRACE_SECONDS)
    except Exception as e:  # a malformed URL, a missing driver, an unreachable server
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--storage {spec.storage}: {first[:200]}; give an Optuna storage URL such as "
                          f"sqlite:///path/study.db or postgresql://user@host/db") from None


def pruner_of(optuna, name):
    """``median``: Optuna's MedianPruner, once 5 trials finished, from a trial's second epoch on."""
    if name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)  # steps: epochs from 1


def study_attrs(spec):
    return {"cfg": spec.cfg, "opts": list(spec.opts), "space": list(spec.space)}


def open_study(spec, create=False):
    """Load the study (create it with ``create``); a study made by another command (config,
    overrides or space) is refused: its trials would not be comparable."""
    optuna = _optuna()
    storage = storage_of(spec)
    kwargs = dict(study_name=spec.study, storage=storage, pruner=pruner_of(optuna, spec.prune))
    if create:
        study = optuna.create_study(direction="maximize", load_if_exists=True, **kwargs)
    else:
        try:
            study = optuna.load_study(**kwargs)
        except KeyError:
            raise ConfigError(f"no study '{spec.study}' in {spec.storage}; run tune.py with --trials first "
                              f"(or check --study and --storage)") from None
    attrs = study.user_attrs
    if not attrs:
        for k, v in study_attrs(spec).items():
            study.set_user_attr(k, v)
    else:
        for k, v in study_attrs(spec).items():
            if attrs.get(k) != v:
                raise ConfigError(f"study '{spec.study}' in {spec.storage} was made with another {k} "
                                  f"({attrs.get(k)!r}, now {v!r}); rerun with the same one or choose a new --study")
    return study


def counts(study):
    """``(finished, running)``: complete or pruned trials, and running ones."""
    optuna = _optuna()
    S = optuna.trial.TrialState
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return sum(s in (S.COMPLETE, S.PRUNED) for s in states), sum(s == S.RUNNING for s in states)


def worker_id():
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_dead_trials(study):
    """Mark failed the running trials whose worker on this host is gone."""
    optuna = _optuna()
    me = worker_id()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        w = t.user_attrs.get("worker") or {}
        if w.get("host") == me["host"] and w.get("pid") != me["pid"] and not _alive(w.get("pid", -1)):
            with contextlib.suppress(Exception):  # another worker may have done it
                fail(study, t.number)
                log.info(f"trial {t.number}: its worker (process {w.get('pid')}) is gone; marked failed")


def fail(study, number):
    """Mark the running trial ``number`` failed (outside ``study.optimize``, where Optuna
    warns that heartbeats belong)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.tell(number, state=_optuna().trial.TrialState.FAIL)


def continue_later(study, trial):
    """Enqueue a trial with ``trial``'s values that trains in ``trial``'s run folder (resuming
    it): how a preempted worker's trial goes on after the job is requeued. Optuna takes
    enqueued trials first."""
    study.enqueue_trial(dict(trial.params), user_attrs={"continues": trial.user_attrs.get("continues", trial.number)})


def folder_number(trial):
    """The trial number naming ``trial``'s run folder: its own, or the one it continues."""
    return trial.user_attrs.get("continues", trial.number)


class Surplus(Exception):
    """The study had its N trials when this one was asked for (a race between workers)."""


class TrialFailed(Exception):
    def __init__(self, code):
        super().__init__(f"the run exited with code {code}")
        self.code = code


def preceding(study, number):
    """Complete, pruned or running trials numbered below ``number``."""
    optuna = _optuna()
    S = optuna.trial.TrialState
    return sum(t.number < number and t.state in (S.COMPLETE, S.PRUNED, S.RUNNING)
               for t in study.get_trials(deepcopy=False))


def run_trial(spec, study, trial):
    """The objective: train trial ``trial``'s run folder; its best ``val_acc``."""
    optuna = _optuna()
    trial.set_user_attr("worker", worker_id())
    if preceding(study, trial.number) >= spec.trials:
        trial.set_user_attr("surplus", True)
        raise Surplus(f"trial {trial.number}: the study has its {spec.trials} trials; not run")
    params = {p.key: p.sample(trial) for p in params_of(spec)}
    folder = folder_number(trial)  # a continued trial trains in the folder it continues
    run_dir = spec.trial_dir(folder)
    trial.set_user_attr("run_dir", run_dir)
    opts = spec.trial_opts(folder, params)
    log.info(f"trial {trial.number}: {' '.join(f'{k}={v}' for k, v in params.items())} in {run_dir}")
    reporter = pruning.Reporter(trial)  # --prune none: the study's NopPruner never prunes
    pruning.ACTIVE = reporter
    try:
        code = run_mod.train(spec.cfg, opts, resume=rf.has_checkpoint(run_dir), debug=spec.debug, quiet=spec.quiet)
    finally:
        pruning.ACTIVE = None
    records = read_metrics(run_dir)
    chosen = select_epoch(records, HOLDOUT)  # the highest val_acc, as the run selects
    best = chosen["val_acc"] if chosen else None
    pruned = code == 0 and reporter.pruned_after is not None and bool(records) and \
        records[-1]["epoch"] < load_cfg(spec.cfg, opts).SOLVER.EPOCHS
    state = "PRUNED" if pruned else ("COMPLETE" if code == 0 else "FAIL")
    if best is not None:
        trial.set_user_attr("best_val_acc", best)
    with contextlib.suppress(OSError):
        rf.atomic_write_text(os.path.join(run_dir, "trial.json"), json.dumps(
            {"study": spec.study, "storage": spec.storage, "number": trial.number, "params": params, "state": state,
             "best_val_acc": best, "pruned_after_epoch": reporter.pruned_after if pruned else None}, indent=2))
    if code != 0:
        raise TrialFailed(code)
    if best is None:
        raise ConfigError(f"trial {trial.number}: no val_acc in {run_dir}/metrics.jsonl (is DATASET.HOLDOUT > 0?)")
    if pruned:
        log.info(f"trial {trial.number}: pruned after epoch {reporter.pruned_after} (best val_acc {best:.2f})")
        raise optuna.TrialPruned(f"pruned after epoch {reporter.pruned_after}")
    log.info(f"trial {trial.number}: best val_acc {best:.2f}")
    return best


def run_worker(spec):
    """Run trials until the study has ``spec.trials`` complete or pruned ones (or
    :data:`MAX_FAILURES` fail in a row). Returns an exit code: 0, 1 (trials failed) or 130."""
    study = open_study(spec)
    failures = 0
    while True:
        fail_dead_trials(study)
        done, running = counts(study)
        if done + running >= spec.trials:
            return 0
        try:
            study.optimize(lambda trial: run_trial(spec, study, trial), n_trials=1, catch=())
            failures = 0
        except Surplus as e:
            log.info(str(e))
            return 0
        except TrialFailed as e:
            if e.code == INTERRUPTED:
                return INTERRUPTED
            failures += 1
        except KeyboardInterrupt:
            return INTERRUPTED
        if failures >= MAX_FAILURES:
            print(f"error: {failures} trials in a row failed; stopping this worker (see the trials' run folders)",
                  file=sys.stderr, flush=True)
            return 1


# ---------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------
def trial_rows(spec, study):
    """One dict per trial (surplus ones left out): number, state, params, best val_acc,
    the test top-1 at that epoch, the epochs done, the run folder."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("surplus"):
            continue
        run_dir = spec.trial_dir(folder_number(t))
        records = read_metrics(run_dir)
        chosen = select_epoch(records, HOLDOUT)
        rows.append({"number": t.number, "state": t.state.name, "params": dict(t.params),
                     "value": t.value if t.values else None,
                     "val_acc": chosen["val_acc"] if chosen else None,
                     "test_acc": chosen["test_acc"] if chosen else None,
                     "epoch": chosen["epoch"] if chosen else None,
                     "epochs": records[-1]["epoch"] if records else 0, "run_dir": run_dir,
                     "folder": folder_number(t)})
    return rows


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.4f}".rstrip("0").rstrip(".")
    return str(v)


def format_table(rows, keys):
    head = ["trial", "state"] + keys + ["best val_acc", "test top-1", "epoch", "epochs"]
    body = [[str(r["number"]), r["state"]] + [_cell(r["params"].get(k)) for k in keys] +
            [f"{r['val_acc']:.2f}" if r["val_acc"] is not None else "", f"{r['test_acc']:.2f}"
             if r["test_acc"] is not None else "", _cell(r["epoch"]), str(r["epochs"])] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])


def _nested(pairs):
    out = {}
    for key, value in pairs:
        node = out
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return out


def write_best_yaml(spec, best):
    """``<study folder>/best.yaml``: ``_BASE_`` the tuned config, the command's overrides and
    the best trial's values, nested; ``train_ours.py --cfg best.yaml`` trains the winner."""
    cfg = load_cfg(spec.cfg, spec.opts + trial_overrides(best.params))
    keys = list(dict.fromkeys(list(spec.opts[0::2]) + list(best.params)))
    pairs = [(k, _plain(get_key(cfg, k))) for k in keys]
    pairs.append(("EXPERIMENT.NAME", f"{spec.study}_best"))
    shared = os.path.commonpath([spec.cfg, spec.study_dir]) != os.path.dirname(os.path.abspath(os.sep))
    data = {"_BASE_": os.path.relpath(spec.cfg, spec.study_dir) if shared else spec.cfg}
    data.update(_nested(pairs))
    header = (f"# the best trial ({best.number}, best val_acc {best.value:.2f}) of study '{spec.study}' "
              f"({spec.storage})\n# train it: python3 tools/train_ours.py --cfg {os.path.join(spec.study_dir, 'best.yaml')}\n")
    path = os.path.join(spec.study_dir, "best.yaml")
    rf.atomic_write_text(path, header + yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
    return path


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def report(spec, out=None):
    """Print the trials' table, the best parameters and write ``best.yaml``; returns the
    best trial (or None)."""
    out = out or sys.stdout
    optuna = _optuna()
    study = open_study(spec)
    rows = trial_rows(spec, study)
    keys = [p.key for p in params_of(spec)]
    done, running = counts(study)
    print(f"study '{spec.study}' ({spec.storage}): {done}/{spec.trials} trials complete or pruned"
          + (f", {running} running" if running else ""), file=out)
    if rows:
        print(format_table(rows, keys), file=out)
    continued = {r["folder"] for r in rows if r["folder"] != r["number"]}  # taken on by a later trial
    for r in rows:
        if r["state"] == "FAIL" and r["number"] not in continued and os.path.isfile(os.path.join(r["run_dir"], "latest")):
            print(f"trial {r['number']} failed; resume its run folder with: "
                  f"{spec.resume_command(r['folder'], r['params'])}", file=out)
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    if not complete:
        print("no complete trial yet: no best parameters", file=out)
        return None
    best = study.best_trial
    print(f"best trial {best.number}: best val_acc {best.value:.2f}; " +
          " ".join(f"{k} {v}" for k, v in best.params.items()), file=out)
    path = write_best_yaml(spec, best)
    print(f"wrote {path}; train the winner with: python3 tools/train_ours.py --cfg {path}", file=out)
    return best
