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
from ..distillers.ensemble import TeacherEnsemble, teacher_label, teacher_names
from ..dataset.loader import check_batch, check_subset
from ..runs import folder as rf
from ..runs.checkpoint import file_sha256, load_checkpoint
from ..runs.folder import RunFolderError, run_dir_of
from ..runs.loggers import RunLogger, setup_logging
from ..utils.dist import init_distributed, shutdown_distributed
from ..utils.errors import CheckpointError, ConfigError, MdistillerError, NonFiniteLossError, user_errors
from ..utils.runtime import derive_seed, provenance, seed_everything, set_deterministic
from ..utils.threads import cpu_threads
from . import build
from .hooks import HardStop, StopRequested, check_hook_names, default_hooks, plugin_hooks
from ..runs.selection import report
from .trainer import Trainer

log = logging.getLogger("mdistiller.train")

# keys a resumed run may change (compared whole, never as prefixes): logging (the LOG
# section), workers, device, more epochs, how batches reach the device ...
RESUME_FREE_KEYS = ("DATASET.NUM_WORKERS", "SOLVER.EPOCHS", "SOLVER.DEVICE", "SOLVER.PREFETCH", "SOLVER.COMPILE_MODE")
RESUME_FREE_SECTIONS = ("LOG",)
# ... and, only after a non-finite loss stopped the run, what a user needs then: a lower
# learning rate, no (or other) mixed precision
RESUME_AFTER_NAN_KEYS = ("SOLVER.LR", "SOLVER.AMP")
#: in the run folder while a run stopped by a non-finite loss has not been resumed
NONFINITE_MARK = "nonfinite_loss.json"
INTERRUPTED_EXIT = 130


def ls_flag_args(ls_flags):
    """The command-line form of the LS repository's flags (see :func:`~mdistiller.config.load.apply_ls_flags`)."""
    ls_flags = ls_flags or {}
    out = ["--logit-stand"] if ls_flags.get("logit_stand") else []
    for flag, key in (("--base-temp", "base_temp"), ("--kd-weight", "kd_weight")):
        if ls_flags.get(key) is not None:
            out += [flag, f"{ls_flags[key]:g}"]
    return out


def command(args, world_size=1, resume=True):
    """The shell-quoted command that continues (or restarts) this run."""
    launcher = ["torchrun", "--nproc_per_node", str(world_size)] if world_size > 1 else ["python3"]
    cfg = ["--cfg", args.cfg] if args.cfg else []
    return shlex.join(launcher + ["tools/train_ours.py"] + cfg + (["--resume"] if resume else [])
                      + ls_flag_args(getattr(args, "ls_flags", None)) + list(args.opts))


