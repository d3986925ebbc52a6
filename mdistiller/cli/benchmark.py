"""``python3 tools/benchmark.py [--full] [--cfg FILE] [options]``

Without flags it answers in about three minutes on two cores (SLD fp32 and bf16 +
channels_last, KD, the input pipelines, the yardstick; one short run each); ``--full``
times everything (the whole matrix, compiled, the SLD loss, three runs per figure). Every
figure is printed as soon as it is measured and the JSON (``--out``) rewritten after it, so
a stopped run keeps what it measured.

Times the real training step (:meth:`Trainer.train_step`: device-side views, distiller
forward under autocast, losses, backward, fused SGD) on a fixed random uint8 batch with
random teacher weights, for a matrix of cases (default: SLD fp32, SLD fp32 + channels_last
+ SOLVER.COMPILE, SLD bf16 + channels_last, MLKD fp32, KD fp32); the SLD loss alone
(forward and backward on the step's logits); the input pipeline on one core
(:func:`mdistiller.dataset.bench.time_pipeline`); the ImageNet two-view worker item per core for
``DATASET.DECODE`` cpu (with and without reduced-size decoding) and device beside the SLD
reference's item, in one interleaved measurement of CPU time (their ratios are the figures
that transfer; :func:`mdistiller.dataset.bench.time_items`), and the device side of
``DECODE device`` on the benchmark's device; and the yardstick of ``perf.md`` (four
``Conv2d(64, 64, 3, padding=1)`` + ReLU layers on
``randn(32, 64, 32, 32)``, one SGD step).

Absolute times drift with the machine and its load, so every figure is reported with its
time / yardstick time and its ratio to ``perf.md``'s reference figure (raw, and for steps
normalised by the yardstick: reference step/yardstick over ours). For a step, each timed
step is preceded by a timed yardstick step (so both see the machine of that moment); the
loss and the pipeline runs are preceded by a yardstick run of ``--yardstick-iters``
iterations. A run's time is the median over its steps; figures are medians over
``--repeats`` runs (``perf.md``'s yardstick is a mean of 10 iterations;
the median resists contention from other processes). On a busy machine two torch threads
wait for each other at every op; ``--threads 1 --clock cpu`` then gives steadier ratios.

With ``--cfg`` alone the config's own case is timed (its distiller, AMP, channels_last,
models and batch size), with its method settings.
"""

import argparse
import json
import os
import statistics
import tempfile
import time

import torch
import torch.nn as nn

from ..dataset import get_dataset
from ..distillers import DISTILLERS
from ..dataset.augment import build_batch_transform
from ..dataset import bench as input_bench
from ..dataset.bench import time_pipeline
from ..engine.build import build_distiller, num_views, place_distiller
from ..config.load import load_cfg
from ..utils.cpuinfo import cpu_info, describe_cpu
from ..utils.dist import DistContext, resolve_device
from ..engine.trainer import Trainer
from ..utils.runtime import host_memory_retained
from ..models import build_model
from ..runs.folder import atomic_write_text
from .common import REPO_ROOT, ArgumentParser, add_debug_flag, number, run_tool

PRECISIONS = {"fp32": "none", "bf16": "bf16", "fp16": "fp16"}
DEFAULT_MATRIX = "SLD/fp32,SLD/fp32+cl+compile,SLD/bf16+cl,MLKD/fp32,KD/fp32"  # --full
QUICK_MATRIX = "SLD/fp32,SLD/bf16+cl,KD/fp32"  # without --full
#: run lengths: option -> (quick default, --full default)
RUN_LENGTHS = {"steps": (2, 6), "warmup": (1, 2), "repeats": (1, 3), "yardstick_iters": (3, 10),
               "pipeline_seconds": (1.0, 2.0), "imagenet_seconds": (8.0, 20.0)}
#: perf.md: teacher, student and batch size of the reference steps
REFERENCE_SETUP = ("resnet32x4", "resnet8x4", 64)
#: perf.md's fp32 steps: distiller -> (samples/s, step / yardstick)
REFERENCE_STEPS = {"SLD": (24.5, 15.6), "MLKD": (26.3, 16.9), "KD": (58.6, 8.0)}
#: perf.md's input pipeline on one core: views -> images/s
REFERENCE_PIPELINE = {1: 6012.0, 2: 1888.0}
#: --clock: wall time, or this process's CPU time (with --threads 1, robust to other processes)
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
#: this project's goals on the reference machine kind (the loss's is a share of the step)
TARGETS = {"SLD/fp32": 1.15, "SLD/fp32+cl+compile": 1.15, "SLD/bf16+cl": 3.0, "pipeline/2": 3.0, "loss": 0.02,
           "imagenet/cpu": 2.0, "imagenet/device": 10.0}


