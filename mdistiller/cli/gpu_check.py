"""``bash scripts/gpu_check.sh [--out FILE] [--dry] ...``: prove the CUDA path in minutes.

On a CUDA machine: runs the CUDA-only tests (marker ``cuda``: every GPU path against the
CPU, see ``tests/cuda/test_cuda.py``, and the no-host-sync step check), then times the SLD
resnet32x4 -> resnet8x4 step on CIFAR-100-shaped synthetic data (batch 64 and 256; fp32,
bf16 + channels_last, fp32 + SOLVER.COMPILE, and at batch 64 fp32 + compile in ``reduce-overhead`` mode:
CUDA graphs) with its peak GPU memory, and the two-view input pipeline per worker; says
whether the step is loader-bound with ``DATASET.NUM_WORKERS`` workers and projects the wall
time of a 240-epoch CIFAR-100 SLD run, beside the reference's design limit (its two PIL
workers cap two-view input near 3,800 images/s whatever the GPU). Prints a table and writes
everything as JSON (``--out``), so two runs compare.

It also times the ImageNet input pipeline (``DATASET.DECODE``): the two-view worker item
per core for ``cpu`` and ``device`` beside the SLD reference's item, and the device side of
``device`` (nvJPEG decoding, crops and resizes of a batch on the GPU).

Every result is printed as soon as it is known (the tests, then each speed case) and the
JSON rewritten after it, so a slot that ends early keeps what was measured. On CUDA the
whole check keeps to ``--budget`` seconds (default 300, compilation included): each case's
time is estimated from those already measured, and a case that would not fit is skipped
and named (uncompiled cases and the input pipeline come before the compiled cases).

Without CUDA (or with ``--dry``) it runs the same plumbing on the CPU, short: the CPU twins
of the checks (channels_last, bf16, no host sync, prefetch, non-finite loss, exact resume;
the CUDA tests are collected and skipped) and the speed figures on tiny models; exit 0 when
they pass. Needs nothing but the repository (no dataset, no download); ``scripts/gpu_check.sh``
installs the test requirements first when they are missing.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

import torch

from . import benchmark as bench
from ..config.defaults import CFG
from ..runs.folder import atomic_write_text
from ..utils.cpuinfo import cpu_info
from .common import REPO_ROOT, add_debug_flag, run_tool

#: the CUDA-only tests (marker cuda) and the step's no-host-sync check, which runs on CUDA where present
CUDA_TESTS = ["tests/cuda", "tests/engine/test_fast_paths.py::test_train_step_does_not_synchronise"]
FAST = "tests/engine/test_fast_paths.py::"
TRAINER = "tests/engine/test_trainer.py::"
#: the CPU twins of the CUDA checks (the CUDA module itself is collected and skipped)
DRY_TESTS = ["tests/cuda", "tests/engine/test_prefetch.py",
             FAST + "test_channels_last_step_equals_contiguous_step[SLD]",
             FAST + "test_bf16_autocast_losses_are_float32_and_close[SLD]",
             FAST + "test_train_step_does_not_synchronise[SLD-bf16-True]",
             TRAINER + "test_resume_is_exact", TRAINER + "test_nonfinite_loss_stops_and_keeps_last_checkpoint"]
CUDA_SETUP = dict(teacher="resnet32x4", student="resnet8x4", classes=100, batches=(64, 256),
                  cases=("SLD/fp32", "SLD/bf16+cl", "SLD/fp32+compile", "SLD/fp32+compile:reduce-overhead"))
DRY_SETUP = dict(teacher="resnet8", student="resnet8", classes=10, batches=(8,), cases=("SLD/fp32", "SLD/bf16+cl"))
#: CIFAR-100: training images per epoch, epochs of the reference schedule
CIFAR_TRAIN, EPOCHS = 50_000, 240
#: the reference's two PIL workers: two-view images/s, whatever the GPU
REFERENCE_INPUT_LIMIT = 3_800.0
#: first guesses of a case's seconds before any case of its kind was measured (CUDA: an
#: uncompiled case, a compiled one, the input pipeline); measured cases replace them
FIRST_GUESS = {"plain": 30.0, "compile": 120.0, "pipeline": 40.0}
#: CUDA: seconds the tests may take at most (of the budget)
TEST_TIMEOUT = 150.0


def parse_args(argv):
    p = argparse.ArgumentParser(description="Check the CUDA path against the CPU and time it; JSON figures.")
    p.add_argument("--out", default="", help="JSON file (default output/gpu_check/<device>-<time>.json)")
    p.add_argument("--dry", action="store_true", help="the CPU dry mode even where CUDA is present")
    p.add_argument("--skip-tests", action="store_true", help="speed figures only")
    p.add_argument("--skip-speed", action="store_true", help="tests only")
    p.add_argument("--pytest-args", default=None, help="replace the test selection (one string, split on spaces)")
    p.add_argument("--workers", type=int, default=CFG.DATASET.NUM_WORKERS,
                   help="loader workers assumed for the loader-bound verdict (DATASET.NUM_WORKERS)")
    p.add_argument("--cases", default=None, help="comma-separated step cases instead of the mode's "
                   "(DISTILLER/PRECISION[+cl][+compile][:COMPILE_MODE], e.g. SLD/fp32+compile:reduce-overhead)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per run (default 20 on CUDA, 2 dry)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds the whole check may take, compilation included; cases that would not fit "
                        "are skipped and named (default 300 on CUDA, none dry; 0 = none)")
    add_debug_flag(p)
    args = p.parse_args(argv)
    if args.budget is not None and not args.budget >= 0:
        p.error(f"--budget must be a number of seconds >= 0 (0 = no limit), got {args.budget}")
    return args


def run_tests(selection, timeout=None):
    """``pytest -q`` on ``selection`` in a subprocess: {"passed", "failed", "skipped", "ok", "seconds", "tail"}."""
    start = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selection],
                              cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        text = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        done = subprocess.CompletedProcess(e.cmd, 124, text + f"\ntimed out after {timeout:.0f} s", "")
    tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
    counts = {k: 0 for k in ("passed", "failed", "skipped", "error", "deselected")}
    for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", tail[-1] if tail else ""):
        counts[word.rstrip("s") if word.startswith("error") else word] = int(n)
    return {**counts, "ok": done.returncode == 0, "exit_code": done.returncode,
            "seconds": time.perf_counter() - start, "selection": selection, "tail": tail}


def step_figure(setup, case, batch, device, steps, warmup, yardstick_iters):
    """One step case at one batch size: the benchmark's figure plus the peak GPU memory."""
    name, _, mode = case.partition(":")
    argv = ["--teacher", setup["teacher"], "--student", setup["student"], "--num-classes", str(setup["classes"]),
            "--batch-size", str(batch), "--matrix", name, "--skip-pipeline", "--steps", str(steps),
            "--warmup", str(warmup),
            "--repeats", "1", "--yardstick-iters", str(yardstick_iters), "--device", device.type, "--out", "",
            "--threads", "2" if device.type == "cuda" else "1",  # dry: one thread does not wait on a busy core
            "--compile-mode", mode or "default"]
    args = bench.parse_args(argv)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    fig = next(f for f in bench.benchmark(args)["figures"] if f["kind"] == "step")
    fig.update(name=case, batch_size=batch, peak_memory_mb=(torch.cuda.max_memory_allocated(device) / 2**20
                                                            if device.type == "cuda" else None))
    return fig


