"""tools/summarize.py on run folders written here following the trainer's run-folder contract."""

import csv
import io
import json
import math
import os
import random
import re
import statistics
import sys
import warnings

import pytest

from mdistiller.cli import summarize
from mdistiller.config.load import ConfigWarning, load_cfg

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_run(project_dir, name, opts=(), accs=(), top5=None, epochs=None, checkpoint=True, vals=None):
    """A run folder as the trainer writes it: config.yaml, provenance.json, worklog.txt,
    metrics.jsonl (one record per accuracy in ``accs``; with ``vals``, holdout accuracies
    ``val_acc`` and a DATASET.HOLDOUT config) and a ``latest`` checkpoint file."""
    if vals is not None:
        opts = list(opts) + ["DATASET.HOLDOUT", "0.1"]
    opts = list(opts) + ["EXPERIMENT.NAME", name]
    if epochs is not None:
        opts += ["SOLVER.EPOCHS", str(epochs)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        cfg = load_cfg(None, opts)
    run_dir = os.path.join(project_dir, name)
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "config.yaml"), "w") as f:
        f.write(cfg.dump())
    with open(os.path.join(run_dir, "provenance.json"), "w") as f:
        json.dump({"git_commit": "unknown", "seed": cfg.EXPERIMENT.SEED, "argv": opts}, f)
    top5 = list(top5) if top5 is not None else [min(100.0, a + 20) for a in accs]
    best = -math.inf
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as m, open(os.path.join(run_dir, "worklog.txt"), "w") as w:
        for epoch, (acc, acc5) in enumerate(zip(accs, top5), 1):
            best = max(best, acc)
            record = {"epoch": epoch, "lr": 0.05, "train_acc": acc + 1, "train_loss": 1.0 / epoch,
                      "test_acc": acc, "test_acc_top5": acc5, "test_loss": 2.0 / epoch, "best_acc": best,
                      "time": 1.5, "losses": {"loss_ce": 1.0 / epoch}}
            if vals is not None:
                record["val_acc"] = vals[epoch - 1]
            m.write(json.dumps(record) + "\n")
            w.write(f"epoch: {epoch}\ntest_acc: {acc:.2f}\n")
    if checkpoint and accs:
        open(os.path.join(run_dir, "latest"), "wb").close()
    return run_dir


def read_csv(text):
    return list(csv.DictReader(io.StringIO(text)))


def run_tool(capsys, *argv):
    code = summarize.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def gamma_project(tmp_path):
    """SLD.GAMMA in {20, 100} x 3 seeds, 4 epochs each, random accuracies (kept for checks)."""
    rng = random.Random(0)
    project = tmp_path / "output" / "proj"
    runs = {}
    for gamma in (100, 20):  # written out of order: the table sorts numerically
        for seed in range(3):
            accs = [rng.uniform(20, 80) for _ in range(4)]
            top5 = [rng.uniform(80, 99) for _ in range(4)]
            name = f"sld_gamma{gamma}_seed{seed}"
            write_run(project, name, ["DISTILLER.TYPE", "SLD", "SLD.GAMMA", str(gamma), "EXPERIMENT.SEED",
                                      str(seed), "EXPERIMENT.TAG", f"tag{seed}"], accs, top5, epochs=4)
            runs.setdefault(gamma, []).append((accs, top5))
    return project, runs


def test_groups_seeds_with_mean_and_std(gamma_project, capsys):
    project, runs = gamma_project
    code, out, _ = run_tool(capsys, str(project), "--csv")
    assert code == 0
    rows = read_csv(out)
    assert [r["SLD.GAMMA"] for r in rows] == ["20", "100"]
    for row in rows:
        assert row["group"] == f"SLD.GAMMA={row['SLD.GAMMA']}"
        group = runs[int(row["SLD.GAMMA"])]
        assert int(row["seeds"]) == 3 and int(row["unfinished"]) == 0
        assert (row["epochs_done_min"], row["epochs_done_max"], row["epochs_total"]) == ("4", "4", "4")
        expected = {"best_top1": [max(a) for a, _ in group], "last_top1": [a[-1] for a, _ in group],
                    "best_top5": [max(t) for _, t in group], "last_top5": [t[-1] for _, t in group]}
        for name, values in expected.items():
            assert float(row[f"{name}_mean"]) == pytest.approx(statistics.fmean(values))
            assert float(row[f"{name}_std"]) == pytest.approx(statistics.stdev(values))
        assert row["runs"].split(";") == [f"sld_gamma{row['SLD.GAMMA']}_seed{s}" for s in range(3)]
        assert row["published_top1"] == "" and row["best_top1_minus_published"] == ""