def parse_case(text):
    """``"SLD/bf16+cl"`` -> ``("SLD", "bf16", True, False)``: distiller, precision,
    channels_last, compiled (``+compile``: SOLVER.COMPILE)."""
    name, _, rest = text.strip().partition("/")
    precision, *flags = (rest or "fp32").split("+")
    if not name or precision not in PRECISIONS or not set(flags) <= {"cl", "compile"} or len(set(flags)) < len(flags):
        raise argparse.ArgumentTypeError(f"bad case '{text}': write DISTILLER/PRECISION[+cl][+compile], "
                                         "e.g. SLD/bf16+cl")
    return name, precision, "cl" in flags, "compile" in flags


def case_name(case):
    name, precision, channels_last, compiled = case
    return f"{name}/{precision}{'+cl' if channels_last else ''}{'+compile' if compiled else ''}"


def parse_args(argv):
    p = ArgumentParser(description="Time the training step, the SLD loss, the input pipeline "
                                            "and a yardstick, in one run.")
    p.add_argument("--cfg", default="", help="YAML config: the methods' settings and, unless given below, "
                                             "the case, models and batch size (the data is random)")
    p.add_argument("--teacher", default=None, help="teacher model, random weights (default resnet32x4)")
    p.add_argument("--student", default=None, help="student model (default resnet8x4)")
    p.add_argument("--batch-size", type=number(int, low=1), default=None, help="batch size (default 64)")
    p.add_argument("--num-classes", type=number(int, low=2), default=100, help="classes of the random data")
    p.add_argument("--distiller", default=None, help="time this distiller only (instead of --matrix)")
    p.add_argument("--precision", choices=list(PRECISIONS), default="fp32", help="with --distiller")
    p.add_argument("--channels-last", action="store_true", help="with --distiller: channels_last")
    p.add_argument("--full", action="store_true", help="time everything: the whole matrix (compiled too), the SLD "
                                                       "loss, three runs per figure (tens of minutes on 2 cores)")
    p.add_argument("--matrix", default=None, help="comma-separated DISTILLER/PRECISION[+cl][+compile] cases "
                                                  f"(default: {QUICK_MATRIX}; --full: {DEFAULT_MATRIX}; "
                                                  "or the --cfg's case)")
    p.add_argument("--compile", action="store_true",
                   help="every case with SOLVER.COMPILE (torch.compile the student and the teacher)")
    p.add_argument("--compile-mode", default="default",
                   choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
                   help="SOLVER.COMPILE_MODE of the +compile cases (reduce-overhead: CUDA graphs on a GPU)")
    p.add_argument("--steps", type=number(int, low=1), default=None, help="timed steps per run (default 2; --full 6)")
    p.add_argument("--warmup", type=number(int, low=0), default=None, help="untimed steps before each run (default 1; --full 2)")
    p.add_argument("--repeats", type=number(int, low=1), default=None, help="runs per figure, the median is reported "
                                                             "(default 1; --full 3)")
    p.add_argument("--yardstick-iters", type=number(int, low=1), default=None,
                   help="timed yardstick iterations before each loss or pipeline run (default 3; --full 10)")
    p.add_argument("--pipeline-seconds", type=number(float, above=0), default=None,
                   help="duration of one pipeline run (default 1; --full 2)")
    p.add_argument("--imagenet-seconds", type=number(float, above=0), default=None,
                   help="CPU seconds of the ImageNet worker-item comparison, all items together "
                        "(default 8; --full 20)")
    p.add_argument("--loss", action="store_true", help="also time the SLD loss alone (always with --full)")
    p.add_argument("--threads", type=number(int, low=1), default=2, help="torch threads (perf.md: 2)")
    p.add_argument("--clock", choices=list(CLOCKS), default="wall",
                   help="wall time, or process CPU time (use with --threads 1 on a busy machine; "
                        "the pipeline is always wall time)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-retain-host-memory", dest="retain_host_memory", action="store_false",
                   help="time with SOLVER.RETAIN_HOST_MEMORY False (glibc malloc returns freed memory)")
    p.add_argument("--json", action="store_true", help="print JSON at the end instead of a table as it goes")
    p.add_argument("--out", default=None, help="JSON file rewritten after every figure "
                                               "(default output/benchmark/<time>.json; '' for none)")
    p.add_argument("--skip-pipeline", action="store_true", help="do not time the input pipelines")
    p.add_argument("--skip-imagenet", action="store_true", help="do not time the ImageNet input pipeline")
    p.add_argument("--skip-step", action="store_true", help="do not time training steps nor the loss")
    add_debug_flag(p)
    args = p.parse_args(argv)
    for name, defaults in RUN_LENGTHS.items():
        if getattr(args, name) is None:
            setattr(args, name, defaults[args.full])
    args.loss = args.loss or args.full
    matrix = case_name((args.distiller, args.precision, args.channels_last, False)) if args.distiller else args.matrix
    try:
        args.cases = [parse_case(t) for t in (matrix or "").split(",") if t.strip()] or None
    except argparse.ArgumentTypeError as e:
        p.error(str(e))
    check_cases(p, args)
    return args


