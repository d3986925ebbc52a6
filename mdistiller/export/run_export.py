"""A run folder's student -> an exported file, ``model_card.json`` and ``README.md``.

:func:`export_run` builds the student from the run's ``config.yaml``, loads the chosen
checkpoint, exports the logits-only wrapper, and proves parity before anything is put in
place: the first ``images`` images of the run's own test set and ``random_inputs`` random
inputs go through PyTorch (``student(x)[0]``) and through the exported file (onnxruntime
for ONNX); the maximum absolute logit difference must not exceed ``tolerance``. Everything
is written in a hidden temporary folder inside the output folder and renamed into place
only after that check, so a failure leaves the output folder as it was.
"""

import datetime
import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import warnings

import torch

import mdistiller

from ..config.load import cfg_to_dict, load_cfg
from ..dataset import build_batch_transform, get_dataset
from ..models import build_model
from ..runs.checkpoint import file_sha256, load_checkpoint, load_model_weights
from ..runs.folder import atomic_write_text, describe_os_error, missing_folders, remove_empty
from ..runs.loggers import read_metrics
from ..runs.selection import HOLDOUT, selected_on
from ..utils.errors import CheckpointError, ConfigError, MdistillerError
from ..utils.runtime import git_commit
from .cost import count_flops, count_parameters
from .formats import DEFAULT_OPSET, FORMATS, ExportError, load_exported, reason_of, require_onnx, write
from .wrap import LogitsOnly

logger = logging.getLogger(__name__)

#: --checkpoint -> the run folder's file
CHECKPOINTS = {"best": "student_best", "last": "student_latest", "ema": "student_ema"}
CARD = "model_card.json"
DEFAULT_TOLERANCE = 1e-3
OPSET_RANGE = (18, 23)  # torch's dynamo ONNX exporter writes opset 18 and later