def test_text_table_is_aligned_and_readable(gamma_project, capsys):
    project, runs = gamma_project
    code, out, _ = run_tool(capsys, str(project))
    assert code == 0
    lines = out.splitlines()
    header = re.split(r"\s{2,}", lines[0])
    assert header[:3] == ["SLD.GAMMA", "seeds", "epochs"] and "best top-1 (optimistic)" in header
    assert "published" not in header and "selected top-1" not in header  # no published figure, no holdout
    assert set(lines[1]) <= {"-", " "}
    assert lines[4].startswith("best = the highest test top-1 over epochs (selected on the test set: optimistic)")
    rows = [re.split(r"\s{2,}", line) for line in lines[2:4]]
    assert [len(r) for r in rows] == [len(header)] * 2
    # every column starts at the same offset in every line
    starts = [m.start() for m in re.finditer(r"(?:^|(?<=\s\s))\S", lines[0])]
    for line in lines[2:4]:
        assert all(line[s - 1: s] in ("", " ") and line[s] != " " for s in starts)
    best = [max(a) for a, _ in runs[20]]
    cell = rows[0][header.index("best top-1 (optimistic)")]
    assert cell == f"{statistics.fmean(best):.2f} ± {statistics.stdev(best):.2f}"


def test_unfinished_runs_are_marked(tmp_path, capsys):
    project = tmp_path / "p"
    write_run(project, "kd_seed0", ["DISTILLER.TYPE", "KD"], [10, 20, 30], epochs=3)
    write_run(project, "kd_seed1", ["DISTILLER.TYPE", "KD", "EXPERIMENT.SEED", "1"], [12, 22], epochs=3)
    code, out, _ = run_tool(capsys, str(project))
    assert code == 0
    row = re.split(r"\s{2,}", out.splitlines()[2])
    assert row[0] == "kd"  # one group: labelled by the run name without seed
    assert row[2] == "2-3/3*"
    assert "unfinished" in out.splitlines()[3]
    (csv_row,) = read_csv(run_tool(capsys, str(project), "--csv")[1])
    assert csv_row["unfinished"] == "1" and csv_row["epochs_done_min"] == "2"
    assert float(csv_row["last_top1_mean"]) == pytest.approx((30 + 22) / 2)


def test_published_difference_and_markdown(tmp_path, capsys):
    project = tmp_path / "p"
    for seed, accs in enumerate([[60, 70, 74], [61, 75, 73]]):
        write_run(project, f"kd_s{seed}", ["DISTILLER.TYPE", "KD", "EXPERIMENT.PUBLISHED_TOP1", "73.5",
                                           "EXPERIMENT.SEED", str(seed)], accs, epochs=3)
    write_run(project, "vanilla", ["DISTILLER.TYPE", "NONE"], [50, 55, 58], epochs=3)
    code, out, _ = run_tool(capsys, str(project), "--markdown")
    assert code == 0
    lines = out.strip().splitlines()
    table = [line for line in lines if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table]
    assert all(line.endswith("|") for line in table) and len({len(c) for c in cells}) == 1
    header, sep, rows = cells[0], cells[1], cells[2:]
    assert all(re.fullmatch(r"-{3,}", c) for c in sep)
    assert header[0] == "DISTILLER.TYPE" and header[-2:] == ["published", "Δ best"]
    by_type = {r[0]: dict(zip(header, r)) for r in rows}
    assert set(by_type) == {"KD", "NONE"}
    best_mean = (74 + 75) / 2
    assert by_type["KD"]["published"] == "73.50"
    assert by_type["KD"]["Δ best"] == f"{best_mean - 73.5:+.2f}"
    assert by_type["NONE"]["published"] == "-" and by_type["NONE"]["Δ best"] == "-"
    assert by_type["NONE"]["seeds"] == "1"
    assert by_type["NONE"]["best top-1 (optimistic)"] == "58.00"  # no std for one seed
    rows = {r["DISTILLER.TYPE"]: r for r in read_csv(run_tool(capsys, str(project), "--csv")[1])}
    assert float(rows["KD"]["best_top1_minus_published"]) == pytest.approx(best_mean - 73.5)
    assert rows["NONE"]["best_top1_std"] == ""


