"""``python3 tools/train_ours.py --cfg FILE [--resume] [--overwrite] [KEY VALUE ...]``

Trains a teacher (``DISTILLER.TYPE NONE``) or distils a student, on one device or under
``torchrun``. Everything that can be wrong with the input (config, names, files, data) is
checked before the first step and reported as one line on stderr.
"""

import argparse
import contextlib
import json
import os
import shlex
import signal
import sys

import torch

from ..engine.cfg import cfg_to_dict, diff_cfg, get_key, load_cfg
from ..engine.runfolder import RunFolderError, run_dir_of
from ..engine.threads import cpu_threads
from ..utils.errors import CheckpointError, ConfigError, MdistillerError
from .common import ArgumentParser, add_debug_flag, user_errors

# keys a resumed run may change: logging, workers, device, more epochs, and what a user
# needs after a non-finite loss (a lower learning rate, no mixed precision) and how
# batches reach the device
RESUME_FREE_KEYS = ("LOG.", "DATASET.NUM_WORKERS", "SOLVER.EPOCHS", "SOLVER.DEVICE", "SOLVER.LR", "SOLVER.AMP",
                    "SOLVER.PREFETCH", "SOLVER.COMPILE_MODE")
INTERRUPTED_EXIT = 130
FLAGS = ("--resume", "--overwrite", "--debug")


def parse_args(argv):
    p = ArgumentParser(description="Train or distil an image classifier.")
    p.add_argument("--cfg", type=str, default="", help="YAML config file")
    p.add_argument("--resume", action="store_true", help="continue the run in the config's run folder")
    p.add_argument("--overwrite", action="store_true", help="delete an existing run folder and start afresh")
    add_debug_flag(p)
    p.add_argument("opts", default=None, nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    args = p.parse_args(argv)
    # the flags may also come among or after the KEY VALUE pairs (where a key would be)
    opts, i = list(args.opts or []), 0
    args.opts = []
    while i < len(opts):
        if opts[i] in FLAGS:
            setattr(args, opts[i][2:], True)
            i += 1
        else:
            args.opts += opts[i:i + 2]
            i += 2
    return args


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
        from ..engine import runfolder as rf

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
            print(f"note: '{run_dir}' holds no checkpoint yet (the run stopped before its first epoch ended); "
                  f"starting it from epoch 1", flush=True)
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


def check_resume_config(cfg, state, path):
    """Only RESUME_FREE_KEYS may differ from the checkpoint's config; returns the changes
    ``{key: [old, new]}`` (recorded in the run's config history)."""
    saved = state.get("config")
    if saved is None:
        return {}
    changed = diff_cfg(saved, cfg)
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
    from ..engine.runfolder import atomic_write_text
    from ..engine.utils import provenance

    # on resume only RESUME_FREE_KEYS may differ (e.g. more epochs): record them
    atomic_write_text(os.path.join(run_dir, "config.yaml"), cfg.dump())
    if state is None:
        atomic_write_text(os.path.join(run_dir, "provenance.json"),
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
        raise ConfigError(f"{cfg.DISTILLER.TYPE} cannot train {cfg.DISTILLER.TEACHER} -> {cfg.DISTILLER.STUDENT} "
                          f"on {cfg.DATASET.TYPE}: {first[:200]}") from e
    finally:
        distiller.load_state_dict(saved)


def train(cfg, args, argv):
    from ..engine.build import build_run
    from ..engine.checkpoint import load_checkpoint
    from ..engine.dist import init_distributed, shutdown_distributed
    from ..engine.loggers import RunLogger
    from ..engine.runfolder import describe_os_error
    from ..engine.trainer import HardStop, StopRequested, Trainer
    from ..engine.utils import derive_seed, seed_everything, set_deterministic

    run_dir = run_dir_of(cfg)
    # one process per run folder: the lock comes before anything else is checked or written
    folder = RunFolder(run_dir, args, is_main=os.environ.get("RANK", "0") == "0")
    started = False
    ctx = None
    try:
        ctx = init_distributed(cfg.SOLVER.DEVICE)
        if cfg.SOLVER.BATCH_SIZE % ctx.world_size:
            raise ConfigError(f"SOLVER.BATCH_SIZE {cfg.SOLVER.BATCH_SIZE} (the global batch) does not divide by "
                              f"{ctx.world_size} processes; choose a multiple of {ctx.world_size}")
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
        spec, distiller, loaders, transforms, generator = build_run(cfg, ctx, seed=cfg.EXPERIMENT.SEED)
        if len(loaders[0]) == 0:
            raise ConfigError(f"DATASET.SUBSET {cfg.DATASET.SUBSET} leaves {len(loaders[0].dataset)} training images, "
                              f"less than one batch of SOLVER.BATCH_SIZE {cfg.SOLVER.BATCH_SIZE}; raise DATASET.SUBSET "
                              f"or lower SOLVER.BATCH_SIZE")
        ctx.barrier()
        logger = None
        if ctx.is_main:
            folder.prepare_fresh()
            logger = RunLogger(cfg, run_dir, resume=state is not None)  # fails early without wandb credentials
            write_start_files(run_dir, cfg, args, argv, ctx, state, changes)
        started = True
        ctx.barrier()
        trainer = Trainer(cfg, distiller, loaders, transforms, ctx, run_dir=run_dir, logger=logger,
                          generator=generator)
        dry_run(trainer, distiller, cfg)
        extra = distiller.get_extra_parameters()
        if logger is not None:
            logger.text(f"run {run_dir}: {cfg.DISTILLER.TYPE} {cfg.DISTILLER.TEACHER} -> {cfg.DISTILLER.STUDENT} on "
                        f"{cfg.DATASET.TYPE} ({len(loaders[0].dataset)} train images), world size {ctx.world_size}, "
                        f"device {ctx.device}, extra parameters {extra}")
            if changes:
                logger.text(f"resumed with changed settings: {json.dumps(changes)}")
        if state is not None:
            trainer.load_state(state)
            where = f"epoch {trainer.start_epoch}" + (f" step {trainer.start_step}" if trainer.start_step else "")
            if ctx.is_main:
                print(f"resuming '{run_dir}' from {os.path.basename(resume_path)} at {where}", flush=True)
        elif distiller.teacher is not None:
            acc = trainer.evaluate_teacher()
            msg = (f"teacher {cfg.DISTILLER.TEACHER} test top-1 {acc['top1']:.2f} top-5 {acc['top5']:.2f} "
                   f"on {acc['count']} images")
            if logger is not None:
                print(msg, flush=True)
                logger.text(msg)
                logger.scalars({"teacher/top1": acc["top1"], "teacher/top5": acc["top5"]}, 0)
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
        if ctx.is_main:
            print(f"best test top-1 {best:.2f}; run folder {run_dir}", flush=True)
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
        raise RunFolderError(describe_os_error(e, path, then=then)) from e
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


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    # under torchrun, rank 0 alone prints warnings
    with user_errors(args.debug, quiet=os.environ.get("RANK", "0") != "0") as result, startup_signals():
        try:
            cfg = load_cfg(args.cfg or None, args.opts)
            with cpu_threads(cfg.SOLVER.DEVICE):  # idle cores only, on a shared machine
                result["code"] = train(cfg, args, argv)
        except KeyboardInterrupt:  # a signal before the trainer's handlers are set
            print(f"error: interrupted during start-up; nothing of this start was saved; start again with: "
                  f"{command(args, resume=False)}", file=sys.stderr, flush=True)
            result["code"] = INTERRUPTED_EXIT
    return result.get("code", 0)


if __name__ == "__main__":
    sys.exit(main())
