"""``python3 tools/demo.py``: a real distillation on Fashion-MNIST, on the CPU, in minutes.

It trains a teacher on a larger share of the training set, then three students on a
smaller share with vanilla training, KD and SLD (configs in ``configs/fashion_mnist/``),
and prints their test top-1: at the epoch selected on a holdout of the training set (the
configs' ``DATASET.HOLDOUT``; the teacher checkpoint the students learn from is selected
the same way), at the last epoch, and the best over epochs (selected on the test set,
optimistic). Every run is an ordinary run folder under ``--output``.
"""

import argparse
import logging
import os
import sys
import time
import warnings

from ..config.load import load_cfg
from ..engine.run import train
from ..runs.selection import describe, select_epoch, selected_on
from ..export.cost import run_cost
from ..runs.folder import run_dir_of
from ..runs.loggers import read_metrics
from .common import REPO_ROOT, ArgumentParser, add_quiet_flag, new_folder, number, run_tool

log = logging.getLogger("mdistiller.demo")

CONFIG_DIR = os.path.join(REPO_ROOT, "configs", "fashion_mnist")
STUDENTS = [("vanilla", "vanilla.yaml"), ("KD", "kd.yaml"), ("SLD", "sld.yaml")]


def parse_args(argv):
    p = ArgumentParser(description="Distil on Fashion-MNIST and print a table of test top-1.")
    p.add_argument("--output", type=new_folder, default=os.path.join(REPO_ROOT, "output", "demo"),
                   help="LOG.PREFIX of the runs")
    p.add_argument("--seed", type=number(int, low=0, high=2**63 - 1), default=0, help="EXPERIMENT.SEED of every run")
    p.add_argument("--epochs-scale", type=number(float, above=0, high=100), default=1.0,
                   help="multiply every run's epochs (quick checks)")
    add_quiet_flag(p)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every run")
    return p.parse_args(argv)


def _load_quietly(path, opts=None):
    """The run's config; its warnings are printed by the training run itself."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_cfg(path, opts)


class RunFailed(Exception):
    """A run of the demo failed; it has printed its one-line error."""


def run_opts(cfg_file, args, extra):
    cfg_path = os.path.join(CONFIG_DIR, cfg_file)
    epochs = _load_quietly(cfg_path).SOLVER.EPOCHS
    opts = ["LOG.PREFIX", args.output, "EXPERIMENT.SEED", str(args.seed),
            "SOLVER.EPOCHS", str(max(1, round(epochs * args.epochs_scale)))] + extra + list(args.opts or [])
    return cfg_path, opts


def check_configs(args):
    """Every run's config with the overrides, before the first run starts (ConfigError)."""
    for _, cfg_file in [("teacher", "teacher.yaml")] + STUDENTS:
        _load_quietly(*run_opts(cfg_file, args, []))


def run(name, cfg_file, args, extra):
    cfg_path, opts = run_opts(cfg_file, args, extra)
    log.info(f"\n=== {name}: {cfg_file} ===")
    t0 = time.time()
    code = train(cfg_path, opts, overwrite=True, quiet=args.quiet)
    if code != 0:
        raise RunFailed(code)
    cfg = _load_quietly(cfg_path, opts)
    run_dir = run_dir_of(cfg)
    metrics = read_metrics(run_dir)
    on = selected_on(cfg.DATASET.HOLDOUT > 0)
    return {"name": name, "run_dir": run_dir, "model": cfg.DISTILLER.STUDENT, "selected_on": on,
            "selected": select_epoch(metrics, on)["test_acc"], "last": metrics[-1]["test_acc"],
            "best": max(r["test_acc"] for r in metrics), "epochs": len(metrics), "seconds": time.time() - t0}


def main(argv=None):
    args = parse_args(list(sys.argv[1:] if argv is None else argv))

    def body():
        check_configs(args)
        try:
            return demo(args)
        except RunFailed as e:  # the run printed its error line
            return e.args[0]

    return run_tool(body, False, args.quiet)


def demo(args):
    t0 = time.time()
    teacher = run("teacher", "teacher.yaml", args, [])
    ckpt = os.path.join(teacher["run_dir"], "student_best")
    rows = [teacher] + [run(n, f, args, ["DISTILLER.TEACHER_CKPT", ckpt]) for n, f in STUDENTS]
    total = time.time() - t0
    # the table is the demo's result: printed even with --quiet
    costs = [run_cost(r["run_dir"], r["model"]) for r in rows]  # parameters, FLOPs, latency (cached)
    print("\nFashion-MNIST demo (test top-1 %, seed {}):".format(args.seed))
    print(f"{'run':<10}{'model':<12}{'epochs':>7}{'selected':>10}{'last':>8}{'best':>8}{'time (s)':>10}"
          f"{'params (M)':>12}{'MFLOPs':>8}{'latency (ms)':>14}")
    for r, c in zip(rows, costs):
        print(f"{r['name']:<10}{r['model']:<12}{r['epochs']:>7}{r['selected']:>10.2f}{r['last']:>8.2f}{r['best']:>8.2f}"
              f"{r['seconds']:>10.1f}{c['parameters'] / 1e6:>12.3f}{c['flops'] / 1e6:>8.1f}{c['latency_ms']:>14.2f}")
    for on in sorted({r["selected_on"] for r in rows}):
        print(f"selected: {describe(on)} ({', '.join(r['name'] for r in rows if r['selected_on'] == on)})")
    print("best: the highest test top-1 over epochs (selected on the test set: optimistic); last: the last epoch's")
    print(f"params, MFLOPs per image, latency: batch 1, PyTorch, on {costs[0]['cpu']}")
    print(f"total wall time {total:.0f} s; run folders under {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