def test_grouping_ignores_seed_name_tag_and_log_keys(tmp_path, capsys):
    project = tmp_path / "p"
    write_run(project, "a", ["EXPERIMENT.TAG", "x", "LOG.TENSORBOARD", "False", "LOG.PREFIX", "/else"], [1, 2],
              epochs=2)
    write_run(project, "nested/b", ["EXPERIMENT.SEED", "7", "LOG.WANDB", "True"], [3, 4], epochs=2)
    write_run(project, "c", ["SOLVER.LR", "0.1"], [5, 6], epochs=2)
    (project / "not_a_run").mkdir()
    rows = read_csv(run_tool(capsys, str(project), "--csv")[1])
    assert [(r["SOLVER.LR"], r["seeds"]) for r in rows] == [("0.05", "2"), ("0.1", "1")]
    assert sorted(rows[0]["runs"].split(";")) == ["a", "b"]


def test_plots_are_written(gamma_project, tmp_path, capsys):
    project, _ = gamma_project
    code, _, err = run_tool(capsys, str(project), "--plot")
    assert code == 0
    for name in ("top1_curves.png", "top1_vs_SLD.GAMMA.png"):
        path = project / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 5000
        assert str(path) in err
    out_dir = tmp_path / "plots"
    write_run(project, "sld_gamma20_temps_seed0", ["DISTILLER.TYPE", "SLD", "SLD.GAMMA", "20",
                                                   "SLD.TEMPERATURES", "[2,3]"], [30, 40, 50, 60], epochs=4)
    assert run_tool(capsys, str(project), "--plot", str(out_dir))[0] == 0
    assert sorted(os.listdir(out_dir)) == ["top1_curves.png"]  # two keys vary: no sweep plot


def test_sweep_plot_with_list_values(tmp_path, capsys):
    project = tmp_path / "p"
    for temps in ("[1,2]", "[2,3,4]"):
        for seed in range(2):
            write_run(project, f"t{temps}{seed}", ["SLD.TEMPERATURES", temps, "EXPERIMENT.SEED", str(seed)],
                      [40 + seed, 50 + len(temps)], epochs=2)
    assert run_tool(capsys, str(project), "--plot")[0] == 0
    assert (project / "top1_vs_SLD.TEMPERATURES.png").read_bytes()[:8] == PNG_SIGNATURE


def test_read_metrics_tolerates_rewrites_and_cut_lines(tmp_path):
    run_dir = write_run(tmp_path, "r", accs=[10, 20, 30], epochs=5)
    with open(os.path.join(run_dir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"epoch": 3, "test_acc": 33.0}) + "\n")  # epoch 3 redone after a resume
        f.write('{"epoch": 4, "test_ac')  # write cut short by a crash
    records = summarize.read_metrics(run_dir)
    assert [r["epoch"] for r in records] == [1, 2, 3] and records[-1]["test_acc"] == 33.0
    assert summarize.read_metrics(tmp_path / "missing") == []


@pytest.mark.parametrize("make_dir", [True, False])
def test_no_runs_is_a_one_line_error(tmp_path, capsys, make_dir):
    root = tmp_path / "empty"
    if make_dir:
        root.mkdir()
    code, out, err = run_tool(capsys, str(root))
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and str(root) in err


