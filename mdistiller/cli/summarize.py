"""Summarize the runs of a project folder: one row per configuration, seeds aggregated.

    python3 tools/summarize.py output/<project> [--csv | --markdown | --json] [--plot [DIR]]
        [--baseline KEY=VALUE [--paired]] [--metric selected|last|best]

Every folder below the root holding ``config.yaml`` and ``metrics.jsonl`` is a run. Runs
are grouped by their merged config minus ``EXPERIMENT.SEED/NAME/TAG`` and ``LOG.*``, so the
seeds of one configuration form one group. Each row shows the keys that differ between
groups, the number of seeds, epochs done / total (``*`` = some run unfinished), and test
top-1 as mean ± std over seeds (sample std; blank for one seed) of three figures per run:
"selected" at the epoch its holdout selected (runs with ``DATASET.HOLDOUT``; the honest
figure), "last" at the last finished epoch, and "best", the maximum over epochs, which the
test set selects and is therefore optimistic; then best and last top-5 and, where
``EXPERIMENT.PUBLISHED_TOP1`` >= 0, the published top-1 and best mean − published.

``--baseline KEY=VALUE`` (repeatable; the one group matching all) adds, for every other
group, the difference of means of the ``--metric`` figure (group − baseline) with its 95%
confidence interval and the two-sided p-value of Welch's t-test (scipy.stats.ttest_ind,
equal_var=False); ``--paired`` uses the paired t-test over the seeds both groups have
(scipy.stats.ttest_rel). Fewer than two seeds: the row says so. ``--json`` prints it all as
JSON. The statistics need scipy (``pip install -e .[stats]``).

``--plot`` writes ``top1_curves.png`` (test top-1 over epochs, mean line and ±std band per
group), when exactly one key varies across groups ``top1_vs_<KEY>.png`` (the metric's
top-1 against that key's value, mean ± std error bars), and with ``--baseline``
``diff_vs_baseline.png`` (each group's difference with its 95% interval).

``--cost`` adds each group's student's parameters, FLOPs per image and CPU latency at
batch 1 (measured once per architecture and input size on this machine, cached; see
:mod:`mdistiller.export.cost`), and with ``--plot`` draws ``top1_vs_flops.png`` and
``top1_vs_latency.png`` (the ``--metric`` top-1, mean ± std over seeds, one point per group).
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

import yaml

from ..config.load import ConfigWarning, cfg_to_dict, load_cfg
from ..runs.selection import HOLDOUT, select_epoch
from ..export.cost import run_cost
from ..runs.loggers import read_metrics
from ..utils.errors import ConfigError, DataError, MdistillerError
from .common import ArgumentParser, add_debug_flag, run_tool

IGNORED_KEYS = ("EXPERIMENT.SEED", "EXPERIMENT.NAME", "EXPERIMENT.TAG")
IGNORED_PREFIXES = ("LOG.",)
PUBLISHED_KEY = "EXPERIMENT.PUBLISHED_TOP1"
COUNTS = ["seeds", "epochs_done_min", "epochs_done_max", "epochs_total", "unfinished"]
STATS = [("selected_top1", "selected top-1"), ("last_top1", "last top-1"), ("best_top1", "best top-1 (optimistic)"),
         ("best_top5", "best top-5"), ("last_top5", "last top-5")]
#: the three figures of a run (``--metric``): holdout-selected, last, best on the test set
METRICS = ("selected", "last", "best")
STATS_EXTRA = "pip install -e .[stats] (or pip install scipy)"


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

    @property
    def has_holdout(self):
        return self.config.get("DATASET.HOLDOUT", 0) > 0

    @property
    def seed(self):
        return self.config.get("EXPERIMENT.SEED", 0)

    def stat(self, name):
        """``selected_top1`` (test top-1 at the epoch the holdout selected; nan without a
        holdout), ``best_top1``, ``last_top1``, ``best_top5`` or ``last_top5`` (nan if no epoch)."""
        which, k = name.split("_")
        key = "test_acc" if k == "top1" else "test_acc_top5"
        if which == "selected":
            ema = bool(self.config.get("SOLVER.EMA_SELECT", False))  # the run selected (and reports) its EMA
            record = select_epoch(self.records, HOLDOUT, ema=ema) if self.has_holdout else None
            value = record.get("ema_acc" if ema and k == "top1" else key) if record else None
            return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
        values = list(self.curve(key).values())
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
# Comparisons with a baseline group
# ---------------------------------------------------------------------------------------
def default_metric(runs):
    """``selected`` when every run has a holdout, else ``last``."""
    return "selected" if runs and all(r.has_holdout for r in runs) else "last"


def figures(group, metric):
    """``{seed: top-1}`` of the group's runs with a number for ``metric``."""
    out = {}
    for r in group.runs:
        v = r.stat(f"{metric}_top1")
        if not math.isnan(v):
            out[r.seed] = v
    return out


