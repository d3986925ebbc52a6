"""The composition root: one function builds and runs a run from a config.

:func:`train` is what every entry point calls (``tools/train_ours.py``, ``tools/demo.py``,
``tools/sweep.py``, the tests): it loads the config (plugins first), takes the CPU threads
a shared machine leaves idle, and calls :func:`run` under the tools' one-line error
contract. :func:`run` owns the order of a start: the run folder and its lock before
anything else, the distributed context, the resume checks, the build, the dry run, the
trainer with its hooks, and what is said at the end.
"""

import contextlib
import json
import logging
import os
import shlex
import signal
import sys
from types import SimpleNamespace

import torch

from ..config.defaults import CFG
from ..config.load import cfg_to_dict, diff_cfg, get_key, load_cfg
from ..distillers.ensemble import teacher_label, teacher_names
from ..dataset.loader import check_batch, check_subset
from ..runs import folder as rf
from ..runs.checkpoint import load_checkpoint
from ..runs.folder import RunFolderError, run_dir_of
from ..runs.loggers import RunLogger, setup_logging
from ..utils.dist import init_distributed, shutdown_distributed
from ..utils.errors import CheckpointError, ConfigError, MdistillerError, user_errors
from ..utils.runtime import derive_seed, provenance, seed_everything, set_deterministic
from ..utils.threads import cpu_threads
from . import build
from .hooks import HardStop, StopRequested, check_hook_names, default_hooks, plugin_hooks
from .trainer import Trainer

log = logging.getLogger("mdistiller.train")

# keys a resumed run may change: logging, workers, device, more epochs, and what a user
# needs after a non-finite loss (a lower learning rate, no mixed precision) and how
# batches reach the device
RESUME_FREE_KEYS = ("LOG.", "DATASET.NUM_WORKERS", "SOLVER.EPOCHS", "SOLVER.DEVICE", "SOLVER.LR", "SOLVER.AMP",
                    "SOLVER.PREFETCH", "SOLVER.COMPILE_MODE")
INTERRUPTED_EXIT = 130


def command(args, world_size=1, resume=True):
    """The shell-quoted command that continues (or restarts) this run."""
    launcher = ["torchrun", "--nproc_per_node", str(world_size)] if world_size > 1 else ["python3"]
    cfg = ["--cfg", args.cfg] if args.cfg else []
    return shlex.join(launcher + ["tools/train_ours.py"] + cfg + (["--resume"] if resume else []) + list(args.opts))


class RunFolder:
    """Open the run folder for this process: refuse a folder in use (lock) or not a run
    folder, recover its last committed epoch, and decide between a fresh start and a
    resume. The lock is held until :meth:`close`."""

    def __init__(self, run_dir, args, is_main=True):
        self.rf, self.run_dir, self.args, self.is_main = rf, run_dir, args, is_main
        self.created, self.lock, self.fresh = [], None, True
        if args.resume and args.overwrite:
            raise ConfigError("--resume and --overwrite contradict each other; pass one of them")
        if not is_main:
            return
        exists = os.path.isdir(run_dir)
        if os.path.exists(run_dir) and not exists:
            raise RunFolderError(f"run folder '{run_dir}' exists as a file; set EXPERIMENT.NAME to another name")
        if exists and not rf.is_run_folder(run_dir) and os.listdir(run_dir):
            if not rf.has_checkpoint(run_dir):
                raise RunFolderError(f"'{run_dir}' is not a run folder (it holds other files and no {rf.MARKER} "
                                     f"marker); nothing there is used or deleted; set EXPERIMENT.NAME to a new name")
            if args.overwrite:  # a run folder of an older version, or someone's copy
                raise RunFolderError(f"'{run_dir}' has a checkpoint but no {rf.MARKER} marker (an older version's "
                                     f"run folder?), so --overwrite does not delete it; --resume it, or move it "
                                     f"away yourself")
        self.created = rf.create(run_dir)
        self.lock = rf.RunLock(run_dir).acquire()

    def open(self, load):
        """Returns the checkpoint path to resume from (or None for a fresh start)."""
        if not self.is_main:
            return None
        rf, run_dir, args = self.rf, self.run_dir, self.args
        if not args.overwrite:  # --overwrite reads nothing of what it replaces
            rf.recover(run_dir, load)
        checkpoint = next((os.path.join(run_dir, f) for f in rf.CHECKPOINTS[::-1]
                           if os.path.isfile(os.path.join(run_dir, f))), None)
        if args.resume:
            if checkpoint:
                self.fresh = False
                if not rf.is_run_folder(run_dir):  # an older version's run folder, resumed: mark it
                    rf.mark(run_dir)
                return checkpoint
            if self.created:
                raise CheckpointError(f"--resume: no checkpoint ('latest' or 'interrupted') in '{run_dir}'; "
                                      f"start without --resume")
            log.info(f"note: '{run_dir}' holds no checkpoint yet (the run stopped before its first epoch "
                        f"ended); starting it from epoch 1")
        elif checkpoint and not args.overwrite:
            raise ConfigError(f"run folder '{run_dir}' is already used by another run; pass --resume to continue it, "
                              f"--overwrite to replace it, or set EXPERIMENT.NAME to a new name")
        return None

    def prepare_fresh(self):
        """Empty a reused folder (after --overwrite, or a start that saved no checkpoint)."""
        if self.is_main and self.fresh and not self.created:
            self.rf.clear(self.run_dir)

    def close(self, failed_early=False):
        if self.lock is not None:
            self.lock.release()
        if failed_early and self.is_main:
            self.rf.remove_created(self.created)