# ---------------------------------------------------------------------------------------
# Holdout-selected figures and comparisons with a baseline (issue #23)
# ---------------------------------------------------------------------------------------
@pytest.fixture
def method_project(tmp_path):
    """KD x 4 seeds, SLD x 4 seeds, DKD x 1 seed, 5 epochs, with holdout accuracies; returns
    the project and each run's expected (selected, last, best) test top-1 by (method, seed)."""
    rng = random.Random(1)
    project = tmp_path / "p"
    expected = {}
    for method, seeds in (("KD", 4), ("SLD", 4), ("DKD", 1)):
        for seed in range(seeds):
            accs = [round(rng.uniform(40, 80), 3) for _ in range(5)]
            vals = [round(rng.uniform(40, 80), 3) for _ in range(5)]
            vals[3] = max(vals)  # a tie: the earliest epoch with the highest val_acc is selected
            first = vals.index(max(vals))
            write_run(project, f"{method.lower()}_seed{seed}", ["DISTILLER.TYPE", method, "EXPERIMENT.SEED",
                                                                  str(seed)], accs, epochs=5, vals=vals)
            expected[method, seed] = (accs[first], accs[-1], max(accs))
    return project, expected


def test_selected_figure_is_test_top1_at_the_best_holdout_epoch(method_project, capsys):
    project, expected = method_project
    code, out, err = run_tool(capsys, str(project), "--json")
    assert code == 0 and err == ""
    groups = {g["config"]["DISTILLER.TYPE"]: g for g in json.loads(out)}
    for (method, seed), (sel, last, best) in expected.items():
        (run,) = [r for r in groups[method]["runs"] if r["seed"] == seed]
        assert (run["selected"], run["last"], run["best"]) == (sel, last, best)
        assert os.path.isdir(run["run"])
    kd = [expected["KD", s] for s in range(4)]
    for i, m in enumerate(("selected", "last", "best")):
        values = [v[i] for v in kd]
        assert groups["KD"][m] == {"mean": pytest.approx(statistics.fmean(values)),
                                   "std": pytest.approx(statistics.stdev(values)), "n": 4}
    assert groups["DKD"]["last"]["std"] is None and groups["DKD"]["last"]["n"] == 1
    assert "diff" not in groups["KD"]  # no baseline, no comparison
    code, out, _ = run_tool(capsys, str(project), "--markdown")
    header = [c.strip() for c in out.splitlines()[0].strip("|").split("|")]
    assert header[3:6] == ["selected top-1", "last top-1", "best top-1 (optimistic)"]
    assert "selected without the test set" in out and "selected on the test set: optimistic" in out


@pytest.mark.parametrize("metric", ["selected", "last", "best"])
def test_baseline_json_matches_scipy_welch(method_project, capsys, metric):
    stats = pytest.importorskip("scipy.stats")
    project, expected = method_project
    argv = [str(project), "--baseline", "DISTILLER.TYPE=KD", "--json"]
    code, out, err = run_tool(capsys, *argv, *(["--metric", metric] if metric != "selected" else []))
    assert code == 0 and err == ""  # default metric: selected, since every run has a holdout
    groups = {g["config"]["DISTILLER.TYPE"]: g for g in json.loads(out)}
    i = ("selected", "last", "best").index(metric)
    kd = [expected["KD", s][i] for s in range(4)]
    sld = [expected["SLD", s][i] for s in range(4)]
    ref = stats.ttest_ind(sld, kd, equal_var=False)
    ci = ref.confidence_interval(0.95)
    got = groups["SLD"]
    assert got["metric"] == metric and got["test"] == "welch" and got["baseline"] is False
    assert abs(got["diff"] - (statistics.fmean(sld) - statistics.fmean(kd))) < 1e-9
    assert abs(got["p_value"] - ref.pvalue) < 1e-9
    assert abs(got["ci95"][0] - ci.low) < 1e-9 and abs(got["ci95"][1] - ci.high) < 1e-9
    assert groups["KD"]["baseline"] is True and groups["KD"]["diff"] is None and groups["KD"]["p_value"] is None
    dkd = groups["DKD"]  # one seed: a difference, but no interval nor p-value
    assert dkd["ci95"] is None and dkd["p_value"] is None and "fewer than two seeds" in dkd["note"]
    assert abs(dkd["diff"] - (expected["DKD", 0][i] - statistics.fmean(kd))) < 1e-9