def parse_selector(text):
    """``KEY=VALUE`` -> (KEY, VALUE text), or a ConfigError saying the form."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise ConfigError(f"--baseline '{text}' is not KEY=VALUE; e.g. --baseline DISTILLER.TYPE=KD")
    return key.strip(), value.strip()


def _same(config_value, text):
    """Does a config value equal the selector's VALUE text (as YAML, or as this tool prints it)?"""
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        parsed = text
    if isinstance(config_value, (list, tuple)) and isinstance(parsed, list):
        return list(config_value) == parsed
    return parsed == config_value or format_value(config_value) == text or str(config_value) == text


def find_baseline(groups, selectors):
    """The one group matching every ``KEY=VALUE`` of ``selectors``."""
    pairs = [parse_selector(s) for s in selectors]
    for key, _ in pairs:
        if not any(key in g.config for g in groups):
            raise ConfigError(f"--baseline: no run has the config key '{key}'; give a dotted key such as "
                              f"DISTILLER.TYPE")
    found = [g for g in groups if all(k in g.config and _same(g.config[k], v) for k, v in pairs)]
    wanted = " ".join(selectors)
    if not found:
        values = sorted({format_value(g.config.get(pairs[0][0])) for g in groups})
        raise ConfigError(f"--baseline {wanted} matches no group ({pairs[0][0]} takes {', '.join(values)}); "
                          f"pick one of those values")
    if len(found) > 1:
        raise ConfigError(f"--baseline {wanted} matches {len(found)} groups ({'; '.join(g.label for g in found)}); "
                          f"add another --baseline KEY=VALUE to pick one")
    return found[0]


def _finite_or_none(x):
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def compare(x, y, paired=False):
    """``(diff, [low, high], p)`` of ``x`` minus ``y``: Welch's t-test (scipy.stats.ttest_ind,
    equal_var=False) with its Welch–Satterthwaite 95% interval, or with ``paired`` the
    paired t-test (scipy.stats.ttest_rel, ``x`` and ``y`` aligned); None where undefined."""
    try:
        from scipy import stats
    except ImportError:
        raise ConfigError(f"--baseline needs scipy for its t-tests: {STATS_EXTRA}") from None
    with warnings.catch_warnings():  # near-identical figures: scipy warns, its numbers stand
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_rel(x, y) if paired else stats.ttest_ind(x, y, equal_var=False)
        ci = res.confidence_interval(0.95)
    diff = statistics.fmean(a - b for a, b in zip(x, y)) if paired else statistics.fmean(x) - statistics.fmean(y)
    interval = [_finite_or_none(ci.low), _finite_or_none(ci.high)]
    return diff, (None if None in interval else interval), _finite_or_none(res.pvalue)