def check_cases(p, args):
    """What the arguments can be checked for before anything is timed: the device, the
    distillers of the cases, fp16 (CUDA only)."""
    device = args.device
    if device not in ("auto", "cpu", "cuda") and not (device.startswith("cuda:") and device[5:].isdigit()):
        p.error(f"argument --device: must be auto, cpu, cuda or cuda:N, got {device!r}")
    for name, precision, _, _ in args.cases or []:
        if name not in DISTILLERS:
            p.error(f"unknown distiller {name!r} in the cases; choose from {', '.join(sorted(DISTILLERS))}")
        on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
        if precision == "fp16" and on_cpu:
            p.error("fp16 needs CUDA (its gradient scaler); use bf16 on the CPU")


def resolve_setup(args):
    """Fill the unset options from ``--cfg`` when given (its case, models, batch size),
    else from perf.md's reference setup and the default matrix."""
    if args.cfg:
        cfg = load_cfg(args.cfg)
        precision = next(k for k, v in PRECISIONS.items() if v == cfg.SOLVER.AMP)
        defaults = (cfg.DISTILLER.TEACHER, cfg.DISTILLER.STUDENT, cfg.SOLVER.BATCH_SIZE,
                    [(cfg.DISTILLER.TYPE, precision, cfg.SOLVER.CHANNELS_LAST, cfg.SOLVER.COMPILE)])
    else:
        matrix = DEFAULT_MATRIX if args.full else QUICK_MATRIX
        defaults = (*REFERENCE_SETUP, [parse_case(t) for t in matrix.split(",")])
    for name, value in zip(("teacher", "student", "batch_size", "cases"), defaults):
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.compile:
        args.cases = [(*case[:3], True) for case in args.cases]
    return args


# ---------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------
def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn, steps, warmup, device, clock=time.perf_counter):
    """Median seconds (of ``clock``) of ``steps`` calls of ``fn`` after ``warmup`` untimed
    ones; the device is synchronised only at the edges of each timed call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        synchronize(device)
        start = clock()
        fn()
        synchronize(device)
        times.append(clock() - start)
    return statistics.median(times)


def yardstick_step(device):
    """perf.md's yardstick workload: a callable running one SGD step of four
    Conv2d(64, 64, 3) + ReLU layers on ``randn(32, 64, 32, 32)``."""
    torch.manual_seed(0)
    net = nn.Sequential(*[m for _ in range(4) for m in (nn.Conv2d(64, 64, 3, padding=1), nn.ReLU())]).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    x = torch.randn(32, 64, 32, 32, device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        net(x).sum().backward()
        opt.step()

    return step


def yardstick(device, iters=10, warmup=2, clock=time.perf_counter):
    """perf.md's yardstick: median seconds of its SGD step."""
    return time_calls(yardstick_step(device), iters, min(warmup, iters), device, clock)


def time_interleaved(fn, yard, steps, warmup, device, clock=time.perf_counter):
    """Medians (seconds) of ``steps`` calls of ``fn`` and of the yardstick step ``yard``
    timed just before each of them (after an untimed one, so its caches are warm): the
    pair shares the machine's state of that moment, which a VM's neighbours shift."""
    for _ in range(warmup):
        fn()
    fn_times, yard_times = [], []
    for _ in range(steps):
        yard()
        yard_times.append(time_calls(yard, 1, 0, device, clock))
        fn_times.append(time_calls(fn, 1, 0, device, clock))
    return statistics.median(fn_times), statistics.median(yard_times)


