"""``tools/benchmark.py`` in-process on tiny models: every figure, positive, with its ratios."""

import json

import pytest

from mdistiller.cli.benchmark import DEFAULT_MATRIX, QUICK_MATRIX, main, parse_case

QUICK = ["--num-classes", "10", "--steps", "2", "--warmup", "1", "--repeats", "1", "--yardstick-iters", "1",
         "--pipeline-seconds", "0.2", "--imagenet-seconds", "0.4", "--threads", "1", "--out", ""]
TINY = ["--teacher", "resnet8", "--student", "resnet8", "--batch-size", "8"] + QUICK


def test_json_has_every_figure_with_ratios(capsys, tmp_path):
    out = tmp_path / "b.json"
    assert main(TINY + ["--json", "--loss", "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == result and result["complete"]
    assert result["yardstick_ms"] > 0 and result["setup"]["batch_size"] == 8
    assert result["setup"]["cpu"]["isa"] in ("AMX", "AVX-512", "AVX2", "other", "unknown")
    figures = {f["name"]: f for f in result["figures"]}
    steps = [n for n, f in figures.items() if f["kind"] == "step"]
    assert steps == QUICK_MATRIX.split(",")
    assert {"SLD loss (fwd+bwd)", "pipeline/1", "pipeline/2"} <= set(figures)
    imagenet = {n: f for n, f in figures.items() if f["kind"] == "imagenet"}
    assert set(imagenet) == {"imagenet/reference", "imagenet/cpu", "imagenet/cpu-no-draft", "imagenet/device",
                             "imagenet/device-side (cpu)"}
    for name, f in imagenet.items():
        assert f["value"] > 0 and f["unit"] == "images/s", name
        if name != "imagenet/device-side (cpu)":  # ratios to the reference's item of the same run
            assert f["vs_reference"] == pytest.approx(f["value"] / imagenet["imagenet/reference"]["value"])
    assert imagenet["imagenet/device"]["target"] == 10.0 and imagenet["imagenet/cpu"]["target"] == 2.0
    for name, f in {n: f for n, f in figures.items() if f["kind"] != "imagenet"}.items():
        assert f["value"] > 0 and f["ms"] > 0 and f["over_yardstick"] > 0 and f["yardstick_ms"] > 0, name
        if f["kind"] == "loss":
            assert 0 < f["share_of_step"] and f["of_step"] in steps and f["target"] == 0.02
        else:  # every step here has a perf.md figure (SLD, MLKD, KD), as does the pipeline
            assert f["reference"] > 0 and f["vs_reference"] > 0, name
        if f["kind"] == "step":
            assert f["unit"] == "samples/s" and f["vs_reference_normalised"] > 0 and f["same_setup"] is False
    sld = figures["SLD/fp32"]
    assert sld["value"] == pytest.approx(8 / (sld["ms"] / 1e3), rel=1e-6)  # samples/s of the median step
    assert figures["pipeline/2"]["target"] == 3.0


def test_each_figure_is_printed_and_saved_as_it_is_measured(tmp_path, capsys, monkeypatch):
    """A run stopped after its second figure has printed both rows and saved both in the JSON."""
    import mdistiller.cli.benchmark as bench

    out, seen = tmp_path / "b.json", []
    real = bench.record

    def record(*args, **kwargs):
        fig = real(*args, **kwargs)
        seen.append((fig["name"], capsys.readouterr().out, json.loads(out.read_text()) if out.exists() else None))
        if len(seen) == 3:
            raise KeyboardInterrupt  # stopped while measuring the third figure
        return fig

    monkeypatch.setattr(bench, "record", record)
    with pytest.raises(KeyboardInterrupt):
        main(TINY + ["--matrix", "KD/fp32,SLD/fp32,MLKD/fp32", "--skip-pipeline", "--out", str(out)])
    printed = "".join(text for _, text, _ in seen) + capsys.readouterr().out
    assert "KD/fp32" in printed and "SLD/fp32" in printed and "MLKD" not in printed
    assert seen[1][2] is not None and [f["name"] for f in seen[1][2]["figures"]] == ["KD/fp32"]  # saved before the next
    saved = json.loads(out.read_text())
    assert [f["name"] for f in saved["figures"]] == ["KD/fp32", "SLD/fp32"] and not saved["complete"]


def test_full_means_the_whole_matrix_and_longer_runs():
    from mdistiller.cli.benchmark import parse_args, resolve_setup

    quick, full = resolve_setup(parse_args([])), resolve_setup(parse_args(["--full"]))
    assert [bench_case for bench_case in map("/".join, ((c[0], c[1]) for c in quick.cases))] == \
        [c.split("+")[0] for c in QUICK_MATRIX.split(",")]
    assert len(full.cases) == len(DEFAULT_MATRIX.split(",")) and full.loss and not quick.loss
    assert (quick.steps, quick.repeats, full.steps, full.repeats) == (2, 1, 6, 3)
    assert resolve_setup(parse_args(["--full", "--repeats", "2"])).repeats == 2


def test_table_for_one_case(capsys):
    assert main(TINY + ["--distiller", "KD", "--precision", "bf16", "--channels-last", "--skip-pipeline"]) == 0
    out = capsys.readouterr().out
    assert "yardstick" in out and "KD/bf16+cl" in out and "x reference" in out and "SLD" not in out
    assert "CPU: " in out and "torch kernels" in out


def test_cfg_gives_the_case_and_setup(tmp_path, capsys):
    cfg = tmp_path / "kd.yaml"
    cfg.write_text("DISTILLER:\n  TYPE: DKD\n  TEACHER: resnet8\n  STUDENT: resnet8\n"
                   "SOLVER:\n  BATCH_SIZE: 4\n  AMP: bf16\n  CHANNELS_LAST: true\n")
    assert main(["--cfg", str(cfg), "--skip-pipeline", "--json"] + QUICK) == 0
    result = json.loads(capsys.readouterr().out)
    assert [f["name"] for f in result["figures"]] == ["DKD/bf16+cl"]
    assert result["figures"][0]["reference"] is None  # perf.md has no DKD step
    assert (result["setup"]["teacher"], result["setup"]["batch_size"]) == ("resnet8", 4)


def test_bad_case_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(TINY + ["--matrix", "SLD/fp8"])
    assert e.value.code == 2 and "DISTILLER/PRECISION" in capsys.readouterr().err
    assert parse_case("MLKD/bf16+cl") == ("MLKD", "bf16", True, False) and parse_case("KD") == ("KD", "fp32", False, False)
    assert parse_case("SLD/fp32+compile+cl") == ("SLD", "fp32", True, True)
    for bad in ("SLD/fp32+cl+cl", "SLD/fp32+fast"):
        with pytest.raises(SystemExit):
            main(TINY + ["--matrix", bad])
    capsys.readouterr()
    for option in ("--imagenet-seconds", "--pipeline-seconds"):
        with pytest.raises(SystemExit) as e:
            main(TINY + [option, "0"])
        assert e.value.code == 2 and f"{option}: must be a number > 0, got '0'" in capsys.readouterr().err


def test_unknown_distiller_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:  # refused while the arguments are parsed, before any timing
        main(TINY + ["--distiller", "NOPE", "--skip-pipeline"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "NOPE" in err and "\n" not in err
