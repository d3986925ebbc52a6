"""Summarize the runs of a project folder: one row per configuration, seeds aggregated.

    python3 tools/summarize.py output/<project> [--csv | --markdown] [--plot [DIR]]

Every folder below the root holding ``config.yaml`` and ``metrics.jsonl`` is a run. Runs
are grouped by their merged config minus ``EXPERIMENT.SEED/NAME/TAG`` and ``LOG.*``, so the
seeds of one configuration form one group. Each row shows the keys that differ between
groups, the number of seeds, epochs done / total (``*`` = some run unfinished), best and
last test top-1 / top-5 as mean ± std over seeds (sample std; blank for one seed), and,
where ``EXPERIMENT.PUBLISHED_TOP1`` >= 0, the published top-1 and best mean − published.
"Best" is the maximum over epochs of each run; "last" is the last finished epoch.

``--plot`` writes ``top1_curves.png`` (test top-1 over epochs, mean line and ±std band per
group) and, when exactly one key varies across groups, ``top1_vs_<KEY>.png`` (last-epoch
top-1 against that key's value, mean ± std error bars).
"""

import argparse
import csv
import io
import json
import math
import os
import re
import statistics
import sys
import textwrap
import warnings
from dataclasses import dataclass, field

from ..engine.cfg import ConfigWarning, cfg_to_dict, load_cfg
from ..engine.loggers import read_metrics
from ..utils.errors import DataError, MdistillerError
from .common import ArgumentParser, add_debug_flag, run_tool

IGNORED_KEYS = ("EXPERIMENT.SEED", "EXPERIMENT.NAME", "EXPERIMENT.TAG")
IGNORED_PREFIXES = ("LOG.",)
PUBLISHED_KEY = "EXPERIMENT.PUBLISHED_TOP1"
COUNTS = ["seeds", "epochs_done_min", "epochs_done_max", "epochs_total", "unfinished"]
STATS = [("best_top1", "best top-1"), ("last_top1", "last top-1"),
         ("best_top5", "best top-5"), ("last_top5", "last top-5")]


# ---------------------------------------------------------------------------------------
# Reading run folders
# ---------------------------------------------------------------------------------------
def flatten(tree, prefix=""):
    """``{"A": {"B": 1}}`` -> ``{"A.B": 1}``."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@dataclass
class Run:
    path: str
    config: dict  # flat dotted keys -> values of the merged config
    records: list  # metrics.jsonl records, one per epoch

    @property
    def name(self):
        return os.path.basename(os.path.normpath(self.path))

    @property
    def epochs_total(self):
        return self.config["SOLVER.EPOCHS"]

    @property
    def epochs_done(self):
        return self.records[-1]["epoch"] if self.records else 0

    @property
    def finished(self):
        return self.epochs_done >= self.epochs_total

    def curve(self, key="test_acc"):
        """Epoch -> value of ``key``; a value that is not a number (a hand-edited or foreign
        record, or Infinity / NaN) is left out."""
        return {r["epoch"]: float(r[key]) for r in self.records
                if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)
                and math.isfinite(r[key])}

    def stat(self, name):
        """``best_top1``, ``last_top1``, ``best_top5`` or ``last_top5`` (nan if no epoch)."""
        which, k = name.split("_")
        values = list(self.curve("test_acc" if k == "top1" else "test_acc_top5").values())
        if not values:
            return math.nan
        return max(values) if which == "best" else values[-1]


def find_run_dirs(root):
    """Folders under ``root`` (included) holding both config.yaml and metrics.jsonl."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if "config.yaml" in filenames and "metrics.jsonl" in filenames:
            found.append(dirpath)
    return found


def load_run(run_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        cfg = load_cfg(os.path.join(run_dir, "config.yaml"))
    return Run(run_dir, flatten(cfg_to_dict(cfg)), read_metrics(run_dir))


def load_runs(root):
    """All runs under ``root``; folders whose config no longer loads are reported and skipped."""
    runs = []
    for d in find_run_dirs(root):
        try:
            runs.append(load_run(d))
        except MdistillerError as e:
            print(f"warning: skipping {d}: {e}", file=sys.stderr)
        except (OSError, ValueError, KeyError, TypeError) as e:  # unreadable or foreign files
            print(f"warning: skipping {d}: cannot read it ({type(e).__name__}: {str(e)[:120]})", file=sys.stderr)
    return runs


# ---------------------------------------------------------------------------------------
# Grouping and statistics
# ---------------------------------------------------------------------------------------
def group_config(run):
    return {k: v for k, v in run.config.items()
            if k not in IGNORED_KEYS and not k.startswith(IGNORED_PREFIXES)}


def _sort_key(value):
    if isinstance(value, (list, tuple)):
        return (2, tuple(_sort_key(v) for v in value))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, str(value))