class RunFolder:
    """Open the run folder for this process: refuse a folder in use (lock) or not a run
    folder, recover its last committed epoch, and decide between a fresh start and a
    resume. The lock is held until :meth:`close`."""

    def __init__(self, run_dir, args, is_main=True):
        self.rf, self.run_dir, self.args, self.is_main = rf, run_dir, args, is_main
        self.created, self.lock, self.fresh = [], None, True
        if args.resume and args.overwrite:
            raise ConfigError("--resume and --overwrite contradict each other; pass one of them")
        if getattr(args, "new_teacher", False) and not args.resume:
            raise ConfigError("--new-teacher is for --resume (a new run records whichever teacher it starts with); "
                              "drop it or add --resume")
        if not is_main:
            return
        exists = os.path.isdir(run_dir)
        if os.path.exists(run_dir) and not exists:
            raise RunFolderError(f"run folder '{run_dir}' exists as a file; set EXPERIMENT.NAME to another name")
        if exists and not rf.is_run_folder(run_dir) and os.listdir(run_dir):
            if not rf.saved_files(run_dir):
                raise RunFolderError(f"'{run_dir}' is not a run folder (it holds other files and no {rf.MARKER} "
                                     f"marker); nothing there is used or deleted; set EXPERIMENT.NAME to a new name")
            if args.overwrite:  # a run folder of an older version, or someone's copy
                raise RunFolderError(f"'{run_dir}' has a checkpoint but no {rf.MARKER} marker (an older version's "
                                     f"run folder?), so --overwrite does not delete it; --resume it, or move it "
                                     f"away yourself")
        self.created = rf.create(run_dir)
        try:
            self.lock = rf.RunLock(run_dir).acquire()
        except BaseException:
            rf.remove_created(self.created)
            raise

    def open(self, load):
        """Returns the checkpoint path to resume from (or None for a fresh start)."""
        if not self.is_main:
            return None
        rf, run_dir, args = self.rf, self.run_dir, self.args
        if not args.overwrite:  # --overwrite reads nothing of what it replaces
            rf.recover(run_dir, load)
        checkpoint = next((os.path.join(run_dir, f) for f in rf.CHECKPOINTS[::-1]
                           if os.path.isfile(os.path.join(run_dir, f))), None)
        saved = rf.saved_files(run_dir)  # the one test of an empty run folder
        if args.resume:
            if not checkpoint and saved:  # never treated as empty: rebuilt from epoch_N, or refused
                checkpoint = rf.rebuild_latest(run_dir, load)
                rf.recover(run_dir, load)
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
        elif (checkpoint or saved) and not args.overwrite:
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
    """Only RESUME_FREE_KEYS, the RESUME_FREE_SECTIONS and, after a non-finite loss
    (NONFINITE_MARK in the run folder), RESUME_AFTER_NAN_KEYS may differ from the
    checkpoint's config; returns the changes ``{key: [old, new]}`` (named in a message and
    recorded in the run's config history)."""
    saved = state.get("config")
    if saved is None:
        return {}
    changed = [k for k in diff_cfg(saved, cfg) if not added_at_default(saved, cfg, k)]
    after_nan = os.path.isfile(os.path.join(os.path.dirname(path), NONFINITE_MARK))
    allowed = set(RESUME_FREE_KEYS) | (set(RESUME_AFTER_NAN_KEYS) if after_nan else set())
    differ = [k for k in changed if k not in allowed and k.split(".")[0] not in RESUME_FREE_SECTIONS]
    nan_only = [k for k in differ if k in RESUME_AFTER_NAN_KEYS]
    if nan_only and len(nan_only) == len(differ):
        raise ConfigError(f"--resume: {', '.join(nan_only)} may change only after a non-finite loss stopped the run, "
                          f"and none did in '{os.path.dirname(path)}'; use the original value "
                          f"({', '.join(f'{k} {get_key(saved, k)}' for k in nan_only)}) or start a new run")
    if differ:
        free = list(RESUME_FREE_KEYS) + [f"{s}.*" for s in RESUME_FREE_SECTIONS] + \
            [f"{k} (after a non-finite loss)" for k in RESUME_AFTER_NAN_KEYS]
        raise ConfigError(f"--resume: checkpoint '{path}' was written with a different config "
                          f"(differs in {', '.join(differ[:8])}); use the original config or start a new run "
                          f"(only {', '.join(free)} may change on --resume)")
    done = state["interrupted"]["epoch"] - 1 if state.get("interrupted") else state["epoch"]
    if cfg.SOLVER.EPOCHS < done:
        raise ConfigError(f"--resume: SOLVER.EPOCHS {cfg.SOLVER.EPOCHS} is below the {done} epochs already done "
                          f"in '{os.path.dirname(path)}'; set SOLVER.EPOCHS to at least {done}")
    flat_saved = {k: get_key(saved, k) for k in changed}
    return {k: [flat_saved[k], get_key(cfg_to_dict(cfg), k)] for k in changed
            if k.split(".")[0] not in RESUME_FREE_SECTIONS}


def write_start_files(run_dir, cfg, args, argv, ctx, state, changes, split=None, teacher=None):
    # on resume only RESUME_FREE_KEYS may differ (e.g. more epochs): record them
    rf.atomic_write_text(os.path.join(run_dir, "config.yaml"), cfg.dump())
    if split is not None:  # DATASET.HOLDOUT: which training images were held out
        rf.atomic_write_text(os.path.join(run_dir, "split.json"), json.dumps(split))
    prov = os.path.join(run_dir, "provenance.json")
    if state is None or not os.path.isfile(prov):  # a missing one is recreated on resume
        rf.atomic_write_text(prov, json.dumps(provenance(cfg, argv, ctx.world_size), indent=2))
    if changes:
        epoch = state["interrupted"]["epoch"] if state.get("interrupted") else state["epoch"] + 1
        with open(os.path.join(run_dir, "config_history.jsonl"), "a") as f:
            f.write(json.dumps({"from_epoch": epoch, "changed": changes}) + "\n")
        log.info("--resume: continuing with changed settings: " +
                 ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items()))
    if state is not None:  # a non-finite loss allows one resume with a changed LR or AMP
        try:
            os.unlink(os.path.join(run_dir, NONFINITE_MARK))
        except FileNotFoundError:
            pass
    record_teacher(run_dir, teacher)


TEACHER_FILE = "teacher.json"