def check_options(fmt, checkpoint, opset, batch, images, random_inputs, tolerance):
    """One-line ConfigErrors for options out of range (before anything is loaded)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format '{fmt}' is not a format; use one of {', '.join(FORMATS)}")
    if checkpoint not in CHECKPOINTS:
        raise ConfigError(f"--checkpoint '{checkpoint}' is not one of {', '.join(CHECKPOINTS)}")
    if opset is not None:
        if fmt != "onnx":
            raise ConfigError(f"--opset is for --format onnx only, not {fmt}; drop --opset")
        if not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
            raise ConfigError(f"--opset {opset} is outside the supported {OPSET_RANGE[0]}..{OPSET_RANGE[1]}; "
                              f"use e.g. --opset {DEFAULT_OPSET}")
    if batch is not None and batch < 1:
        raise ConfigError(f"--batch must be a positive number of images or 'dynamic', got {batch}")
    if images < 1 or random_inputs < 0:
        raise ConfigError(f"--images must be >= 1 and --random-inputs >= 0, got {images} and {random_inputs}")
    if not tolerance > 0:
        raise ConfigError(f"--tolerance must be a positive logit difference (e.g. {DEFAULT_TOLERANCE}), "
                          f"got {tolerance}")
    if fmt == "onnx":
        require_onnx()


def run_checkpoint_path(run_dir, checkpoint):
    """The file of a run folder that ``--checkpoint`` (best, last, ema) names, or a
    CheckpointError that says why it is missing and which others to pick."""
    path = os.path.join(run_dir, CHECKPOINTS[checkpoint])
    if not os.path.isfile(path):
        why = ("the run kept no EMA of its student: train with SOLVER.EMA (e.g. 0.9999)"
               if checkpoint == "ema" else "has the run finished an epoch?")
        raise CheckpointError(f"run folder '{run_dir}' has no {CHECKPOINTS[checkpoint]} checkpoint ({why}); pick "
                              f"another --checkpoint ({', '.join(c for c in CHECKPOINTS if c != checkpoint)})")
    return path


def load_run_student(run_dir, checkpoint="best"):
    """``(cfg, spec, student, checkpoint path, checkpoint object)`` of a run folder."""

    cfg_path = os.path.join(run_dir, "config.yaml")
    if not os.path.isdir(run_dir) or not os.path.isfile(cfg_path):
        raise ConfigError(f"'{run_dir}' is not a run folder (no config.yaml); give the folder a training run wrote, "
                          f"e.g. output/<project>/<name>")
    path = run_checkpoint_path(run_dir, checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = load_cfg(cfg_path, ["SOLVER.DEVICE", "cpu", "DATASET.NUM_WORKERS", "0"])
    spec = get_dataset(cfg)
    name = cfg.DISTILLER.STUDENT
    model = build_model(name, spec.model_family, spec.num_classes, spec.image_size)
    obj = load_checkpoint(path)
    load_model_weights(model, path, name, part="student", obj=obj)
    return cfg, spec, model.eval(), path, obj


def _normalize(images, spec):
    """uint8 -> the normalised float input, exactly as evaluation makes it."""

    return build_batch_transform(spec, 1, train=False, device="cpu").normalize(images)


def first_test_images(spec, n):
    """The first ``n`` test images (uint8 NCHW) and their labels."""
    n = min(n, len(spec.val))
    items = [spec.val[i] for i in range(n)]
    return torch.stack([it["image"] for it in items]), torch.tensor([int(it["target"]) for it in items])


def in_batches(fn, x, batch):
    """``fn`` over ``x`` in chunks: of exactly ``batch`` (the last one padded) when fixed,
    else of varying sizes (1, then up to 64) to exercise the dynamic batch dimension."""
    outs, i = [], 0
    sizes = iter([1] + [64] * len(x)) if batch is None else None
    while i < len(x):
        k = next(sizes) if batch is None else batch
        chunk = x[i:i + k]
        n = len(chunk)
        if batch is not None and n < batch:
            chunk = torch.cat([chunk, chunk[-1:].expand(batch - n, *chunk.shape[1:])])
        outs.append(fn(chunk)[:n])
        i += n
    return torch.cat(outs)


def parity(model, exported, spec, images, targets, preprocess, batch, random_inputs, seed=0):
    """Logits of PyTorch (``model(x)[0]``) and of the exported file on the test images and
    on random inputs: max abs difference, top-1 agreement, and both top-1s on the images."""
    g = torch.Generator().manual_seed(seed)
    rand = torch.randint(0, 256, (random_inputs, *images.shape[1:]), generator=g, dtype=torch.uint8)
    x = torch.cat([images, rand])

    def ref(u8):
        with torch.no_grad():
            return model(_normalize(u8, spec))[0].float()

    def out(u8):
        return exported(u8 if preprocess else _normalize(u8, spec))

    a = in_batches(ref, x, batch)
    try:
        b = in_batches(out, x, batch)
    except Exception as e:  # noqa: BLE001 - the runtime's own error, in one line
        raise ExportError(f"the exported model does not run on the test images: {reason_of(e)}") from e
    if b.shape != a.shape:
        raise ExportError(f"the exported model returns shape {tuple(b.shape)}, not PyTorch's logits "
                          f"{tuple(a.shape)}; the wrapper must return logits only")
    n = len(images)
    return {"test_images": n, "random_inputs": random_inputs,
            "max_abs_logit_diff": float((a - b).abs().max()),
            "top1_agreement": float((a.argmax(1) == b.argmax(1)).double().mean()),
            "test_top1_pytorch": 100 * float((a[:n].argmax(1) == targets).double().mean()),
            "test_top1_exported": 100 * float((b[:n].argmax(1) == targets).double().mean())}


def run_accuracy(run_dir, epoch, obj=None):
    """Test top-1 of the checkpoint's epoch and of the last, the holdout figure where the run
    recorded one (``val_acc``), and the split the run's best epoch is selected on
    (``selected_on``: ``holdout`` or ``test``, as the student files of issue #23 record it)."""

    try:
        records = read_metrics(run_dir)
    except (OSError, ValueError):
        records = []
    by_epoch = {r.get("epoch"): r for r in records}
    sel, last = by_epoch.get(epoch, {}), (records[-1] if records else {})
    acc = {"selected_epoch": epoch, "selected_test_top1": sel.get("test_acc"),
           "last_epoch": last.get("epoch"), "last_test_top1": last.get("test_acc")}
    holdout = any("val_acc" in r for r in records)
    if holdout:
        acc["selected_holdout_top1"] = sel.get("val_acc")
    on = (obj or {}).get("selected_on") if isinstance(obj, dict) else None
    acc["selected_on"] = on or selected_on(holdout)
    acc["selection"] = ("holdout split of the training set (val_acc); the test figures are unbiased"
                        if acc["selected_on"] == HOLDOUT
                        else "test set (no holdout split): the selected test top-1 is optimistic")
    return acc


def _versions(fmt):

    out = {"mdistiller": mdistiller.__version__, "torch": torch.__version__, "python": platform.python_version()}
    if fmt == "onnx":
        import onnx
        import onnxruntime

        out.update(onnx=onnx.__version__, onnxruntime=onnxruntime.__version__)
    return out


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def model_card(cfg, spec, model, run_dir, ckpt_path, obj, fmt, file_name, opset, batch, preprocess, figures,
               tolerance):

    method = cfg.DISTILLER.TYPE
    tree = cfg_to_dict(cfg)
    epoch = obj.get("epoch") if isinstance(obj, dict) else None
    shape = [batch if batch is not None else "batch", 3, spec.image_size, spec.image_size]
    return {
        "file": file_name, "format": fmt, "opset": (opset or DEFAULT_OPSET) if fmt == "onnx" else None,
        "file_sha256": None,  # filled in once written
        "student": cfg.DISTILLER.STUDENT,
        "teacher": None if method == "NONE" else cfg.DISTILLER.TEACHER,
        "method": method, "method_settings": tree.get(method, {}) if isinstance(tree.get(method), dict) else {},
        "dataset": cfg.DATASET.TYPE, "model_family": spec.model_family, "num_classes": spec.num_classes, "input_size": spec.image_size,
        "input": {"shape": shape, "dtype": "uint8" if preprocess else "float32", "layout": "NCHW RGB",
                  "normalisation": ("inside the graph: (x / 255 - mean) / std" if preprocess
                                    else "by the caller: (x / 255 - mean) / std, x in 0..255")},
        "output": {"name": "logits", "shape": [shape[0], spec.num_classes]},
        "mean": list(spec.mean), "std": list(spec.std),
        "parameters": count_parameters(model), "flops": count_flops(model, spec.image_size),
        "flops_note": "per image, torch.utils.flop_counter (a multiply-add = 2 FLOPs)",
        "checkpoint": {"file": os.path.basename(ckpt_path), "epoch": epoch, "sha256": file_sha256(ckpt_path)},
        "accuracy": run_accuracy(run_dir, epoch, obj),
        "parity": {**figures, "tolerance": tolerance,
                   "reference": "PyTorch student(x)[0] on the run's first test images and random uint8 inputs"},
        "config_sha256": hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest(),
        "training_commit": _read_json(os.path.join(run_dir, "provenance.json")).get("git_commit"),
        "export_commit": git_commit(), "versions": _versions(fmt),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _pct(x):
    return f"{x:.2f}" if isinstance(x, (int, float)) else "unknown"


def card_readme(card):
    """A short README.md for a person, from the card."""
    acc = card["accuracy"]
    top1 = acc.get("selected_test_top1")
    pre = card["input"]["dtype"] == "uint8"
    feed = ("uint8 RGB images, NCHW, values 0..255 (normalisation is inside the graph)" if pre else
            f"float32 NCHW RGB images normalised as (x / 255 - mean) / std with mean {card['mean']} "
            f"and std {card['std']}")
    run = {"onnx": "import onnxruntime as ort\nsess = ort.InferenceSession(\"{f}\")\n"
                   "logits = sess.run(None, {{\"x\": images}})[0]",
           "torchscript": "import torch\nmodel = torch.jit.load(\"{f}\")\nlogits = model(images)",
           "pt2": "import torch\nmodel = torch.export.load(\"{f}\").module()\nlogits = model(images)"}
    holdout = acc.get("selected_holdout_top1")
    lines = [
        f"# {card['student']} ({card['method']}) on {card['dataset']}",
        "",
        f"`{card['file']}` ({card['format']}) is the student "
        + (f"distilled from {card['teacher']} with {card['method']}" if card["teacher"] else "trained without a teacher")
        + f", checkpoint `{card['checkpoint']['file']}` (epoch {card['checkpoint']['epoch']}).",
        "",
        f"- Input: {feed}; shape {card['input']['shape']} ({card['input_size']}x{card['input_size']}).",
        f"- Output: logits over {card['num_classes']} classes (no softmax).",
        f"- Test top-1 of this checkpoint: {_pct(top1)}"
        + (f" (holdout {holdout:.2f})" if isinstance(holdout, (int, float)) else "")
        + f"; last epoch ({acc.get('last_epoch')}): {_pct(acc.get('last_test_top1'))}. Selected on the "
        f"{acc['selection']}.",
        f"- Cost: {card['parameters']:,} parameters, {card['flops'] / 1e6:.1f} MFLOPs per image.",
        f"- Parity with PyTorch: max |logit difference| {card['parity']['max_abs_logit_diff']:.2e} "
        f"(tolerance {card['parity']['tolerance']:g}), top-1 agreement {100 * card['parity']['top1_agreement']:.1f}% "
        f"on {card['parity']['test_images']} test images and {card['parity']['random_inputs']} random inputs.",
        "",
        "```python",
        run[card["format"]].format(f=card["file"]),
        "```",
        "",
        "Everything else (settings, versions, hashes) is in `model_card.json`.",
        "",
    ]
    return "\n".join(lines)


def export_run(run_dir, checkpoint="best", fmt="onnx", out=None, opset=None, batch=None,
               with_preprocessing=False, images=128, random_inputs=8, tolerance=DEFAULT_TOLERANCE):
    """Export a run's student (see the module docstring); returns ``(path, card)``."""

    check_options(fmt, checkpoint, opset, batch, images, random_inputs, tolerance)
    cfg, spec, model, ckpt_path, obj = load_run_student(run_dir, checkpoint)
    out = out or os.path.join(run_dir, "export")
    file_name = "student" + FORMATS[fmt]
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out '{out}' is a file; give a folder")
    created = missing_folders(out)
    try:
        os.makedirs(out, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".export.", dir=out)
    except OSError as e:
        raise ConfigError(describe_os_error(e, out, then="or pass --out DIR")) from None
    ok = False
    try:
        mean, std = (spec.mean, spec.std) if with_preprocessing else (None, None)
        wrapper = LogitsOnly(model, mean, std).eval()
        x8, targets = first_test_images(spec, images)
        example = x8[:1].expand(batch or 2, *x8.shape[1:]).contiguous()
        example = example if with_preprocessing else _normalize(example, spec)
        path = write(fmt, wrapper, example, os.path.join(tmp, file_name), opset, dynamic=batch is None)
        figures = parity(model, load_exported(path), spec, x8, targets, with_preprocessing, batch, random_inputs)
        if not figures["max_abs_logit_diff"] <= tolerance:
            raise ExportError(f"the exported {fmt} model differs from PyTorch: max |logit difference| "
                              f"{figures['max_abs_logit_diff']:.3g} > --tolerance {tolerance:g} (top-1 agreement "
                              f"{100 * figures['top1_agreement']:.1f}%); nothing was written; try another --format "
                              f"or --opset")
        card = model_card(cfg, spec, model, run_dir, ckpt_path, obj, fmt, file_name, opset, batch,
                          with_preprocessing, figures, tolerance)

        card["file_sha256"] = file_sha256(path)
        atomic_write_text(os.path.join(tmp, CARD), json.dumps(card, indent=2) + "\n")
        atomic_write_text(os.path.join(tmp, "README.md"), card_readme(card))
        shutil.copyfile(os.path.join(run_dir, "config.yaml"), os.path.join(tmp, "config.yaml"))
        for name in (CARD, "README.md"):
            os.chmod(os.path.join(tmp, name), 0o644)  # readable like the exported file, not mkstemp's 0600
        for name in (file_name, "config.yaml", "README.md", CARD):  # the card last: it vouches for the rest
            os.replace(os.path.join(tmp, name), os.path.join(out, name))
        ok = True
    except OSError as e:
        if isinstance(e, MdistillerError):
            raise
        raise ConfigError(describe_os_error(e, out, then="or pass --out DIR")) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not ok:
            remove_empty(created)
    logger.debug(f"exported {cfg.DISTILLER.STUDENT} ({os.path.basename(ckpt_path)}) to {os.path.join(out, file_name)}: "
                f"max |logit difference| {figures['max_abs_logit_diff']:.2e}, top-1 agreement "
                f"{100 * figures['top1_agreement']:.1f}% on {figures['test_images']} test images + "
                f"{random_inputs} random inputs")
    return os.path.join(out, file_name), card
