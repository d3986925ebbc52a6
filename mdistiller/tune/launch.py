"""Where the jobs of ``sweep.py`` and ``tune.py`` run: ``--launcher local|submitit-local|slurm``.

A job is a picklable callable returning an exit code (:class:`Job`): a sweep's run
(``mdistiller.cli.sweep.SweepJob``) or a tuning worker (:class:`TuneJob`). ``local`` runs them
as this machine's processes (``tune.py --workers K``: K processes, the cores split between them
through ``OMP_NUM_THREADS``); ``submitit-local`` hands the same job objects to submitit's local
executor and ``slurm`` to its SLURM executor: a job array for a sweep (at most
``--slurm-array-parallelism`` at once), one job per tuning worker. A job hit by preemption or its
time limit is checkpointed and requeued by submitit's protocol (:meth:`Job.checkpoint`): a
sweep's run continues with ``--resume`` from its run folder; a tuning worker marks its running
trial failed and enqueues a trial with the same values that continues that trial's run folder
with ``--resume`` (:func:`~mdistiller.tune.study.continue_later`); the requeued worker, or any
other, takes it first. submitit's logs go to
``<sweep or study folder>/jobs``.
"""

import logging
import os
import pickle
import subprocess
import sys
from dataclasses import dataclass

from ..runs.loggers import setup_logging
from ..utils.errors import ConfigError, user_errors
from . import pruning, require
from .study import continue_later, fail, run_worker

log = logging.getLogger("mdistiller.launch")

LAUNCHERS = ("local", "submitit-local", "slurm")
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Job:
    """A picklable callable returning an exit code; requeued as itself when preempted."""

    def __call__(self):
        raise NotImplementedError

    def checkpoint(self, *args, **kwargs):
        """submitit's checkpointing protocol: called on preemption or timeout, before the
        requeue; the requeued job is this one (its run folders hold the state)."""
        submitit = require("submitit", "--launcher slurm")
        self.on_preempt()
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    def on_preempt(self):
        pass


class TuneJob(Job):
    """One tuning worker: runs trials until the study has its N (:func:`run_worker`)."""

    def __init__(self, spec):
        self.spec = spec

    def __call__(self):
        with user_errors(self.spec.debug) as result, setup_logging(quiet=self.spec.quiet):
            result["code"] = run_worker(self.spec)
        return result.get("code", 0) or 0

    def on_preempt(self):
        reporter = pruning.ACTIVE
        if reporter is not None:  # the running trial: failed, and continued in its run folder
            t = reporter.trial
            t.set_user_attr("preempted", True)
            fail(t.study, t.number)
            continue_later(t.study, t)


@dataclass
class SlurmOptions:
    partition: str = None
    gpus_per_job: int = 0
    cpus_per_job: int = 1
    time: int = 60  # minutes
    extra: tuple = ()  # KEY=VALUE: further sbatch parameters
    array_parallelism: int = 8


def executor(kind, folder, options):
    """A submitit executor (``submitit-local`` or ``slurm``) logging to ``folder``."""
    submitit = require("submitit", f"--launcher {kind}")
    if kind == "submitit-local":
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=options.time)
        return ex
    try:
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    except RuntimeError as e:  # no srun/sbatch here
        raise ConfigError(f"--launcher slurm: {e}; run on a SLURM login node, or use --launcher submitit-local "
                          f"to try the jobs on this machine") from None
    params = dict(name=os.path.basename(os.path.dirname(os.path.abspath(folder))), timeout_min=options.time, cpus_per_task=options.cpus_per_job, tasks_per_node=1, nodes=1,
                  slurm_array_parallelism=options.array_parallelism)
    if options.gpus_per_job:
        params["gpus_per_node"] = options.gpus_per_job
    if options.partition:
        params["slurm_partition"] = options.partition
    if options.extra:
        params["slurm_additional_parameters"] = dict(options.extra)
    ex.update_parameters(**params)
    return ex


def _env(threads=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([PACKAGE_PARENT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                            if p])
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def submit(jobs, kind, folder, options, wait=True):
    """Submit ``jobs`` through submitit (one array); wait for them with ``wait``; returns
    their exit codes (None for a job that did not finish or raised)."""
    os.makedirs(folder, exist_ok=True)
    ex = executor(kind, folder, options)
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = _env()["PYTHONPATH"]  # the jobs import this checkout's package
    try:
        handles = ex.submit_array(jobs) if len(jobs) > 1 else [ex.submit(jobs[0])]
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    for h in handles:
        log.info(f"submitted job {h.job_id}; its log: {h.paths.stdout}")
    if not wait:
        return [None] * len(handles)
    codes = []
    for h in handles:
        try:
            codes.append(h.result())
        except Exception as e:  # the job raised (its log has the traceback)
            first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            print(f"error: job {h.job_id} failed: {first[:200]} (log: {h.paths.stderr})", file=sys.stderr, flush=True)
            codes.append(None)
    return codes


def run_local_processes(jobs, folder, threads=None):
    """Run each job in its own process on this machine (``OMP_NUM_THREADS`` = ``threads``),
    its output in ``folder/worker_<i>.log``; returns their exit codes. Ctrl-C stops them all."""
    os.makedirs(folder, exist_ok=True)
    procs = []
    for i, job in enumerate(jobs):
        path = os.path.join(folder, f"worker_{i}.pkl")
        with open(path, "wb") as f:
            pickle.dump(job, f)
        out = open(os.path.join(folder, f"worker_{i}.log"), "ab")
        procs.append((subprocess.Popen([sys.executable, "-m", __name__, path], stdout=out, stderr=subprocess.STDOUT,
                                       env=_env(threads)), out))
        log.info(f"worker {i}: process {procs[-1][0].pid}, log {out.name}")
    codes = []
    try:
        for i, (p, out) in enumerate(procs):
            codes.append(p.wait())
            out.close()
            os.remove(os.path.join(folder, f"worker_{i}.pkl"))
    except KeyboardInterrupt:
        for p, _ in procs:
            if p.poll() is None:
                p.send_signal(2)
        for p, out in procs:
            p.wait()
            out.close()
        raise
    return codes


def _main(path):
    with open(path, "rb") as f:
        job = pickle.load(f)
    return job()


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