def teacher_files(teacher):
    """``[{"path", "sha256"}]`` of the teacher's checkpoint files: the one teacher's, or
    each member's of an ensemble (in DISTILLER.TEACHER's order)."""
    members = list(teacher.teachers) if isinstance(teacher, TeacherEnsemble) else [teacher]
    return [{"path": os.path.abspath(t.checkpoint_path),
             "sha256": getattr(t, "checkpoint_sha256", None) or file_sha256(t.checkpoint_path)}
            for t in members if getattr(t, "checkpoint_path", None)]


def teacher_record(run_dir, distiller, args, resume):
    """The teacher checkpoint's path and SHA-256 (``{"teachers": [...]}`` of them for an
    ensemble; None without a file). On resume, a teacher file other than the one the run
    started with is refused unless ``args.new_teacher``; returns ``(record, change)``,
    ``change`` for config_history."""
    files = teacher_files(distiller.teacher) if distiller.teacher is not None else []
    if not files:
        return None, None
    now = files[0] if len(files) == 1 else {"teachers": files}
    if not resume:
        return now, None
    try:
        with open(os.path.join(run_dir, TEACHER_FILE), encoding="utf-8") as f:
            before = json.load(f)
        recorded = before["teachers"] if "teachers" in before else [before]
    except (OSError, ValueError, TypeError, KeyError):
        return now, None
    sha_before = [r.get("sha256") if isinstance(r, dict) else None for r in recorded]
    sha_now = [f["sha256"] for f in files]
    if sha_before == sha_now:
        return now, None
    if not getattr(args, "new_teacher", False):
        i = next((i for i, s in enumerate(sha_now) if i >= len(sha_before) or sha_before[i] != s), 0)
        old = recorded[i] if i < len(recorded) and isinstance(recorded[i], dict) else {}
        raise ConfigError(f"--resume: teacher checkpoint '{files[i]['path']}' is not the file this run started with "
                          f"(SHA-256 {sha_now[i][:12]}..., recorded {str(old.get('sha256'))[:12]}... for "
                          f"'{old.get('path')}' in {TEACHER_FILE}); put the original back, or pass --new-teacher "
                          f"to distil from this one from now on (recorded in config_history.jsonl)")
    return now, ([sha_before[0], sha_now[0]] if len(files) == 1 == len(sha_before) else [sha_before, sha_now])


def record_teacher(run_dir, teacher):
    if teacher is not None:
        rf.atomic_write_text(os.path.join(run_dir, TEACHER_FILE), json.dumps(teacher, indent=2))


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
    clean = False  # every rank ended the same way (finished, or stopped together)
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
        teacher = None
        if ctx.is_main:
            teacher, teacher_change = teacher_record(run_dir, distiller, args, resume=state is not None)
            if teacher_change:
                changes["teacher_sha256"] = teacher_change
        ctx.barrier()
        logger = None
        if ctx.is_main:
            folder.prepare_fresh()
            logger = RunLogger(cfg, run_dir, resume=state is not None)  # fails early without wandb credentials
            write_start_files(run_dir, cfg, args, argv, ctx, state, changes, spec.split, teacher)
        started = True
        ctx.barrier()
        trainer = Trainer(cfg, distiller, loaders, transforms, ctx, run_dir=run_dir, logger=logger,
                          generator=generator, hooks=default_hooks(logger) + plugin_hooks(cfg))
        dry_run(trainer, distiller, cfg)
        extra = distiller.get_extra_parameters()
        if logger is not None:
            held = f", {len(spec.holdout)} held out" if spec.holdout is not None else ""
            logger.text(f"run {run_dir}: {cfg.DISTILLER.TYPE} {teacher_label(cfg)} -> {cfg.DISTILLER.STUDENT} on "
                        f"{cfg.DATASET.TYPE} ({len(loaders[0].dataset)} train images{held}), world size "
                        f"{ctx.world_size}, device {ctx.device}, extra parameters {extra}")
            if changes:
                logger.text(f"resumed with changed settings: {json.dumps(changes)}")
        if state is not None:
            trainer.load_state(state)
            where = f"epoch {trainer.start_epoch}" + (f" step {trainer.start_step}" if trainer.start_step else "")
            if ctx.is_main and trainer.start_epoch > cfg.SOLVER.EPOCHS:
                log.info(f"'{run_dir}' has finished all {cfg.SOLVER.EPOCHS} epochs (SOLVER.EPOCHS); nothing to "
                         f"train (raise SOLVER.EPOCHS to train more)")
            elif ctx.is_main:
                log.info(f"resuming '{run_dir}' from {os.path.basename(resume_path)} at {where}")
        elif distiller.teacher is not None:
            log_teachers(trainer, cfg, logger)
        try:
            best = trainer.train()
        except NonFiniteLossError as e:
            if ctx.is_main:  # the one resume that may lower SOLVER.LR or change SOLVER.AMP
                rf.atomic_write_text(os.path.join(run_dir, NONFINITE_MARK), json.dumps({"error": str(e)}) + "\n")
            raise
        except StopRequested as stop:
            clean = True  # the stop is agreed: every rank saved and left at the same step
            if ctx.is_main:
                print(f"stopped by signal; saved '{stop.path}'; continue with: {command(args, ctx.world_size)}",
                      file=sys.stderr, flush=True)
            return INTERRUPTED_EXIT
        finally:
            if logger is not None:
                logger.close()
        clean = True
        if ctx.is_main and trainer.stopped_after is not None:
            log.info(f"stopped after epoch {trainer.stopped_after} at a hook's request (committed); "
                     f"{report(best, trainer.best_epoch, trainer.selected_on)}; "
                     f"continue with: {command(args, ctx.world_size)}")
        elif ctx.is_main:
            log.info(f"{report(best, trainer.best_epoch, trainer.selected_on)}; run folder {run_dir}")
        return 0
    except HardStop:
        print(f"error: stopped by a second signal without saving; the last epoch-end checkpoint is intact; "
              f"continue with: {command(args, ctx.world_size if ctx else 1)}", file=sys.stderr, flush=True)
        return INTERRUPTED_EXIT
    except OSError as e:
        if isinstance(e, MdistillerError):
            raise
        path = getattr(e, "filename", None) or run_dir
        resumable = rf.has_checkpoint(run_dir)
        world = ctx.world_size if ctx else 1
        then = (f"then continue with: {command(args, world)}" if resumable
                else f"then start again with: {command(args, world, resume=False)}")
        raise RunFolderError(rf.describe_os_error(e, path, then=then)) from e
    finally:
        folder.close(failed_early=not started)
        if ctx is not None:
            shutdown_distributed(clean)


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




