"""``python3 tools/train_ours.py --cfg FILE [--resume] [--overwrite] [KEY VALUE ...]``

Trains a teacher (``DISTILLER.TYPE NONE``) or distils a student, on one device or under
``torchrun``. Everything that can be wrong with the input (config, names, files, data) is
checked before the first step and reported as one line on stderr.
"""

import argparse
import json
import os
import shutil
import sys

import torch

from ..engine.cfg import diff_cfg, load_cfg
from ..engine.threads import cpu_threads
from ..utils.errors import CheckpointError, ConfigError, MdistillerError
from .common import add_debug_flag, user_errors

# keys a resumed run may change (logging, workers, device, more epochs, how batches reach the device)
RESUME_FREE_KEYS = ("LOG.", "DATASET.NUM_WORKERS", "SOLVER.EPOCHS", "SOLVER.DEVICE", "SOLVER.PREFETCH",
                    "SOLVER.COMPILE_MODE")
RUN_FILES = ("config.yaml", "metrics.jsonl", "latest", "interrupted")
INTERRUPTED_EXIT = 130


def parse_args(argv):
    p = argparse.ArgumentParser(description="Train or distil an image classifier.")
    p.add_argument("--cfg", type=str, default="", help="YAML config file")
    p.add_argument("--resume", action="store_true", help="continue the run in the config's run folder")
    p.add_argument("--overwrite", action="store_true", help="delete an existing run folder and start afresh")
    add_debug_flag(p)
    p.add_argument("opts", default=None, nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    return p.parse_args(argv)


def run_dir_of(cfg):
    name = cfg.EXPERIMENT.NAME or cfg.EXPERIMENT.TAG
    return os.path.join(cfg.LOG.PREFIX, cfg.EXPERIMENT.PROJECT, name)


def check_run_dir(run_dir, resume, overwrite):
    """Refuse to reuse a run folder unless resuming or overwriting; pick the resume file."""
    used = os.path.isdir(run_dir) and any(os.path.exists(os.path.join(run_dir, f)) for f in RUN_FILES)
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other; pass one of them")
    if resume:
        for name in ("interrupted", "latest"):
            path = os.path.join(run_dir, name)
            if os.path.isfile(path):
                return path
        raise CheckpointError(f"--resume: no checkpoint ('latest' or 'interrupted') in '{run_dir}'; "
                              f"start without --resume")
    if used and not overwrite:
        raise ConfigError(f"run folder '{run_dir}' is already used by another run; pass --resume to continue it, "
                          f"--overwrite to replace it, or set EXPERIMENT.NAME to a new name")
    return None


def check_resume_config(cfg, state, path):
    saved = state.get("config")
    if saved is None:
        return
    differ = [k for k in diff_cfg(saved, cfg) if not k.startswith(RESUME_FREE_KEYS)]
    if differ:
        raise ConfigError(f"--resume: checkpoint '{path}' was written with a different config "
                          f"(differs in {', '.join(differ[:8])}); use the original config or start a new run")


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
    from ..engine.trainer import StopRequested, Trainer
    from ..engine.utils import derive_seed, provenance, seed_everything, set_deterministic

    ctx = init_distributed(cfg.SOLVER.DEVICE)
    try:
        if cfg.SOLVER.BATCH_SIZE % ctx.world_size:
            raise ConfigError(f"SOLVER.BATCH_SIZE {cfg.SOLVER.BATCH_SIZE} (the global batch) does not divide by "
                              f"{ctx.world_size} processes; choose a multiple of {ctx.world_size}")
        if cfg.SOLVER.AMP == "fp16" and ctx.device.type != "cuda":
            raise ConfigError("SOLVER.AMP fp16 needs CUDA (its gradient scaler); use SOLVER.AMP bf16 on CPU")
        set_deterministic(cfg.EXPERIMENT.DETERMINISTIC)
        seed_everything(derive_seed(cfg.EXPERIMENT.SEED, 0, ctx.rank))
        run_dir = run_dir_of(cfg)
        resume_path = check_run_dir(run_dir, args.resume, args.overwrite)
        state = None
        if resume_path:
            state = load_checkpoint(resume_path, map_location=ctx.device)
            check_resume_config(cfg, state, resume_path)
        spec, distiller, loaders, transforms, generator = build_run(cfg, ctx, seed=cfg.EXPERIMENT.SEED)
        ctx.barrier()
        if ctx.is_main:
            if args.overwrite and os.path.isdir(run_dir):
                shutil.rmtree(run_dir)
            os.makedirs(run_dir, exist_ok=True)
            # on resume only RESUME_FREE_KEYS may differ (e.g. more epochs): record them
            with open(os.path.join(run_dir, "config.yaml"), "w") as f:
                f.write(cfg.dump())
            if state is None:
                with open(os.path.join(run_dir, "provenance.json"), "w") as f:
                    json.dump(provenance(cfg, argv, ctx.world_size), f, indent=2)
        ctx.barrier()
        logger = RunLogger(cfg, run_dir, resume=state is not None) if ctx.is_main else None
        trainer = Trainer(cfg, distiller, loaders, transforms, ctx, run_dir=run_dir, logger=logger,
                          generator=generator)
        dry_run(trainer, distiller, cfg)
        extra = distiller.get_extra_parameters()
        if logger is not None:
            logger.text(f"run {run_dir}: {cfg.DISTILLER.TYPE} {cfg.DISTILLER.TEACHER} -> {cfg.DISTILLER.STUDENT} on "
                        f"{cfg.DATASET.TYPE} ({len(loaders[0].dataset)} train images), world size {ctx.world_size}, "
                        f"device {ctx.device}, extra parameters {extra}")
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
            launcher = f"torchrun --nproc_per_node {ctx.world_size}" if ctx.distributed else "python3"
            cmd = " ".join([launcher, "tools/train_ours.py", f"--cfg {args.cfg}" if args.cfg else "", "--resume"]
                           + list(args.opts or []))
            if ctx.is_main:
                print(f"stopped by signal; saved '{stop.path}'; continue with: {' '.join(cmd.split())}",
                      file=sys.stderr, flush=True)
            return INTERRUPTED_EXIT
        finally:
            if logger is not None:
                logger.close()
        if ctx.is_main:
            print(f"best test top-1 {best:.2f}; run folder {run_dir}", flush=True)
        return 0
    finally:
        shutdown_distributed()


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    # under torchrun, rank 0 alone prints warnings
    with user_errors(args.debug, quiet=os.environ.get("RANK", "0") != "0") as result:
        cfg = load_cfg(args.cfg or None, args.opts)
        with cpu_threads(cfg.SOLVER.DEVICE):  # idle cores only, on a shared machine
            result["code"] = train(cfg, args, argv)
    return result.get("code", 0)


if __name__ == "__main__":
    sys.exit(main())