def comparisons(groups, baseline, metric, paired=False):
    """Per group (by id): ``{"diff", "ci95", "p_value", "n", "note"}`` against ``baseline``;
    ``note`` says why numbers are missing ("baseline", "fewer than two seeds", ...)."""
    base = figures(baseline, metric)
    out = {}
    for g in groups:
        mine = figures(g, metric)
        entry = {"diff": None, "ci95": None, "p_value": None, "n": len(mine), "note": None}
        if g is baseline:
            entry["note"] = "baseline"
        elif paired:
            seeds = sorted(set(mine) & set(base))
            entry["n"] = len(seeds)
            if len(seeds) < 2:
                entry["note"] = f"fewer than two seeds shared with the baseline ({len(seeds)})"
            else:
                entry["diff"], entry["ci95"], entry["p_value"] = compare([mine[s] for s in seeds],
                                                                         [base[s] for s in seeds], paired=True)
        elif len(mine) < 2 or len(base) < 2:
            entry["note"] = f"fewer than two seeds ({len(mine)} vs {len(base)} in the baseline)"
            if mine and base:
                entry["diff"] = statistics.fmean(mine.values()) - statistics.fmean(base.values())
        else:
            entry["diff"], entry["ci95"], entry["p_value"] = compare(list(mine.values()), list(base.values()))
        out[id(g)] = entry
    return out


def _cmp_cells(entry):
    """(difference [interval], p) cells of a comparison."""
    if entry["note"] == "baseline":
        return "baseline", ""
    if entry["note"]:
        return "n/a: " + entry["note"].split(" (")[0], "-"
    if entry["ci95"] is None:
        return f"{entry['diff']:+.2f} [undefined]", "-"
    low, high = entry["ci95"]
    p = entry["p_value"]
    return f"{entry['diff']:+.2f} [{low:+.2f}, {high:+.2f}]", "-" if p is None else f"{p:.3g}"


# ---------------------------------------------------------------------------------------
# Output formats
# ---------------------------------------------------------------------------------------
def _num(x, signed=False):
    if x is None or math.isnan(x):
        return "-"
    return f"{x:+.2f}" if signed else f"{x:.2f}"


def _pm(mean, std):
    return _num(mean) if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


@dataclass
class Comparison:
    """What ``--baseline`` adds: the figure compared, the test and each group's result."""

    baseline: Group
    metric: str
    paired: bool
    entries: dict  # id(group) -> comparisons() entry


def shown_stats(groups):
    """The columns of STATS shown: "selected" only where some run has a holdout."""
    holdout = any(r.has_holdout for g in groups for r in g.runs)
    return [(n, t) for n, t in STATS if holdout or n != "selected_top1"]


def legend(groups, comparison=None):
    """The lines under a table that say how each figure was selected."""
    lines = []
    if any(r.has_holdout for g in groups for r in g.runs):
        lines.append("selected = test top-1 at the epoch with the best holdout top-1 (selected without the test set)")
    lines.append("best = the highest test top-1 over epochs (selected on the test set: optimistic); "
                 "last = the last epoch's")
    if comparison is not None:
        test = "paired t-test over shared seeds" if comparison.paired else "Welch's t-test"
        lines.append(f"Δ = mean {comparison.metric} top-1 minus the baseline's ({comparison.baseline.label}), "
                     f"[95% confidence interval], p: two-sided {test}")
    return lines


def display_table(groups, varying, comparison=None, extra=None):
    """Header, rows of cells and note lines for the text and markdown formats (``extra``:
    added columns, see :func:`cost_columns`)."""
    stats = [group_stats(g) for g in groups]
    shown = shown_stats(groups)
    show_published = any(s["published"] is not None for s in stats)
    header = (varying or ["run"]) + ["seeds", "epochs"] + [t for _, t in shown]
    header += ["published", "Δ best"] if show_published else []
    if comparison is not None:
        header += [f"Δ {comparison.metric} top-1 [95% CI]", "p (paired)" if comparison.paired else "p (Welch)"]
    rows = []
    for g, s in zip(groups, stats):
        lo, hi = s["epochs_done_min"], s["epochs_done_max"]
        epochs = f"{lo if lo == hi else f'{lo}-{hi}'}/{s['epochs_total']}" + ("*" if s["unfinished"] else "")
        cells = [format_value(v) for v in g.varying.values()] or [g.label]
        cells += [str(s["seeds"]), epochs] + [_pm(*s[name]) for name, _ in shown]
        cells += [_num(s["published"]), _num(s["diff"], signed=True)] if show_published else []
        if comparison is not None:
            cells += list(_cmp_cells(comparison.entries[id(g)]))
        rows.append(cells)
    notes = (["* = includes unfinished runs (partial numbers)"] if any(s["unfinished"] for s in stats) else [])
    if extra:
        header += extra["header"]
        rows = [r + cells for r, cells in zip(rows, extra["cells"])]
        notes += [extra["note"]] if extra["note"] else []
    return header, rows, notes + legend(groups, comparison)