def test_paired_baseline_matches_scipy_ttest_rel(method_project, capsys, tmp_path):
    stats = pytest.importorskip("scipy.stats")
    project, expected = method_project
    write_run(project, "sld_seed9", ["DISTILLER.TYPE", "SLD", "EXPERIMENT.SEED", "9"], [50, 60], epochs=5,
              vals=[1, 2])  # a seed KD does not have: left out of the pairs
    code, out, err = run_tool(capsys, str(project), "--baseline", "DISTILLER.TYPE=KD", "--paired", "--json",
                              "--metric", "last")
    assert code == 0 and err == ""
    groups = {g["config"]["DISTILLER.TYPE"]: g for g in json.loads(out)}
    kd = [expected["KD", s][1] for s in range(4)]
    sld = [expected["SLD", s][1] for s in range(4)]
    ref = stats.ttest_rel(sld, kd)
    ci = ref.confidence_interval(0.95)
    got = groups["SLD"]
    assert got["test"] == "paired" and got["n_compared"] == 4 and groups["SLD"]["last"]["n"] == 5
    assert abs(got["diff"] - statistics.fmean(a - b for a, b in zip(sld, kd))) < 1e-9
    assert abs(got["p_value"] - ref.pvalue) < 1e-9
    assert abs(got["ci95"][0] - ci.low) < 1e-9 and abs(got["ci95"][1] - ci.high) < 1e-9
    assert groups["DKD"]["p_value"] is None and "shared" in groups["DKD"]["note"]


def test_baseline_table_and_plot_show_the_interval(method_project, capsys, tmp_path):
    pytest.importorskip("scipy")
    project, _ = method_project
    code, out, err = run_tool(capsys, str(project), "--baseline", "DISTILLER.TYPE=KD", "--markdown",
                              "--plot", str(tmp_path / "plots"))
    assert code == 0
    table = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("|")]
    header, rows = table[0], {r[0]: dict(zip(table[0], r)) for r in table[2:]}
    assert header[-2:] == ["Δ selected top-1 [95% CI]", "p (Welch)"]
    assert rows["KD"]["Δ selected top-1 [95% CI]"] == "baseline"
    assert re.fullmatch(r"[+-]\d+\.\d\d \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]", rows["SLD"]["Δ selected top-1 [95% CI]"])
    assert rows["DKD"]["Δ selected top-1 [95% CI]"] == "n/a: fewer than two seeds" and rows["DKD"]["p (Welch)"] == "-"
    assert "Welch's t-test" in out
    path = tmp_path / "plots" / "diff_vs_baseline.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE and str(path) in err


@pytest.mark.parametrize("argv,pattern", [
    (["--baseline", "DISTILLER.TYPE"], "is not KEY=VALUE"),
    (["--baseline", "DISTILLER.TYPE=CRD"], "matches no group .*DKD, KD, SLD"),
    (["--baseline", "NO.SUCH=1"], "no run has the config key 'NO.SUCH'"),
    (["--baseline", "SOLVER.LR=0.05"], "matches 3 groups"),
    (["--paired"], "--paired compares with a baseline"),
])
def test_bad_baseline_options_are_one_line_errors(method_project, capsys, argv, pattern):
    code, out, err = run_tool(capsys, str(method_project[0]), *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and re.search(pattern, err), err


def test_metric_selected_without_holdout_and_missing_scipy(gamma_project, capsys, monkeypatch):
    project, _ = gamma_project
    code, out, err = run_tool(capsys, str(project), "--metric", "selected")
    assert code == 2 and out == "" and "needs runs with a holdout" in err
    monkeypatch.setitem(sys.modules, "scipy", None)  # as if scipy were not installed
    code, out, err = run_tool(capsys, str(project), "--baseline", "SLD.GAMMA=20")
    assert code == 2 and out == "" and err.count("\n") == 1 and "pip install -e .[stats]" in err