def paired_runs(args, device, measure):
    """``args.repeats`` pairs (seconds of ``measure()``, seconds of a yardstick run just before it)."""
    pairs = []
    for _ in range(args.repeats):
        yard = yardstick(device, args.yardstick_iters, clock=CLOCKS[args.clock])
        pairs.append((measure(), yard))
    return pairs


def record(kind, name, pairs, unit, value, reference=None, **extra):
    """A figure from paired runs: ``value(seconds)`` (median), the median time, the median
    time / yardstick, the ratio to ``reference`` and the runs' (time, yardstick) in ms."""
    med = lambda xs: statistics.median(list(xs))  # noqa: E731
    out = {"kind": kind, "name": name, "unit": unit, "value": med(value(t) for t, _ in pairs),
           "ms": 1e3 * med(t for t, _ in pairs), "over_yardstick": med(t / y for t, y in pairs),
           "yardstick_ms": 1e3 * med(y for _, y in pairs), "reference": reference,
           "runs_ms": [[1e3 * t, 1e3 * y] for t, y in pairs]}
    out["vs_reference"] = out["value"] / reference if reference else None
    out.update(extra)
    return out


# ---------------------------------------------------------------------------------------
# the figures
# ---------------------------------------------------------------------------------------
def case_cfg(args, case):
    name, precision, channels_last, compiled = case
    opts = ["DISTILLER.TYPE", name, "DISTILLER.TEACHER", args.teacher, "DISTILLER.STUDENT", args.student,
            "DATASET.TYPE", "synthetic", "DATASET.SYNTHETIC_CLASSES", args.num_classes,
            "DATASET.SYNTHETIC_SIZE", max(args.batch_size, 256), "SOLVER.BATCH_SIZE", args.batch_size,
            "SOLVER.AMP", PRECISIONS[precision], "SOLVER.CHANNELS_LAST", channels_last,
            "SOLVER.COMPILE", compiled, "SOLVER.COMPILE_MODE", args.compile_mode, "SOLVER.DEVICE", args.device,
            "SOLVER.RETAIN_HOST_MEMORY", args.retain_host_memory]
    return load_cfg(args.cfg or None, [str(o) for o in opts])


def build_case(cfg, spec, device, seed=0):
    """A real :class:`Trainer` for ``cfg`` (random teacher weights, no loaders) and the
    fixed raw uint8 batch it is timed on."""
    torch.manual_seed(seed)
    teacher = build_model(cfg.DISTILLER.TEACHER, "cifar", spec.num_classes)
    student = build_model(cfg.DISTILLER.STUDENT, "cifar", spec.num_classes)
    distiller = place_distiller(cfg, build_distiller(cfg, student, teacher, spec), device)
    generator = torch.Generator().manual_seed(seed)  # the views' random parameters are drawn on the host
    transforms = (build_batch_transform(spec, num_views(cfg), train=True, device=device, generator=generator),
                  build_batch_transform(spec, 1, train=False, device=device))
    trainer = Trainer(cfg, distiller, (None, None), transforms, DistContext(device=device))
    n, size = cfg.SOLVER.BATCH_SIZE, spec.image_size
    g = torch.Generator().manual_seed(seed)
    batch = {"image": torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g),
             "target": torch.randint(spec.num_classes, (n,), generator=g), "index": torch.arange(n)}
    return trainer, batch


def loss_call(trainer, batch, epoch):
    """A call of the distiller's loss terms alone, forward and backward, on the float32
    logits of ``batch``'s views (as :meth:`Trainer.train_step` computes them)."""
    distiller = trainer.distiller
    with torch.no_grad():
        views = distiller.prepare_batch(trainer.prepare(batch, trainer.train_transform))
        images = [views[k] for k in ("image_weak", "image_strong", "image") if k in views]
        with trainer.autocast():
            student = [distiller.student(x)[0].float().requires_grad_() for x in images]
        teacher = distiller.teacher_logits(*images)

    def call():
        sum(distiller.losses(student, teacher, views["target"], epoch).values()).backward()

    return call


