"""``python3 tools/eval.py -m MODEL -c CKPT -d DATASET [-bs N]`` (mdistiller's flags).

``-c`` takes a checkpoint file (a ``{"model": state_dict}`` file, one of our run files, or
an mdistiller distiller checkpoint), ``pretrain`` (mdistiller's teacher location), or a run
folder, whose ``student_best`` is evaluated with the model and dataset of its config.yaml.
"""

import argparse
import os
import sys

from torch.utils.data import DataLoader

from ..engine.cfg import load_cfg
from ..utils.errors import CheckpointError, ConfigError
from .common import ArgumentParser, add_debug_flag, number, run_tool


def parse_args(argv):
    p = ArgumentParser(description="Evaluate a classifier checkpoint on a validation set.")
    p.add_argument("-m", "--model", type=str, default="", help="model registry name (default: from the run folder)")
    p.add_argument("-c", "--ckpt", type=str, default="pretrain", help="checkpoint file, run folder, or 'pretrain'")
    p.add_argument("-d", "--dataset", type=str, default="", help="dataset registry name (default cifar100)")
    p.add_argument("-bs", "--batch-size", type=number(int, low=1), default=64, help="evaluation batch size")
    p.add_argument("--cfg", type=str, default="", help="config file for dataset settings (ROOT, SUBSET, ...)")
    p.add_argument("--device", type=str, default="auto", help="auto, cpu or cuda")
    p.add_argument("--workers", type=number(int, low=0, what="0 = load in the main process"), default=2,
                   help="data-loader workers")
    add_debug_flag(p)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p.parse_args(argv)


def resolve(args):
    """(cfg, model name, checkpoint path) from the flags, reading a run folder if given."""
    cfg_path, ckpt = args.cfg or None, args.ckpt
    if ckpt != "pretrain" and not os.path.exists(ckpt):
        raise CheckpointError(f"checkpoint -c '{ckpt}' does not exist; give a checkpoint file, a run folder "
                              f"or 'pretrain'")
    if os.path.isdir(ckpt):
        run_cfg = os.path.join(ckpt, "config.yaml")
        best = os.path.join(ckpt, "student_best")
        if not os.path.isfile(best):
            raise CheckpointError(f"run folder '{ckpt}' has no student_best checkpoint; has the run finished an epoch?")
        if not cfg_path and not os.path.isfile(run_cfg) and not args.dataset:
            raise ConfigError(f"run folder '{ckpt}' has no config.yaml, so its dataset and model are unknown; pass "
                              f"--cfg with the run's config, or -d DATASET (and -m MODEL)")
        cfg_path = cfg_path or (run_cfg if os.path.isfile(run_cfg) else None)
        ckpt = best
    opts = list(args.opts or [])
    if args.dataset:
        opts += ["DATASET.TYPE", args.dataset]
    opts += ["SOLVER.DEVICE", args.device, "DATASET.NUM_WORKERS", str(args.workers),
             "DATASET.TEST.BATCH_SIZE", str(args.batch_size)]
    cfg = load_cfg(cfg_path, opts)
    return cfg, args.model or cfg.DISTILLER.STUDENT, ckpt


def evaluate_checkpoint(args):
    from ..dataset import build_batch_transform, get_dataset
    from ..engine.build import teacher_checkpoint_path
    from ..engine.checkpoint import load_model_weights
    from ..engine.dist import DistContext, resolve_device
    from ..engine.trainer import evaluate
    from ..models import build_model

    cfg, name, ckpt = resolve(args)
    device = resolve_device(cfg.SOLVER.DEVICE)
    spec = get_dataset(cfg)
    model = build_model(name, spec.model_family, spec.num_classes, spec.image_size)
    if ckpt == "pretrain":
        cfg.defrost()
        cfg.DISTILLER.TEACHER = name
        ckpt = teacher_checkpoint_path(cfg, spec.model_family)
        if not ckpt:
            raise CheckpointError(f"{name} has no published checkpoint (mdistiller publishes CIFAR-100 teachers); "
                                  f"pass -c with a checkpoint file or a run folder")
        if not os.path.isfile(ckpt):
            raise CheckpointError(f"the published checkpoint of {name} is not installed at '{ckpt}'; run python3 "
                                  f"tools/download_ckpts.py or pass -c FILE")
    load_model_weights(model, ckpt, name, part="student")
    model.to(device).eval()
    loader = DataLoader(spec.val, batch_size=args.batch_size, shuffle=False, num_workers=args.workers)
    transform = build_batch_transform(spec, 1, train=False, device=device)
    res = evaluate(lambda x: model(x)[0], loader, transform, DistContext(device=device))
    print(f"{name} {os.path.basename(ckpt)} on {cfg.DATASET.TYPE}: top-1 {res['top1']:.2f}  top-5 {res['top5']:.2f}  "
          f"loss {res['loss']:.4f}  ({res['count']} images)")
    return 0


def main(argv=None):
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    return run_tool(lambda: evaluate_checkpoint(args), args.debug, args.quiet)


if __name__ == "__main__":
    sys.exit(main())
