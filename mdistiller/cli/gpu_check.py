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

Without CUDA (or with ``--dry``) it runs the same plumbing on the CPU, short: the CPU twins
of the checks (channels_last, bf16, no host sync, prefetch, non-finite loss, exact resume;
the CUDA tests are collected and skipped) and the speed figures on tiny models; exit 0 when
they pass. Needs nothing but the repository (no dataset, no download).
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
from ..utils.cpuinfo import cpu_info
from ..config.defaults import CFG
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
    add_debug_flag(p)
    return p.parse_args(argv)


def run_tests(selection):
    """``pytest -q`` on ``selection`` in a subprocess: {"passed", "failed", "skipped", "ok", "seconds", "tail"}."""
    start = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selection], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True)
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
            "--repeats", "1", "--yardstick-iters", str(yardstick_iters), "--device", device.type,
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
                             "--yardstick-iters", "1", "--pipeline-seconds", str(seconds), "--device", "cpu"])
    figs = {f["name"]: f for f in bench.benchmark(args)["figures"]}
    return figs["pipeline/2"]["value"]


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


def format_report(result):
    lines = [f"gpu_check ({result['mode']}): device {result['device']}"
             + (f" ({result['gpu']})" if result.get("gpu") else "") + f", torch {result['torch']}"]
    t = result.get("tests")
    if t:
        lines.append(f"tests: {'ok' if t['ok'] else 'FAILED'}: {t['passed']} passed, {t['failed']} failed, "
                     f"{t['skipped']} skipped in {t['seconds']:.0f} s")
        if not t["ok"]:
            lines += ["  " + line for line in t["tail"]]
    steps = result.get("steps")
    if steps:
        lines.append(f"{'step case':36s} {'batch':>5s} {'samples/s':>10s} {'ms':>8s} {'peak MB':>8s}")
        for f in steps:
            mem = f"{f['peak_memory_mb']:.0f}" if f["peak_memory_mb"] is not None else "-"
            lines.append(f"{f['name']:36s} {f['batch_size']:5d} {f['value']:10.1f} {f['ms']:8.1f} {mem:>8s}")
        p = result["projection"]
        lines.append(f"input pipeline: {p['input_images_per_s']:.0f} two-view images/s with {p['workers']} workers "
                     f"(reference design limit {p['reference_input_limit']:.0f}/s: "
                     f"{p['reference_hours_floor']:.2f} h for {EPOCHS} CIFAR-100 epochs at best)")
        for batch, b in p["by_batch"].items():
            lines.append(f"batch {batch}: best {b['best_case']} {b['step_samples_per_s']:.0f} samples/s, "
                         f"{'loader-bound' if b['loader_bound'] else 'step-bound'}; {EPOCHS}-epoch CIFAR-100 SLD "
                         f"projected {b['projected_hours']:.2f} h (training steps)")
    lines.append(f"JSON: {result['out']}")
    return "\n".join(lines)


def check(args):
    dry = args.dry or not torch.cuda.is_available()
    device = torch.device("cpu" if dry else "cuda")
    setup = dict(DRY_SETUP if dry else CUDA_SETUP)
    if args.cases:
        setup["cases"] = tuple(c.strip() for c in args.cases.split(",") if c.strip())
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or os.path.join(REPO_ROOT, "output", "gpu_check", f"{'dry' if dry else 'cuda'}-{stamp}.json")
    result = {"mode": "dry (CPU)" if dry else "cuda", "device": str(device), "torch": torch.__version__,
              "gpu": None if dry else torch.cuda.get_device_name(device), "gpus": torch.cuda.device_count(),
              "cpu": cpu_info(), "setup": {k: list(v) if isinstance(v, tuple) else v for k, v in setup.items()},
              "out": out}
    if not args.skip_tests:
        selection = args.pytest_args.split() if args.pytest_args is not None else (DRY_TESTS if dry else CUDA_TESTS)
        result["tests"] = run_tests(selection)
    if not args.skip_speed:
        steps = args.steps or (2 if dry else 20)
        # a compile mode's cases (CUDA graphs) at the first batch size only: each compiles anew
        result["steps"] = [step_figure(setup, case, batch, device, steps, *((1, 1) if dry else (3, 5)))
                           for batch in setup["batches"] for case in setup["cases"]
                           if batch == setup["batches"][0] or ":" not in case]
        per_worker = pipeline_rate(setup, 0.3 if dry else 2.0)
        result["projection"] = projection(result["steps"], per_worker, args.workers)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(format_report(result), flush=True)
    return 0 if result.get("tests", {"ok": True})["ok"] else 1


def main(argv=None):
    args = parse_args(argv)
    return run_tool(lambda: check(args), args.debug, args.quiet)