def step_figures(args, spec, device):
    """Yields the step of every case as it is measured, then (``--loss``) the loss of the first SLD case."""
    steps, loss = [], None
    same_setup = (args.teacher, args.student, args.batch_size) == REFERENCE_SETUP
    for i, case in enumerate(args.cases):
        cfg = case_cfg(args, case)
        trainer, batch = build_case(cfg, spec, device)
        trainer.distiller.train()
        epoch = cfg.SOLVER.EPOCHS  # late in training: every term of every method is on
        step = lambda: trainer.train_step(batch, epoch)  # noqa: E731
        if i == 0:  # the process's first steps grow its heap and caches: warm it up untimed
            time_calls(step, 1, 3 * args.warmup, device)
        yard = yardstick_step(device)
        pairs = [time_interleaved(step, yard, args.steps, args.warmup, device, CLOCKS[args.clock])
                 for _ in range(args.repeats)]
        ref_rate, ref_ratio = REFERENCE_STEPS.get(case[0], (None, None))
        fig = record("step", case_name(case), pairs, "samples/s", lambda t: args.batch_size / t, ref_rate,
                     same_setup=same_setup, target=TARGETS.get(case_name(case)))
        fig["vs_reference_normalised"] = ref_ratio / fig["over_yardstick"] if ref_ratio else None
        steps.append(fig)
        yield fig
        if args.loss and case[0] == "SLD" and loss is None:
            call = loss_call(trainer, batch, epoch)
            loss = record("loss", "SLD loss (fwd+bwd)", paired_runs(args, device, lambda: time_calls(
                call, max(args.steps, 10), 2, device, CLOCKS[args.clock])), "ms", lambda t: 1e3 * t,
                target=TARGETS["loss"])
        del trainer, batch
    if loss is not None:
        sld = min((f for f in steps if f["name"].startswith("SLD/")), key=lambda f: f["ms"])
        loss.update(share_of_step=loss["ms"] / sld["ms"], of_step=sld["name"])
        yield loss


def pipeline_figures(args, spec):
    """Yields images/s of the input pipeline on one core, one and two views."""
    for views in (1, 2):
        pairs = paired_runs(args, torch.device("cpu"), lambda: args.batch_size / time_pipeline(
            spec, views, seconds=args.pipeline_seconds))
        yield record("pipeline", f"pipeline/{views}", pairs, "images/s", lambda t: args.batch_size / t,
                     REFERENCE_PIPELINE[views], target=TARGETS.get(f"pipeline/{views}"))


def imagenet_figures(args, device, batch=32):
    """Yields the ImageNet two-view worker items per core (one interleaved measurement; ratios
    to the reference's item of the same run), then the device side of ``DECODE device``."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = input_bench.make_jpeg_folder(tmp, batch)
        yard = 1e3 * yardstick(torch.device("cpu"), args.yardstick_iters, clock=time.process_time)
        rates = input_bench.time_items(input_bench.imagenet_item_makers(folder), args.imagenet_seconds, batch)
        ref = rates["reference"]
        for name, rate in rates.items():
            ms = 1e3 * batch / rate
            yield {"kind": "imagenet", "name": f"imagenet/{name}", "unit": "images/s", "value": rate, "ms": ms,
                   "over_yardstick": ms / yard, "yardstick_ms": yard, "reference": ref,
                   "vs_reference": rate / ref, "target": TARGETS.get(f"imagenet/{name}"), "clock": "cpu",
                   "image_size": list(input_bench.IMAGENET_SIZE)}
        yard = yardstick(device, args.yardstick_iters, clock=CLOCKS["wall"])
        rate = input_bench.time_device_decode(folder, device, seconds=args.pipeline_seconds, batch_size=batch)
        yield {"kind": "imagenet", "name": f"imagenet/device-side ({device.type})", "unit": "images/s",
               "value": rate, "ms": 1e3 * batch / rate, "over_yardstick": batch / rate / yard,
               "yardstick_ms": 1e3 * yard,
               "reference": None, "vs_reference": None, "target": None, "clock": "wall",
               "threads": torch.get_num_threads()}


def default_out():
    return os.path.join(REPO_ROOT, "output", "benchmark", time.strftime("%Y%m%d-%H%M%S") + ".json")


def benchmark(args, emit=None):
    """All figures as a JSON-ready dict; ``emit(figure, result)`` is called once with figure
    None at the start, then after each figure is measured (and the JSON file ``args.out``,
    when set, rewritten)."""
    resolve_setup(args)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    spec = get_dataset(case_cfg(args, args.cases[0]))
    result = {"setup": {"teacher": args.teacher, "student": args.student, "batch_size": args.batch_size,
                        "device": str(device), "threads": args.threads, "clock": args.clock, "torch": torch.__version__,
                        "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats, "full": args.full,
                        "retain_host_memory": host_memory_retained(), "cpu": cpu_info(),
                        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
              "yardstick_ms": None, "figures": [], "complete": False}
    out = getattr(args, "out", None)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)

    def save():
        yard = [f["yardstick_ms"] for f in result["figures"]]
        result["yardstick_ms"] = statistics.median(yard) if yard else None
        if out:
            atomic_write_text(out, json.dumps(result, indent=2))

    if emit is not None:
        emit(None, result)  # started: the setup is known
    groups = [] if args.skip_step else [step_figures(args, spec, device)]
    if not args.skip_pipeline:
        groups.append(pipeline_figures(args, spec))
        if not getattr(args, "skip_imagenet", False):
            groups.append(imagenet_figures(args, device))
    for group in groups:
        for fig in group:
            result["figures"].append(fig)
            save()
            if emit is not None:
                emit(fig, result)
    if not result["figures"]:
        result["yardstick_ms"] = 1e3 * yardstick(device, args.yardstick_iters, clock=CLOCKS[args.clock])
    result["complete"] = True
    if out:
        atomic_write_text(out, json.dumps(result, indent=2))
    return result


# ---------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------
def describe_reference(fig):
    """The table's "vs reference" cell."""
    if fig["kind"] == "loss":
        return f"{100 * fig['share_of_step']:.1f}% of {fig['of_step']} step"
    if fig["kind"] == "imagenet" and fig["vs_reference"] is not None:
        return f"{fig['vs_reference']:.2f}x the reference's item"
    if fig["vs_reference"] is None:
        return "-"
    text = f"{fig['vs_reference']:.2f}x reference"
    if fig["kind"] == "step":
        text += f" ({fig['vs_reference_normalised']:.2f}x by yardstick)"
        if not fig["same_setup"]:
            text += " *"
    return text