def added_at_default(saved, cfg, key):
    """A key the checkpoint's config lacks (added to the framework since) at its default."""
    try:
        get_key(saved, key)
        return False
    except (KeyError, AttributeError, TypeError):
        pass
    try:
        return get_key(cfg, key) == get_key(CFG, key)
    except (KeyError, AttributeError):
        return False


def check_resume_config(cfg, state, path):
    """Only RESUME_FREE_KEYS may differ from the checkpoint's config; returns the changes
    ``{key: [old, new]}`` (recorded in the run's config history)."""
    saved = state.get("config")
    if saved is None:
        return {}
    changed = [k for k in diff_cfg(saved, cfg) if not added_at_default(saved, cfg, k)]
    differ = [k for k in changed if not k.startswith(RESUME_FREE_KEYS)]
    if differ:
        raise ConfigError(f"--resume: checkpoint '{path}' was written with a different config "
                          f"(differs in {', '.join(differ[:8])}); use the original config or start a new run "
                          f"(only {', '.join(k.rstrip('.') for k in RESUME_FREE_KEYS)} may change on --resume)")
    done = state["interrupted"]["epoch"] - 1 if state.get("interrupted") else state["epoch"]
    if cfg.SOLVER.EPOCHS < done:
        raise ConfigError(f"--resume: SOLVER.EPOCHS {cfg.SOLVER.EPOCHS} is below the {done} epochs already done "
                          f"in '{os.path.dirname(path)}'; set SOLVER.EPOCHS to at least {done}")
    flat_saved = {k: get_key(saved, k) for k in changed}
    return {k: [flat_saved[k], get_key(cfg_to_dict(cfg), k)] for k in changed if not k.startswith("LOG.")}


def write_start_files(run_dir, cfg, args, argv, ctx, state, changes):
    # on resume only RESUME_FREE_KEYS may differ (e.g. more epochs): record them
    rf.atomic_write_text(os.path.join(run_dir, "config.yaml"), cfg.dump())
    if state is None:
        rf.atomic_write_text(os.path.join(run_dir, "provenance.json"),
                          json.dumps(provenance(cfg, argv, ctx.world_size), indent=2))
    if changes:
        epoch = state["interrupted"]["epoch"] if state.get("interrupted") else state["epoch"] + 1
        with open(os.path.join(run_dir, "config_history.jsonl"), "a") as f:
            f.write(json.dumps({"from_epoch": epoch, "changed": changes}) + "\n")