def pipeline_rate(setup, seconds):
    """Two-view input pipeline images/s on one core (a loader worker)."""
    args = bench.parse_args(["--num-classes", str(setup["classes"]), "--skip-step", "--repeats", "1",
                             "--yardstick-iters", "1", "--pipeline-seconds", str(seconds), "--device", "cpu",
                             "--skip-imagenet", "--out", ""])
    figs = {f["name"]: f for f in bench.benchmark(args)["figures"]}
    return figs["pipeline/2"]["value"]


def imagenet_input(device, seconds):
    """The ImageNet input figures (the benchmark's): two-view worker items per core, and the
    device side of DECODE device on ``device``."""
    args = bench.parse_args(["--yardstick-iters", "1", "--imagenet-seconds", str(seconds),
                             "--pipeline-seconds", str(seconds / 4), "--out", ""])
    return list(bench.imagenet_figures(args, device))


def projection(steps, per_worker, workers):
    """Loader-bound verdict and projected training time of a 240-epoch CIFAR-100 SLD run
    (training steps only) at each batch size's best step rate."""
    input_rate = per_worker * max(1, workers)
    out = {"input_images_per_s": input_rate, "workers": workers, "reference_input_limit": REFERENCE_INPUT_LIMIT,
           "reference_hours_floor": EPOCHS * CIFAR_TRAIN / REFERENCE_INPUT_LIMIT / 3600, "by_batch": {}}
    for batch in sorted({f["batch_size"] for f in steps}):
        best = max((f for f in steps if f["batch_size"] == batch), key=lambda f: f["value"])
        rate = min(best["value"], input_rate)
        out["by_batch"][str(batch)] = {"best_case": best["name"], "step_samples_per_s": best["value"],
                                       "loader_bound": input_rate < best["value"],
                                       "projected_hours": EPOCHS * CIFAR_TRAIN / rate / 3600}
    return out