def describe_target(fig):
    if fig.get("target") is None:
        return ""
    if fig["kind"] == "loss":
        return f"<= {100 * fig['target']:g}%"
    return f">= {fig['target']:g}x"


def format_header(result):
    s = result["setup"]
    return "\n".join([
        f"{s['teacher']} -> {s['student']}, batch {s['batch_size']}, {s['device']}, threads {s['threads']}, "
        f"{s['clock']} clock, torch {s['torch']}; medians of {s['repeats']} runs of {s['steps']} steps after "
        f"{s['warmup']} warm-ups" + ("; malloc keeps freed memory" if s["retain_host_memory"] else "")
        + ("" if s.get("full") else " (quick: --full times everything)"),
        f"CPU: {describe_cpu(s['cpu'])}" + (f"; GPU: {s['gpu']}" if s.get("gpu") else ""), "",
        "  ".join(c.ljust(w) for c, w in zip(COLUMNS, WIDTHS)).rstrip()])


COLUMNS = ("figure", "value", "ms", "/ yardstick", "vs reference", "target")
WIDTHS = (34, 20, 9, 11, 40, 8)


def format_row(f):
    value = f"{f['value']:.2f} {f['unit']}" if f["unit"] == "ms" else f"{f['value']:.1f} {f['unit']}"
    cells = (f["name"], value, f"{f['ms']:.1f}", f"{f['over_yardstick']:.3g}", describe_reference(f),
             describe_target(f))
    return "  ".join(c.ljust(w) for c, w in zip(cells, WIDTHS)).rstrip()


def format_footer(result):
    lines = [f"yardstick (4 x conv 64->64 3x3 + ReLU on 32x64x32x32, SGD step): {result['yardstick_ms']:.1f} ms"]
    if any(f.get("same_setup") is False for f in result["figures"]):
        lines.append("* not the reference setup (resnet32x4 -> resnet8x4, batch 64): the reference ratio is indicative")
    lines.append("pipeline ms = time to make one batch on one core; reference = perf.md (fp32 steps, PIL pipeline)")
    if any(f["kind"] == "imagenet" for f in result["figures"]):
        lines.append("imagenet/*: two-view worker item per core (CPU time, 32 generated 500x375 JPEGs), reference = "
                     "the SLD reference's item measured in the same run")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.out is None:
        args.out = default_out()

    def body():
        threads = torch.get_num_threads()

        def emit(fig, result):
            if not args.json:
                print(format_header(result) if fig is None else format_row(fig), flush=True)

        try:
            result = benchmark(args, emit)
        finally:
            torch.set_num_threads(threads)
        if args.json:
            print(json.dumps(result, indent=2), flush=True)
        else:
            print(format_footer(result), flush=True)
            if args.out:
                print(f"JSON: {args.out}", flush=True)
        return 0

    return run_tool(body, args.debug, args.quiet)