def dry_run(trainer, distiller, cfg):
    """One validation batch through the distiller in training mode (no update; buffers
    such as BN statistics restored), so a pair the method cannot serve fails now."""
    batch = next(iter(trainer.val_loader))
    saved = {k: v.clone() for k, v in distiller.state_dict().items()}
    try:
        distiller.train()
        with torch.no_grad():
            b = trainer.prepare(batch, trainer.train_transform)
            b = distiller.prepare_batch(b)
            with trainer.autocast():
                distiller(**b, epoch=1)
    except MdistillerError:
        raise
    except (RuntimeError, ValueError, IndexError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{cfg.DISTILLER.TYPE} cannot train {teacher_label(cfg)} -> {cfg.DISTILLER.STUDENT} "
                          f"on {cfg.DATASET.TYPE}: {first[:200]}") from e
    finally:
        distiller.load_state_dict(saved)


def log_teachers(trainer, cfg, logger):
    """Each teacher's test top-1 before training (and, for several, the ensemble's)."""
    teacher = trainer.distiller.teacher
    members = list(getattr(teacher, "teachers", []))
    rows = [(f"teacher {n}", "teacher" if not members else f"teacher{i}",
             trainer.evaluate(lambda x, m=m: m(x)[0]))
            for i, (n, m) in enumerate(zip(teacher_names(cfg), members or [teacher]))]
    if members:
        rows.append((f"teacher ensemble {teacher_label(cfg)}", "ensemble", trainer.evaluate_teacher()))
    for label, key, acc in rows:
        msg = f"{label} test top-1 {acc['top1']:.2f} top-5 {acc['top5']:.2f} on {acc['count']} images"
        if logger is not None:
            log.info(msg)
            logger.text(msg)
            logger.scalars({f"{key}/top1": acc["top1"], f"{key}/top5": acc["top5"]}, 0)


def run(cfg, args, argv):
    """Build and run the run ``cfg`` describes; ``args`` has ``cfg`` (the file), ``opts``,
    ``resume`` and ``overwrite``. Returns the exit code (0, or 130 when stopped by a
    signal); user errors raise :class:`~mdistiller.utils.errors.MdistillerError`."""
    run_dir = run_dir_of(cfg)
    # one process per run folder: the lock comes before anything else is checked or written
    folder = RunFolder(run_dir, args, is_main=os.environ.get("RANK", "0") == "0")
    started = False
    ctx = None
    try:
        ctx = init_distributed(cfg.SOLVER.DEVICE)
        check_batch(cfg, ctx.world_size)
        if cfg.SOLVER.AMP == "fp16" and ctx.device.type != "cuda":
            raise ConfigError("SOLVER.AMP fp16 needs CUDA (its gradient scaler); use SOLVER.AMP bf16 on CPU")
        set_deterministic(cfg.EXPERIMENT.DETERMINISTIC)
        seed_everything(derive_seed(cfg.EXPERIMENT.SEED, 0, ctx.rank))
        resume_path = folder.open(load_checkpoint) if ctx.is_main else None
        ctx.barrier()  # rank 0 has recovered the folder's last commit
        if not ctx.is_main and args.resume:
            resume_path = next((p for p in (os.path.join(run_dir, f) for f in ("interrupted", "latest"))
                                if os.path.isfile(p)), None)
        state, changes = None, {}
        if resume_path:
            state = load_checkpoint(resume_path, map_location=ctx.device)
            changes = check_resume_config(cfg, state, resume_path)
        spec, distiller, loaders, transforms, generator = build.build_run(cfg, ctx, seed=cfg.EXPERIMENT.SEED)
        check_subset(cfg, loaders[0])
        ctx.barrier()
        logger = None
        if ctx.is_main:
            folder.prepare_fresh()
            logger = RunLogger(cfg, run_dir, resume=state is not None)  # fails early without wandb credentials
            write_start_files(run_dir, cfg, args, argv, ctx, state, changes)
        started = True
        ctx.barrier()
        trainer = Trainer(cfg, distiller, loaders, transforms, ctx, run_dir=run_dir, logger=logger,
                          generator=generator, hooks=default_hooks(logger) + plugin_hooks(cfg))
        dry_run(trainer, distiller, cfg)
        extra = distiller.get_extra_parameters()
        if logger is not None:
            logger.text(f"run {run_dir}: {cfg.DISTILLER.TYPE} {teacher_label(cfg)} -> {cfg.DISTILLER.STUDENT} on "
                        f"{cfg.DATASET.TYPE} ({len(loaders[0].dataset)} train images), world size {ctx.world_size}, "
                        f"device {ctx.device}, extra parameters {extra}")
            if changes:
                logger.text(f"resumed with changed settings: {json.dumps(changes)}")
        if state is not None:
            trainer.load_state(state)
            where = f"epoch {trainer.start_epoch}" + (f" step {trainer.start_step}" if trainer.start_step else "")
            if ctx.is_main:
                log.info(f"resuming '{run_dir}' from {os.path.basename(resume_path)} at {where}")
        elif distiller.teacher is not None:
            log_teachers(trainer, cfg, logger)
        try:
            best = trainer.train()
        except StopRequested as stop:
            if ctx.is_main:
                print(f"stopped by signal; saved '{stop.path}'; continue with: {command(args, ctx.world_size)}",
                      file=sys.stderr, flush=True)
            return INTERRUPTED_EXIT
        finally:
            if logger is not None:
                logger.close()
        if ctx.is_main and trainer.stopped_after is not None:
            log.info(f"stopped after epoch {trainer.stopped_after} at a hook's request (committed); best test top-1 "
                     f"{best:.2f}; continue with: {command(args, ctx.world_size)}")
        elif ctx.is_main:
            log.info(f"best test top-1 {best:.2f}; run folder {run_dir}")
        return 0
    except HardStop:
        print(f"error: stopped by a second signal without saving; the last epoch-end checkpoint is intact; "
              f"continue with: {command(args, ctx.world_size if ctx else 1)}", file=sys.stderr, flush=True)
        return INTERRUPTED_EXIT
    except OSError as e:
        if isinstance(e, MdistillerError):
            raise
        path = getattr(e, "filename", None) or run_dir
        resumable = any(os.path.isfile(os.path.join(run_dir, f)) for f in ("latest", "interrupted"))
        world = ctx.world_size if ctx else 1
        then = (f"then continue with: {command(args, world)}" if resumable
                else f"then start again with: {command(args, world, resume=False)}")
        raise RunFolderError(rf.describe_os_error(e, path, then=then)) from e
    finally:
        folder.close(failed_early=not started)
        if ctx is not None:
            shutdown_distributed()


