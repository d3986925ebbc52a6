"""What a model costs: parameters, FLOPs per image and CPU latency at batch 1.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts as 2
FLOPs; convolutions and matrix products only, as that counter does). Latency is the median
wall time of a batch-1 forward on this machine's CPU, measured once per architecture,
class count, input size, CPU, torch version and thread count, and cached in
``$MDISTILLER_CACHE`` (default ``~/.cache/mdistiller``) ``/latency.json``.
"""

import json
import os
import statistics
import time
import warnings

import torch

from torch.utils.flop_counter import FlopCounterMode

from ..config.load import cfg_to_dict, load_cfg
from ..dataset import get_dataset
from ..models import build_model
from ..runs.folder import atomic_write_text
from ..utils.cpuinfo import cpu_info
from .wrap import LogitsOnly

LATENCY_FILE = "latency.json"


def count_parameters(model):
    """Number of parameters (an int; buffers such as BN statistics are not parameters)."""
    return int(sum(p.numel() for p in model.parameters()))


def count_flops(model, image_size):
    """FLOPs of one ``image_size`` x ``image_size`` image through the logits (an int)."""

    module = LogitsOnly(model).eval()
    x = torch.zeros(1, 3, image_size, image_size)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(x)
    return int(counter.get_total_flops())


def cache_dir():
    return os.environ.get("MDISTILLER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mdistiller")


def cpu_label():

    info = cpu_info()
    return f"{info['model']}, {info['isa']}, {torch.get_num_threads()} threads"


def measure_latency(model, image_size, repeats=20, warmup=3):
    """Median seconds of a batch-1 forward of ``model`` (eval, no grad) on the CPU."""
    module = LogitsOnly(model).eval().cpu()
    x = torch.randn(1, 3, image_size, image_size)
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            module(x)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _read_cache(path):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def model_cost(name, family, num_classes, image_size, cache=None):
    """``{"parameters", "flops", "latency_ms", "cpu"}`` of model ``name`` built for
    ``num_classes`` classes and ``image_size`` inputs; cached (see the module docstring),
    so the latency is measured once per architecture and input size on this machine."""

    label = cpu_label()
    key = f"{name}|{family}|{num_classes}|{image_size}|{label}|torch {torch.__version__}"
    folder = cache if cache is not None else cache_dir()
    path = os.path.join(folder, LATENCY_FILE)
    entries = _read_cache(path)
    entry = entries.get(key)
    if entry and entry.get("latency_ms") is not None:
        return entry
    model = build_model(name, family, num_classes, image_size).eval()
    entry = {"parameters": count_parameters(model), "flops": count_flops(model, image_size),
             "latency_ms": round(1000 * measure_latency(model, image_size), 4), "cpu": label}
    entries[key] = entry
    try:  # a read-only home only costs a new measurement next time
        os.makedirs(folder, exist_ok=True)
        atomic_write_text(path, json.dumps(entries, indent=1, sort_keys=True))
    except OSError:
        pass
    return entry


_SHAPES = {}  # dataset config -> (family, classes, size), for this process


def run_model_shape(run_dir):
    """``(family, num_classes, image_size)`` of a run's student: from its export's model card
    when there is one, else from the run's dataset (built once per dataset config; a
    dataset that is absent is fetched as training does, e.g. CIFAR-100's download)."""

    try:
        with open(os.path.join(run_dir, "export", "model_card.json"), encoding="utf-8") as f:
            card = json.load(f)
        return card["model_family"], card["num_classes"], card["input_size"]
    except (OSError, ValueError, KeyError, TypeError):
        pass

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = load_cfg(os.path.join(run_dir, "config.yaml"), ["DATASET.NUM_WORKERS", "0"])
    key = json.dumps(cfg_to_dict(cfg.DATASET), sort_keys=True, default=str)
    if key not in _SHAPES:
        spec = get_dataset(cfg)
        _SHAPES[key] = (spec.model_family, spec.num_classes, spec.image_size)
    return _SHAPES[key]


def run_cost(run_dir, student):
    """:func:`model_cost` of a run's student (``student``: its DISTILLER.STUDENT)."""
    return model_cost(student, *run_model_shape(run_dir))