def format_value(value):
    """Compact text of a config value: ``150``, ``0.1``, ``[2,3,4]``."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclass
class Group:
    config: dict
    runs: list = field(default_factory=list)
    varying: dict = field(default_factory=dict)  # the keys that differ across groups -> value

    @property
    def label(self):
        if self.varying:
            return ", ".join(f"{k}={format_value(v)}" for k, v in self.varying.items())
        return re.sub(r"_seed\d+$", "", self.runs[0].name)

    @property
    def published(self):
        p = self.config.get(PUBLISHED_KEY, -1.0)
        return p if p >= 0 else None


def group_runs(runs):
    """Groups of runs sharing a config (seeds together), with the keys that vary across
    groups (``EXPERIMENT.PUBLISHED_TOP1`` has its own column), sorted by those keys."""
    groups = {}
    for run in runs:
        cfg = group_config(run)
        groups.setdefault(json.dumps(cfg, sort_keys=True), Group(cfg)).runs.append(run)
    groups = list(groups.values())
    keys = sorted({k for g in groups for k in g.config} - {PUBLISHED_KEY})
    varying = [k for k in keys if len({json.dumps([k in g.config, g.config.get(k)]) for g in groups}) > 1]
    for g in groups:
        g.varying = {k: g.config.get(k) for k in varying}
        g.runs.sort(key=lambda r: (r.config.get("EXPERIMENT.SEED", 0), r.name))
    groups.sort(key=lambda g: [_sort_key(v) for v in g.varying.values()] + [g.label])
    return groups, varying


def mean_std(values):
    """Mean and sample std of the finite values (std nan for fewer than two)."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def group_stats(group):
    """Numbers of one table row."""
    done = [r.epochs_done for r in group.runs]
    row = dict(zip(COUNTS, [len(group.runs), min(done), max(done), group.runs[0].epochs_total,
                            sum(not r.finished for r in group.runs)]))
    for name, _ in STATS:
        row[name] = mean_std([r.stat(name) for r in group.runs])
    row["published"] = group.published
    row["diff"] = None if group.published is None else row["best_top1"][0] - group.published
    return row


# ---------------------------------------------------------------------------------------
# Output formats
# ---------------------------------------------------------------------------------------
def _num(x, signed=False):
    if x is None or math.isnan(x):
        return "-"
    return f"{x:+.2f}" if signed else f"{x:.2f}"


def _pm(mean, std):
    return _num(mean) if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def display_table(groups, varying):
    """Header and rows of cells for the text and markdown formats."""
    stats = [group_stats(g) for g in groups]
    show_published = any(s["published"] is not None for s in stats)
    header = (varying or ["run"]) + ["seeds", "epochs"] + [t for _, t in STATS]
    header += ["published", "Δ best"] if show_published else []
    rows = []
    for g, s in zip(groups, stats):
        lo, hi = s["epochs_done_min"], s["epochs_done_max"]
        epochs = f"{lo if lo == hi else f'{lo}-{hi}'}/{s['epochs_total']}" + ("*" if s["unfinished"] else "")
        cells = [format_value(v) for v in g.varying.values()] or [g.label]
        cells += [str(s["seeds"]), epochs] + [_pm(*s[name]) for name, _ in STATS]
        cells += [_num(s["published"]), _num(s["diff"], signed=True)] if show_published else []
        rows.append(cells)
    note = "* = includes unfinished runs (partial numbers)" if any(s["unfinished"] for s in stats) else ""
    return header, rows, note


def format_text(groups, varying):
    header, rows, note = display_table(groups, varying)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + ([note] if note else [])) + "\n"


def format_markdown(groups, varying):
    header, rows, note = display_table(groups, varying)

    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    lines = [line(header), "|" + "|".join("---" for _ in header) + "|"] + [line(r) for r in rows]
    return "\n".join(lines + (["", note] if note else [])) + "\n"


def format_csv(groups, varying):
    """Machine-readable: one column per varying key, means and stds in separate columns."""
    fields = ["group"] + varying + COUNTS + [f"{name}_{part}" for name, _ in STATS for part in ("mean", "std")]
    fields += ["published_top1", "best_top1_minus_published", "runs"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()

    def cell(x):
        return "" if x is None or (isinstance(x, float) and math.isnan(x)) else x

    for g in groups:
        s = group_stats(g)
        row = {"group": g.label, **{k: format_value(v) for k, v in g.varying.items()}}
        row.update({k: s[k] for k in COUNTS})
        for name, _ in STATS:
            row[f"{name}_mean"], row[f"{name}_std"] = map(cell, s[name])
        row.update(published_top1=cell(s["published"]), best_top1_minus_published=cell(s["diff"]),
                   runs=";".join(r.name for r in g.runs))
        writer.writerow(row)
    return out.getvalue()


# ---------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------
def _new_figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=110)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _band(runs, key="test_acc"):
    """Epochs, mean and std over the runs that reached each epoch (std 0 for one run)."""
    curves = [r.curve(key) for r in runs]
    epochs = sorted({e for c in curves for e in c})
    stats = [mean_std([c[e] for c in curves if e in c]) for e in epochs]
    return epochs, [m for m, _ in stats], [0.0 if math.isnan(s) else s for _, s in stats]