@contextlib.contextmanager
def startup_signals():
    """SIGTERM before the trainer's own handlers (during start-up) ends like Ctrl-C: the
    folder a failed start created is removed and one line says how to start again."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)




def train(cfg_file=None, opts=(), resume=False, overwrite=False, debug=False, quiet=False, argv=None):
    """Load the config ``cfg_file`` + ``opts`` (KEY VALUE strings) and run it: the one
    entry to training for the tools and the tests. Returns the exit code: 0, 2 after a
    one-line ``error:`` on stderr, 130 when stopped by a signal."""
    opts = [str(o) for o in opts]
    args = SimpleNamespace(cfg=cfg_file or "", opts=opts, resume=resume, overwrite=overwrite)
    if argv is None:
        argv = (["--cfg", cfg_file] if cfg_file else []) + (["--resume"] if resume else []) + \
            (["--overwrite"] if overwrite else []) + opts
    main_rank = os.environ.get("RANK", "0") == "0"
    # under torchrun, rank 0 alone prints warnings and messages
    with user_errors(debug, quiet=not main_rank) as result, startup_signals():
        try:
            cfg = load_cfg(cfg_file or None, opts)
            check_hook_names(list(cfg.EXPERIMENT.HOOKS))  # the plugins are imported: a typo fails now
            with setup_logging(cfg.LOG.LEVEL, quiet=quiet or not main_rank), cpu_threads(cfg.SOLVER.DEVICE):
                result["code"] = run(cfg, args, argv)  # cpu_threads: idle cores only, on a shared machine
        except KeyboardInterrupt:  # a signal before the trainer's handlers are set
            print(f"error: interrupted during start-up; nothing of this start was saved; start again with: "
                  f"{command(args, resume=False)}", file=sys.stderr, flush=True)
            result["code"] = INTERRUPTED_EXIT
    return result.get("code", 0)