def format_text(groups, varying, comparison=None, extra=None):
    header, rows, notes = display_table(groups, varying, comparison, extra)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + notes) + "\n"


def format_markdown(groups, varying, comparison=None, extra=None):
    header, rows, notes = display_table(groups, varying, comparison, extra)

    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    lines = [line(header), "|" + "|".join("---" for _ in header) + "|"] + [line(r) for r in rows]
    return "\n".join(lines + [""] + notes) + "\n"


def _json_number(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def format_json(groups, varying, comparison=None, extra=None):
    """All of it as JSON: a list of groups, each with its config values (the keys that
    vary), its runs with their three figures, mean / std (ddof 1) / n of each figure, and
    with a baseline ``diff``, ``ci95`` and ``p_value`` (null where undefined); with ``--cost``
    the student's ``cost`` (parameters, flops, latency_ms, cpu)."""
    out = []
    for i, g in enumerate(groups):
        runs = [{"run": r.path, "seed": r.seed, **{m: _json_number(r.stat(f"{m}_top1")) for m in METRICS}}
                for r in g.runs]
        entry = {"label": g.label, "config": dict(g.varying), "runs": runs}
        for m in METRICS:
            values = [r[m] for r in runs if r[m] is not None]
            mean, std = mean_std(values)
            entry[m] = {"mean": _json_number(mean), "std": _json_number(std), "n": len(values)}
        if comparison is not None:
            c = comparison.entries[id(g)]
            entry.update(metric=comparison.metric, test="paired" if comparison.paired else "welch",
                         baseline=g is comparison.baseline, diff=c["diff"], ci95=c["ci95"], p_value=c["p_value"],
                         n_compared=c["n"], note=c["note"])
        if extra:
            entry["cost"] = extra["costs"][i]
        out.append(entry)
    return json.dumps(out, indent=2) + "\n"


def format_csv(groups, varying, comparison=None, extra=None):
    """Machine-readable: one column per varying key, means and stds in separate columns."""
    fields = ["group"] + varying + COUNTS + [f"{name}_{part}" for name, _ in STATS for part in ("mean", "std")]
    fields += ["published_top1", "best_top1_minus_published", "runs"] + (list(COST_FIELDS) if extra else [])
    if comparison is not None:
        fields += ["compared_metric", "diff", "ci95_low", "ci95_high", "p_value", "comparison_note"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()

    def cell(x):
        return "" if x is None or (isinstance(x, float) and math.isnan(x)) else x

    for i, g in enumerate(groups):
        s = group_stats(g)
        row = {"group": g.label, **{k: format_value(v) for k, v in g.varying.items()}}
        row.update({k: cell(extra["costs"][i].get(k)) for k in COST_FIELDS} if extra else {})
        row.update({k: s[k] for k in COUNTS})
        for name, _ in STATS:
            row[f"{name}_mean"], row[f"{name}_std"] = map(cell, s[name])
        row.update(published_top1=cell(s["published"]), best_top1_minus_published=cell(s["diff"]),
                   runs=";".join(r.name for r in g.runs))
        if comparison is not None:
            c = comparison.entries[id(g)]
            low, high = c["ci95"] or (None, None)
            row.update(compared_metric=comparison.metric, diff=cell(c["diff"]), ci95_low=cell(low),
                       ci95_high=cell(high), p_value=cell(c["p_value"]), comparison_note=cell(c["note"]))
        writer.writerow(row)
    return out.getvalue()


# ---------------------------------------------------------------------------------------
# Cost beside accuracy (--cost)
# ---------------------------------------------------------------------------------------
COST_FIELDS = ("student", "parameters", "flops", "latency_ms", "cpu")


def group_cost(group):
    """``{"student", "parameters", "flops", "latency_ms", "cpu"}`` of a group's student (the
    values are None, with a warning, when its dataset cannot be read here)."""
    run = group.runs[0]
    name = run.config.get("DISTILLER.STUDENT")
    try:
        cost = run_cost(run.path, name)
    except MdistillerError as e:
        print(f"warning: no cost figures for {group.label}: {e}", file=sys.stderr)
        cost = {}
    return {"student": name, **{k: cost.get(k) for k in COST_FIELDS[1:]}}


def cost_columns(groups):
    """The ``extra`` columns of the formatters: parameters (M), MFLOPs, latency (ms)."""
    costs = [group_cost(g) for g in groups]

    def num(x, scale, fmt):
        return "-" if x is None else format(x / scale, fmt)

    cells = [[num(c["parameters"], 1e6, ".3f"), num(c["flops"], 1e6, ".1f"), num(c["latency_ms"], 1, ".2f")]
             for c in costs]
    cpus = sorted({c["cpu"] for c in costs if c["cpu"]})
    note = ("params (M), MFLOPs per image (torch.utils.flop_counter), latency: batch 1 on " + "; ".join(cpus)
            if cpus else "")
    return {"header": ["params (M)", "MFLOPs", "latency (ms)"], "cells": cells, "note": note, "costs": costs}


def plot_cost(groups, costs, key, path, metric="best"):
    """The ``metric`` top-1 (mean ± std over seeds) against ``flops`` or ``latency_ms``, one
    point per group."""
    fig, ax = _new_figure()
    for g, c in zip(groups, costs):
        if c.get(key) is None:
            continue
        mean, std = mean_std([r.stat(f"{metric}_top1") for r in g.runs])
        x = c[key] / 1e6 if key == "flops" else c[key]
        ax.errorbar([x], [mean], yerr=[0.0 if math.isnan(std) else std], marker="o", capsize=4,
                    label=textwrap.fill(f"{g.label} ({c['student']}, n={len(g.runs)})", 80))
    xlabel = "MFLOPs per image" if key == "flops" else f"CPU latency at batch 1 (ms)\n{costs[0].get('cpu') or ''}"
    ax.set(xlabel=xlabel, ylabel=f"{METRIC_WORDS[metric]} test top-1 (%)",
           title="top-1 against cost (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    fig.savefig(path, bbox_inches="tight")
    return path


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


METRIC_WORDS = {"selected": "holdout-selected", "last": "last-epoch", "best": "best-on-test (optimistic)"}


def plot_sweep(groups, key, path, metric="last"):
    """The ``metric`` top-1 against the one varying key's value, mean ± std error bars."""
    values = [g.varying[key] for g in groups]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    xs = values if numeric else list(range(len(values)))
    stats = [mean_std([r.stat(f"{metric}_top1") for r in g.runs]) for g in groups]
    fig, ax = _new_figure()
    ax.errorbar(xs, [m for m, _ in stats], yerr=[0.0 if math.isnan(s) else s for _, s in stats],
                marker="o", capsize=4, label=f"{METRIC_WORDS[metric]} top-1")
    if not numeric:
        ax.set_xticks(xs, [format_value(v) for v in values], rotation=20 if len(values) > 4 else 0)
    elif min(xs) > 0 and max(xs) >= 100 * min(xs):  # values spanning decades (learning rates)
        ax.set_xscale("log")
    _published_line(ax, groups)
    ax.set(xlabel=key, ylabel="test top-1 (%)",
           title=f"{METRIC_WORDS[metric]} top-1 vs {key} (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_diff(groups, comparison, path):
    """Each group's difference from the baseline with its 95% interval (a forest plot);
    groups without an interval show their difference alone, hollow."""
    others = [g for g in groups if g is not comparison.baseline]
    fig, ax = _new_figure()
    for y, g in enumerate(others):
        c = comparison.entries[id(g)]
        if c["diff"] is None:
            continue
        if c["ci95"] is not None:
            low, high = c["ci95"]
            ax.errorbar([c["diff"]], [y], xerr=[[c["diff"] - low], [high - c["diff"]]], fmt="o", capsize=4,
                        color="C0")
        else:
            ax.plot([c["diff"]], [y], "o", markerfacecolor="none", color="C0")
    ax.axvline(0.0, color="gray", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(others)), [textwrap.shorten(g.label, 60) for g in others])
    test = "paired t" if comparison.paired else "Welch t"
    ax.set(xlabel=f"Δ {METRIC_WORDS[comparison.metric]} top-1 vs {textwrap.shorten(comparison.baseline.label, 40)} "
                  f"(percentage points)", title=f"difference of means with 95% interval ({test})")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_plots(groups, varying, out_dir, metric="last", comparison=None, extra=None):
    os.makedirs(out_dir, exist_ok=True)
    paths = [plot_curves(groups, os.path.join(out_dir, "top1_curves.png"))]
    if extra:
        paths += [plot_cost(groups, extra["costs"], key, os.path.join(out_dir, f"top1_vs_{name}.png"), metric)
                  for key, name in (("flops", "flops"), ("latency_ms", "latency"))]
    if len(varying) == 1:
        safe = re.sub(r"[^\w.-]+", "_", varying[0])
        paths.append(plot_sweep(groups, varying[0], os.path.join(out_dir, f"top1_vs_{safe}.png"), metric))
    if comparison is not None:
        paths.append(plot_diff(groups, comparison, os.path.join(out_dir, "diff_vs_baseline.png")))
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
    fmt.add_argument("--json", action="store_true", help="print everything as JSON (messages go to stderr)")
    p.add_argument("--plot", nargs="?", const="", default=None, metavar="DIR",
                   help="write PNG plots into DIR (default: the project folder)")
    p.add_argument("--baseline", action="append", default=None, metavar="KEY=VALUE",
                   help="compare every group with the one whose config has KEY=VALUE (e.g. DISTILLER.TYPE=KD; "
                        "repeat to narrow it down): difference of means, 95%% CI, Welch's t-test p-value")
    p.add_argument("--paired", action="store_true",
                   help="with --baseline: the paired t-test over the seeds both groups have")
    p.add_argument("--metric", choices=METRICS, default=None,
                   help="the figure compared and plotted: selected (at the holdout-selected epoch), last, or best "
                        "(on test, optimistic); default selected when every run has a holdout, else last")
    p.add_argument("--cost", action="store_true",
                   help="add parameters, FLOPs and CPU latency (batch 1, cached) of each group's student")
    add_debug_flag(p)
    return p.parse_args(argv)


def summarize(args):
    if args.paired and not args.baseline:
        raise ConfigError("--paired compares with a baseline; add --baseline KEY=VALUE (e.g. DISTILLER.TYPE=KD)")
    if not os.path.isdir(args.root):
        raise DataError(f"'{args.root}' is not a folder; give the project folder, e.g. output/<project>")
    runs = load_runs(args.root)
    if not runs:
        raise DataError(f"no run folders (config.yaml + metrics.jsonl) under '{args.root}'; check the path")
    groups, varying = group_runs(runs)
    metric = args.metric or default_metric(runs)
    if metric == "selected" and not any(r.has_holdout for r in runs):
        raise ConfigError(f"--metric selected needs runs with a holdout (DATASET.HOLDOUT > 0); none under "
                          f"'{args.root}' has one; use --metric last")
    comparison = None
    if args.baseline:
        baseline = find_baseline(groups, args.baseline)
        comparison = Comparison(baseline, metric, args.paired,
                                comparisons(groups, baseline, metric, paired=args.paired))
    formatter = (format_csv if args.csv else format_markdown if args.markdown else format_json if args.json
                 else format_text)
    extra = cost_columns(groups) if args.cost else None
    sys.stdout.write(formatter(groups, varying, comparison, extra))
    if args.plot is not None:
        out_dir = args.plot or args.root
        try:
            paths = write_plots(groups, varying, out_dir, metric, comparison, extra)
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