def _published_line(ax, groups):
    published = {g.published for g in groups}
    if len(published) == 1 and None not in published:
        ax.axhline(published.pop(), color="gray", linestyle="--", linewidth=1, label="published")


def plot_curves(groups, path):
    """Test top-1 over epochs: one mean line with a ±std band (over seeds) per group."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = _new_figure()
    for g in groups:
        epochs, mean, std = _band(g.runs)
        if not epochs:
            continue
        unfinished = ", unfinished" if any(not r.finished for r in g.runs) else ""
        line, = ax.plot(epochs, mean, marker="o" if len(epochs) < 20 else None, markersize=3,
                        label=textwrap.fill(f"{g.label} (n={len(g.runs)}{unfinished})", 100))
        ax.fill_between(epochs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color=line.get_color(), alpha=0.2, linewidth=0)
    _published_line(ax, groups)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="test top-1 (%)", title="test top-1 over epochs (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    # below the axes: group labels can be long when several keys vary
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.13), frameon=False)
    fig.savefig(path, bbox_inches="tight")
    return path


def plot_sweep(groups, key, path):
    """Last-epoch top-1 against the one varying key's value, mean ± std error bars."""
    values = [g.varying[key] for g in groups]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    xs = values if numeric else list(range(len(values)))
    stats = [mean_std([r.stat("last_top1") for r in g.runs]) for g in groups]
    fig, ax = _new_figure()
    ax.errorbar(xs, [m for m, _ in stats], yerr=[0.0 if math.isnan(s) else s for _, s in stats],
                marker="o", capsize=4, label="last-epoch top-1")
    if not numeric:
        ax.set_xticks(xs, [format_value(v) for v in values], rotation=20 if len(values) > 4 else 0)
    elif min(xs) > 0 and max(xs) >= 100 * min(xs):  # values spanning decades (learning rates)
        ax.set_xscale("log")
    _published_line(ax, groups)
    ax.set(xlabel=key, ylabel="test top-1 (%)", title=f"last-epoch top-1 vs {key} (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_plots(groups, varying, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    paths = [plot_curves(groups, os.path.join(out_dir, "top1_curves.png"))]
    if len(varying) == 1:
        safe = re.sub(r"[^\w.-]+", "_", varying[0])
        paths.append(plot_sweep(groups, varying[0], os.path.join(out_dir, f"top1_vs_{safe}.png")))
    return paths


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------
def parse_args(argv=None):
    summary, details = __doc__.split("\n\n", 1)
    p = ArgumentParser(description=summary, epilog=details,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="project folder (LOG.PREFIX/EXPERIMENT.PROJECT); searched recursively")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="print CSV instead of an aligned table")
    fmt.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument("--plot", nargs="?", const="", default=None, metavar="DIR",
                   help="write PNG plots into DIR (default: the project folder)")
    add_debug_flag(p)
    return p.parse_args(argv)


def summarize(args):
    if not os.path.isdir(args.root):
        raise DataError(f"'{args.root}' is not a folder; give the project folder, e.g. output/<project>")
    runs = load_runs(args.root)
    if not runs:
        raise DataError(f"no run folders (config.yaml + metrics.jsonl) under '{args.root}'; check the path")
    groups, varying = group_runs(runs)
    formatter = format_csv if args.csv else format_markdown if args.markdown else format_text
    sys.stdout.write(formatter(groups, varying))
    if args.plot is not None:
        out_dir = args.plot or args.root
        try:
            paths = write_plots(groups, varying, out_dir)
        except OSError as e:
            reason = os.strerror(e.errno) if e.errno else str(e)
            raise DataError(f"cannot write plots into '{out_dir}': {reason}; pass --plot DIR with a writable "
                            f"folder") from None
        for path in paths:
            print(f"wrote {path}", file=sys.stderr)
    return 0


def main(argv=None):
    args = parse_args(argv)
    return run_tool(lambda: summarize(args), args.debug, args.quiet)


if __name__ == "__main__":
    sys.exit(main())
