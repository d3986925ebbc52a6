#!/usr/bin/env python3
"""How much slower is a short CPU training beside another torch process than alone?

``python3 scripts/contention.py`` times a short SLD training (``tools/train_ours.py``:
resnet20 -> resnet8 on synthetic 32x32 data, 640 images, batch 64, 2 epochs, a random
teacher; the whole process from ``python3`` to exit) for 1 and 2 threads, alone and beside a
competing process that runs 2-thread torch convolutions (an SGD loop; plain ``torch``, no
mdistiller, stock OpenMP settings) started before the training and stopped after it.

Two modes: ``stock`` switches the framework's thread defaults off
(``MDISTILLER_THREAD_DEFAULTS=0``: torch's own 2 threads, libgomp spinning at barriers),
``defaults`` runs with them (see :mod:`mdistiller.utils.threads`). "1 thread" sets
``OMP_NUM_THREADS=1`` for the training; "default threads" sets nothing. The table gives each
configuration's median wall time over ``--repeats`` and its ratio to the same mode's solo
time with default threads (what a user gets by changing nothing). Prints the machine's load
before and after: the figures mean something only on an otherwise idle machine.

Takes about 3 minutes on 2 cores (``--repeats 1`` about half). ``--json FILE`` also writes
the figures.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: a 2-thread torch process (the yardstick of tools/benchmark.py in a loop), stock settings
COMPETITOR = """
import torch, torch.nn as nn
torch.set_num_threads(2)
net = nn.Sequential(*[m for _ in range(4) for m in (nn.Conv2d(64, 64, 3, padding=1), nn.ReLU())])
opt = torch.optim.SGD(net.parameters(), lr=1e-3)
x = torch.randn(32, 64, 32, 32)
print("ready", flush=True)
while True:
    opt.zero_grad(set_to_none=True); net(x).sum().backward(); opt.step()
"""
#: variables a competitor and a stock run must not inherit from this shell
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME",
               "MDISTILLER_THREAD_DEFAULTS")
MODES = {"stock": {"MDISTILLER_THREAD_DEFAULTS": "0"}, "defaults": {}}
THREADS = {"default": {}, "1": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}}


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    env.update(PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""), WANDB_MODE="disabled")
    env.update(extra)
    return env


def load():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def write_teacher(path):
    code = ("import sys, torch; from mdistiller.models import build_model; torch.manual_seed(0); "
            "torch.save({'model': build_model('resnet20', 'cifar', 10).state_dict()}, sys.argv[1])")
    subprocess.run([sys.executable, "-c", code, path], check=True, env=clean_env())


def train_argv(tmp, teacher, epochs):
    return [sys.executable, os.path.join(REPO, "tools", "train_ours.py"), "--overwrite",
            "DISTILLER.TYPE", "SLD", "DISTILLER.TEACHER", "resnet20", "DISTILLER.STUDENT", "resnet8",
            "DISTILLER.TEACHER_CKPT", teacher, "DATASET.TYPE", "synthetic", "DATASET.SYNTHETIC_SIZE", "640",
            "DATASET.SYNTHETIC_CLASSES", "10", "DATASET.NUM_WORKERS", "0", "DATASET.TEST.BATCH_SIZE", "256",
            "SOLVER.BATCH_SIZE", "64", "SOLVER.EPOCHS", str(epochs), "SOLVER.CHANNELS_LAST", "True",
            "SOLVER.DEVICE", "cpu", "SLD.GAMMA", "1", "LOG.WANDB", "False", "LOG.PROGRESS", "False",
            "LOG.PREFIX", os.path.join(tmp, "out"), "EXPERIMENT.NAME", "contention"]


def timed_run(argv, env):
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        raise SystemExit(f"contention: the training failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return time.perf_counter() - start


def with_competitor(fn):
    """``fn()`` while a 2-thread torch process runs (started and warm before, killed after)."""
    proc = subprocess.Popen([sys.executable, "-c", COMPETITOR], env=clean_env(), stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()  # "ready": torch imported, tensors allocated
        time.sleep(1.0)
        return fn()
    finally:
        proc.kill()
        proc.wait()


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=2, help="runs per configuration (the median is reported)")
    p.add_argument("--epochs", type=int, default=2, help="epochs of the short training")
    p.add_argument("--modes", default="stock,defaults", help=f"comma-separated, of {', '.join(MODES)}")
    p.add_argument("--env", action="append", default=[], metavar="NAME:VAR=VALUE[,VAR=VALUE]",
                   help="an extra mode: these variables set on top of the stock mode (exploring mitigations)")
    p.add_argument("--json", default="", help="also write the figures to this file")
    args = p.parse_args(argv)
    modes = {}
    for name in args.modes.split(","):
        if name not in MODES:
            p.error(f"unknown mode '{name}'; use {', '.join(MODES)}")
        modes[name] = MODES[name]
    for spec in args.env:
        name, _, pairs = spec.partition(":")
        modes[name] = dict(MODES["stock"], **dict(kv.split("=", 1) for kv in pairs.split(",") if kv))
    args.mode_envs = modes
    return args


def main(argv=None):
    args = parse_args(argv)
    print(f"load before: {load()} ({os.cpu_count()} CPUs, {len(os.sched_getaffinity(0))} usable)", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        teacher = os.path.join(tmp, "teacher.pth")
        write_teacher(teacher)
        argv = train_argv(tmp, teacher, args.epochs)
        for mode, mode_env in args.mode_envs.items():
            for threads, thread_env in THREADS.items():
                env = clean_env(**mode_env, **thread_env)
                for beside in ("alone", "beside 2-thread torch"):
                    run = (lambda: timed_run(argv, env)) if beside == "alone" else \
                        (lambda: with_competitor(lambda: timed_run(argv, env)))
                    times = [run() for _ in range(args.repeats)]
                    rows.append({"mode": mode, "threads": threads, "beside": beside,
                                 "seconds": statistics.median(times), "runs": times})
                    print(f"  {mode:10s} threads {threads:8s} {beside:22s} "
                          + " ".join(f"{t:.1f}" for t in times), flush=True)
    solo = {r["mode"]: r["seconds"] for r in rows if r["threads"] == "default" and r["beside"] == "alone"}
    for r in rows:
        r["vs_solo"] = r["seconds"] / solo[r["mode"]]
        r["vs_first_solo"] = r["seconds"] / next(iter(solo.values()))
    first = next(iter(solo))
    print(f"load after: {load()}\n")
    print(f"{'mode':10s}  {'threads':8s}  {'run':22s}  {'seconds':>8s}  {'vs solo':>8s}  {'vs ' + first + ' solo':>14s}")
    for r in rows:
        print(f"{r['mode']:10s}  {r['threads']:8s}  {r['beside']:22s}  {r['seconds']:8.1f}  {r['vs_solo']:7.2f}x  "
              f"{r['vs_first_solo']:13.2f}x")
    print("vs solo: time / the same mode's time alone with default threads; vs " + first + " solo: over that of "
          f"the {first} mode (whole process, median of {args.repeats}; {args.epochs}-epoch SLD resnet20 -> resnet8, "
          "640 synthetic images, batch 64)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"load": load(), "repeats": args.repeats, "epochs": args.epochs, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