def train(cfg_file=None, opts=(), resume=False, overwrite=False, debug=False, quiet=False, argv=None,
          ls_flags=None, print_config=False, new_teacher=False):
    """Load the config ``cfg_file`` + ``opts`` (KEY VALUE strings) + ``ls_flags`` (the LS
    repository's flags, see :func:`~mdistiller.config.load.apply_ls_flags`) and run it: the one entry to
    training for the tools and the tests. With ``print_config``, print the effective config (the run
    folder's ``config.yaml``) on stdout instead, touching no data, teacher or run folder.
    Returns the exit code: 0, 2 after a one-line ``error:`` on stderr, 130 when stopped by a signal."""
    opts = [str(o) for o in opts]
    args = SimpleNamespace(cfg=cfg_file or "", opts=opts, resume=resume, overwrite=overwrite, ls_flags=ls_flags,
                           new_teacher=new_teacher)
    if argv is None:
        argv = (["--cfg", cfg_file] if cfg_file else []) + (["--resume"] if resume else []) + \
            (["--overwrite"] if overwrite else []) + ls_flag_args(ls_flags) + opts
    main_rank = os.environ.get("RANK", "0") == "0"
    # under torchrun, rank 0 alone prints warnings and messages
    with user_errors(debug, quiet=not main_rank) as result, startup_signals():
        try:
            cfg = load_cfg(cfg_file or None, opts, ls_flags=ls_flags)
            check_hook_names(list(cfg.EXPERIMENT.HOOKS))  # the plugins are imported: a typo fails now
            if print_config:
                if main_rank:
                    sys.stdout.write(cfg.dump())
                    sys.stdout.flush()
                result["code"] = 0
                return 0
            with setup_logging(cfg.LOG.LEVEL, quiet=quiet or not main_rank), cpu_threads(cfg.SOLVER.DEVICE):
                result["code"] = run(cfg, args, argv)  # cpu_threads: idle cores only, on a shared machine
        except KeyboardInterrupt:  # a signal before the trainer's handlers are set
            if args.resume:  # the run's saved epochs are intact: the advice continues it
                print(f"error: interrupted during start-up; nothing saved was changed; continue with: "
                      f"{command(args, resume=True)}", file=sys.stderr, flush=True)
            else:
                print(f"error: interrupted during start-up; nothing of this start was saved; start again with: "
                      f"{command(args, resume=False)}", file=sys.stderr, flush=True)
            result["code"] = INTERRUPTED_EXIT
    return result.get("code", 0)