def format_tests(t):
    lines = [f"tests: {'ok' if t['ok'] else 'FAILED'}: {t['passed']} passed, {t['failed']} failed, "
             f"{t['skipped']} skipped in {t['seconds']:.0f} s"]
    if not t["ok"]:
        lines += ["  " + line for line in t["tail"]]
    return "\n".join(lines)


STEP_HEADER = f"{'step case':36s} {'batch':>5s} {'samples/s':>10s} {'ms':>8s} {'peak MB':>8s}"


def format_step(f):
    mem = f"{f['peak_memory_mb']:.0f}" if f["peak_memory_mb"] is not None else "-"
    return f"{f['name']:36s} {f['batch_size']:5d} {f['value']:10.1f} {f['ms']:8.1f} {mem:>8s}"


def format_imagenet(f):
    ratio = f" ({f['vs_reference']:.2f}x the reference's)" if f.get("vs_reference") else ""
    where = "per worker core" if f["clock"] == "cpu" else "on the device"
    return f"{f['name']}: {f['value']:.0f} two-view images/s {where}{ratio}"


def format_projection(p):
    lines = [f"input pipeline: {p['input_images_per_s']:.0f} two-view images/s with {p['workers']} workers "
             f"(reference design limit {p['reference_input_limit']:.0f}/s: "
             f"{p['reference_hours_floor']:.2f} h for {EPOCHS} CIFAR-100 epochs at best)"]
    for batch, b in p["by_batch"].items():
        lines.append(f"batch {batch}: best {b['best_case']} {b['step_samples_per_s']:.0f} samples/s, "
                     f"{'loader-bound' if b['loader_bound'] else 'step-bound'}; {EPOCHS}-epoch CIFAR-100 SLD "
                     f"projected {b['projected_hours']:.2f} h (training steps)")
    return "\n".join(lines)


def format_title(result):
    return (f"gpu_check ({result['mode']}): device {result['device']}"
            + (f" ({result['gpu']})" if result.get("gpu") else "") + f", torch {result['torch']}")


def kind(case):
    return "compile" if "+compile" in case else "plain"


