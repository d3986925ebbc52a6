"""``python3 tools/eval.py -m MODEL -c CKPT -d DATASET [-bs N]`` (mdistiller's flags).

``-c`` takes a checkpoint file (a ``{"model": state_dict}`` file, one of our run files, or
an mdistiller distiller checkpoint), ``pretrain`` (mdistiller's teacher location), or a run
folder, whose ``student_best`` (``--checkpoint last``: ``student_latest``, ``ema``:
``student_ema``, the EMA of the student) is evaluated with the model and dataset of its config.yaml.
The line it prints names the checkpoint file and, for a run's files, the epoch and how it
was selected (on the holdout with ``DATASET.HOLDOUT``, else on the test set: optimistic).
An exported student (``student.onnx``, ``.torchscript``, ``.pt2`` from tools/export.py) is
evaluated with the config.yaml beside it (or ``--cfg``/``-d``); ONNX runs in onnxruntime.
"""

import argparse
import json
import os
import re
import sys

import torch
from torch.utils.data import DataLoader

from ..config.load import load_cfg
from ..dataset import build_batch_transform, get_dataset
from ..engine.build import teacher_checkpoint_path
from ..runs.selection import TEST, describe
from ..engine.trainer import evaluate
from ..export.formats import format_of, load_exported
from ..export.run_export import CHECKPOINTS, in_batches, run_checkpoint_path
from ..models import build_model
from ..runs.checkpoint import load_checkpoint, load_model_weights
from ..utils.dist import DistContext, resolve_device
from ..utils.errors import CheckpointError, ConfigError
from .common import ArgumentParser, add_debug_flag, number, run_tool


def parse_args(argv):
    p = ArgumentParser(description="Evaluate a classifier checkpoint on a validation set.")
    p.add_argument("-m", "--model", type=str, default="", help="model registry name (default: from the run folder)")
    p.add_argument("-c", "--ckpt", type=str, default="pretrain", help="checkpoint file, run folder, or 'pretrain'")
    p.add_argument("-d", "--dataset", type=str, default="", help="dataset registry name (default cifar100)")
    p.add_argument("-bs", "--batch-size", type=number(int, low=1), default=64, help="evaluation batch size")
    p.add_argument("--checkpoint", choices=sorted(CHECKPOINTS), default="best",
                   help="with a run folder: best = student_best (default), last = student_latest, ema = student_ema "
                        "(the EMA of the student, SOLVER.EMA)")
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
        best = run_checkpoint_path(ckpt, getattr(args, "checkpoint", "best"))
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


def selection_of(path, obj=None):
    """How the run file ``path`` was chosen: ``"epoch E, selected on ..."`` for
    ``best``/``student_best``, ``"epoch E, the last finished epoch"`` for ``latest`` files,
    ``"epoch E"`` for ``epoch_N``/``student_N``; "" for other files. ``obj``: the file, if
    already loaded."""
    name = os.path.basename(path)
    if not re.fullmatch(r"(student_)?(best|latest|ema|\d+)|epoch_\d+", name):
        return ""
    obj = load_checkpoint(path) if obj is None else obj
    epoch = obj.get("epoch") if isinstance(obj, dict) else None
    if not isinstance(epoch, int):
        return ""
    if name == "student_ema" or obj.get("weights") == "ema":
        how = f", {describe(obj.get('selected_on', TEST))}" if name.endswith("best") else ""
        return f"epoch {epoch}, the EMA of the student (decay {obj.get('ema_decay')}){how}"
    if name.endswith("best"):  # files written before holdouts existed were selected on the test set
        return f"epoch {epoch}, {describe(obj.get('selected_on', TEST))}"
    return f"epoch {epoch}, the last finished epoch" if name.endswith("latest") else f"epoch {epoch}"


def evaluate_checkpoint(args):
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
    obj = load_checkpoint(ckpt)
    load_model_weights(model, ckpt, name, part="student", obj=obj)
    model.to(device).eval()
    loader = DataLoader(spec.val, batch_size=args.batch_size, shuffle=False, num_workers=args.workers)
    transform = build_batch_transform(spec, 1, train=False, device=device)
    res = evaluate(lambda x: model(x)[0], loader, transform, DistContext(device=device))
    how = selection_of(ckpt, obj)
    print(f"{name} {ckpt} on {cfg.DATASET.TYPE}: top-1 {res['top1']:.2f}  top-5 {res['top5']:.2f}  "
          f"loss {res['loss']:.4f}  ({res['count']} images)" + (f"; {how}" if how else ""))
    return 0


def evaluate_exported(args):
    """Top-1 of an exported student file on the dataset of the config beside it (or --cfg/-d)."""
    folder = os.path.dirname(os.path.abspath(args.ckpt))
    if not args.cfg and os.path.isfile(os.path.join(folder, "config.yaml")):
        args.cfg = os.path.join(folder, "config.yaml")
    cfg, _, path = resolve(args)
    card = {}
    try:
        with open(os.path.join(folder, "model_card.json"), encoding="utf-8") as f:
            card = json.load(f)
    except (OSError, ValueError):
        pass
    run = load_exported(path)
    uint8_input = card.get("input", {}).get("dtype") == "uint8" or run.input_dtype == torch.uint8
    spec = get_dataset(cfg)
    loader = DataLoader(spec.val, batch_size=args.batch_size, shuffle=False, num_workers=args.workers)
    transform = build_batch_transform(spec, 1, train=False, device="cpu")
    fixed = card.get("input", {}).get("shape", [None])[0]  # a fixed batch size: padded chunks

    def model_fn(x):
        return in_batches(run, x, fixed) if isinstance(fixed, int) else run(x)

    if uint8_input:  # the graph normalises: feed the loader's uint8 images as they are
        transform = dict
    res = evaluate(model_fn, loader, transform, DistContext(device=torch.device("cpu")))
    print(f"{os.path.basename(path)} on {cfg.DATASET.TYPE}: top-1 {res['top1']:.2f}  top-5 {res['top5']:.2f}  "
          f"loss {res['loss']:.4f}  ({res['count']} images)")
    return 0


def main(argv=None):
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    body = evaluate_exported if format_of(args.ckpt) and not os.path.isdir(args.ckpt) else evaluate_checkpoint
    return run_tool(lambda: body(args), args.debug, args.quiet)


if __name__ == "__main__":
    sys.exit(main())