class Budget:
    """Seconds left of ``total`` (None: no limit) and each kind of case's expected duration
    (the last measured one of that kind, else :data:`FIRST_GUESS`)."""

    def __init__(self, total):
        self.total, self.start, self.seen = total or None, time.monotonic(), {}

    def left(self):
        return None if self.total is None else self.total - (time.monotonic() - self.start)

    def expected(self, what):
        return self.seen.get(what, FIRST_GUESS[what])

    def refuse(self, what):
        """Why a case of kind ``what`` is skipped, or None when it fits."""
        left, need = self.left(), self.expected(what)
        if left is None or need <= left:
            return None
        return f"would take about {need:.0f} s, {max(left, 0):.0f} s of the {self.total:.0f} s budget left"

    def timed(self, what, fn):
        start = time.monotonic()
        out = fn()
        self.seen[what] = time.monotonic() - start
        return out


def check(args):
    dry = args.dry or not torch.cuda.is_available()
    device = torch.device("cpu" if dry else "cuda")
    setup = dict(DRY_SETUP if dry else CUDA_SETUP)
    if args.cases:
        setup["cases"] = tuple(c.strip() for c in args.cases.split(",") if c.strip())
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or os.path.join(REPO_ROOT, "output", "gpu_check", f"{'dry' if dry else 'cuda'}-{stamp}.json")
    budget = Budget(args.budget if args.budget is not None else (None if dry else 300.0))
    result = {"mode": "dry (CPU)" if dry else "cuda", "device": str(device), "torch": torch.__version__,
              "gpu": None if dry else torch.cuda.get_device_name(device), "gpus": torch.cuda.device_count(),
              "cpu": cpu_info(), "setup": {k: list(v) if isinstance(v, tuple) else v for k, v in setup.items()},
              "budget_s": budget.total, "out": out, "complete": False}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)

    def save(*lines):
        atomic_write_text(out, json.dumps(result, indent=2))
        for line in lines:
            print(line, flush=True)

    save(format_title(result), f"JSON (rewritten after each result): {out}")
    if not args.skip_tests:
        selection = args.pytest_args.split() if args.pytest_args is not None else (DRY_TESTS if dry else CUDA_TESTS)
        left = budget.left()
        result["tests"] = run_tests(selection, None if dry or left is None else max(30.0, min(TEST_TIMEOUT, left / 2)))
        save(format_tests(result["tests"]))
    if not args.skip_speed:
        steps = args.steps or (2 if dry else 20)
        # a compile mode's cases (CUDA graphs) at the first batch size only: each compiles anew
        runs = [(case, batch) for batch in setup["batches"] for case in setup["cases"]
                if batch == setup["batches"][0] or ":" not in case]
        runs.sort(key=lambda r: kind(r[0]) == "compile")  # what compiles comes last
        result["steps"], result["skipped"] = [], []
        printed_header = False

        def pipelines():
            per_worker = budget.timed("pipeline", lambda: pipeline_rate(setup, 0.3 if dry else 2.0))
            result["pipeline_per_worker"] = per_worker
            save(f"input pipeline (CIFAR-shaped, two views): {per_worker:.0f} images/s per worker core")
            result["imagenet"] = []
            for fig in imagenet_input(device, 1.0 if dry else 8.0):
                result["imagenet"].append(fig)
                save(format_imagenet(fig))

        for i, (case, batch) in enumerate(runs):
            if kind(case) == "compile" and "imagenet" not in result:
                pipelines()
            why = budget.refuse(kind(case))
            if why:
                result["skipped"].append({"name": case, "batch_size": batch, "reason": why})
                save(f"skipped {case} (batch {batch}): {why}")
                continue
            fig = budget.timed(kind(case), lambda: step_figure(setup, case, batch, device, steps,
                                                               *((1, 1) if dry else (3, 5))))
            result["steps"].append(fig)
            save(*([] if printed_header else [STEP_HEADER]), format_step(fig))
            printed_header = True
        if "imagenet" not in result:
            pipelines()
        if result["steps"]:
            result["projection"] = projection(result["steps"], result["pipeline_per_worker"], args.workers)
            save(format_projection(result["projection"]))
    result["complete"] = True
    save()
    return 0 if result.get("tests", {"ok": True})["ok"] else 1


def main(argv=None):
    args = parse_args(argv)
    return run_tool(lambda: check(args), args.debug, args.quiet)
