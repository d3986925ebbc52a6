"""tools/export.py, eval.py on an exported file, and the cost figures: trained tiny students
of every zoo family (and a timm: model) exported and checked against PyTorch."""

import json
import os
import re

import pytest
import torch

from mdistiller.cli import eval as eval_cli
from mdistiller.cli import export as export_cli
from mdistiller.export.cost import count_flops, count_parameters, model_cost
from mdistiller.export.formats import load_exported, write
from mdistiller.export.run_export import DEFAULT_TOLERANCE, first_test_images, load_run_student
from mdistiller.export.wrap import LogitsOnly
from mdistiller.models import build_model

from tests.engine.helpers import run_dir, tiny_argv, train_main

pytest.importorskip("onnxruntime")
FAST = ["DATASET.SYNTHETIC_SIZE", "32", "DATASET.TEST.BATCH_SIZE", "64", "LOG.TENSORBOARD", "False",
        "DISTILLER.TYPE", "NONE"]
#: one student of each CIFAR zoo family (class; resnet8..110, x4 and ResNet18/50 share one) and a timm model
STUDENTS = ["resnet8", "wrn_16_1", "vgg8", "MobileNetV2", "ShuffleV1", "ShuffleV2", "timm:resnet10t"]


def trained_run(tmp_path, student, *extra):
    """A finished one-epoch run of ``student`` on the tiny synthetic set; its folder."""
    assert train_main(tiny_argv(tmp_path, "run", *FAST, "DISTILLER.STUDENT", student, *extra)) == 0
    return run_dir(tmp_path, "run")


def tool(main, capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def eval_top1(capsys, *argv):
    code, out, err = tool(eval_cli.main, capsys, "--workers", "0", *argv)
    assert code == 0, err
    return float(re.search(r"top-1 ([\d.]+)", out).group(1))


@pytest.fixture(scope="module")
def resnet8_run(tmp_path_factory):
    return trained_run(tmp_path_factory.mktemp("r8"), "resnet8")


@pytest.mark.parametrize("student", STUDENTS)
def test_every_family_exports_to_onnx_with_pytorch_logits(tmp_path, student, capsys):
    import onnxruntime as ort

    run = trained_run(tmp_path, student)
    code, out, err = tool(export_cli.main, capsys, run, "--random-inputs", "4")
    assert code == 0, err
    path = os.path.join(run, "export", "student.onnx")
    card = json.load(open(os.path.join(run, "export", "model_card.json")))
    _, spec, model, _, _ = load_run_student(run)
    assert card["parameters"] == count_parameters(model) and isinstance(card["parameters"], int)
    assert card["flops"] == count_flops(model, 32) > 0
    assert card["student"] == student and card["num_classes"] == 10 and card["input"]["dtype"] == "float32"
    assert card["parity"]["max_abs_logit_diff"] <= DEFAULT_TOLERANCE and card["parity"]["top1_agreement"] == 1.0
    # independently: onnxruntime on the normalised test images gives PyTorch's logits and argmax
    images, _ = first_test_images(spec, 8)
    x = ((images.float() / 255 - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1))
    with torch.no_grad():
        ref = model(x)[0]
    got = torch.from_numpy(ort.InferenceSession(path).run(None, {"x": x.numpy()})[0])
    assert (got - ref).abs().max() <= DEFAULT_TOLERANCE
    assert torch.equal(got.argmax(1), ref.argmax(1))
    # the exported file's top-1 on the test set is the checkpoint's
    assert eval_top1(capsys, "-c", path) == eval_top1(capsys, "-c", run)


@pytest.mark.parametrize("name", ["ResNet18", "MobileNetV1", "torchvision:resnet18"])
def test_imagenet_family_and_torchvision_export(tmp_path, name):
    torch.manual_seed(0)
    model = build_model(name, "imagenet", 10, 64).eval()
    x = torch.randn(2, 3, 64, 64)
    path = write("onnx", LogitsOnly(model), x, str(tmp_path / "student.onnx"))
    y = torch.randn(3, 3, 64, 64)  # another batch size: the batch dimension is dynamic
    with torch.no_grad():
        ref = model(y)[0]
    got = load_exported(path)(y)
    assert (got - ref).abs().max() <= DEFAULT_TOLERANCE and torch.equal(got.argmax(1), ref.argmax(1))


@pytest.mark.parametrize("fmt", ["onnx", "pt2", "torchscript"])
def test_with_preprocessing_takes_uint8_and_gives_the_same_logits(resnet8_run, tmp_path, fmt, capsys):
    out = tmp_path / fmt
    code, _, err = tool(export_cli.main, capsys, resnet8_run, "--format", fmt, "--with-preprocessing",
                        "--batch", "4", "--out", out)
    assert code == 0, err
    card = json.load(open(out / "model_card.json"))
    assert card["input"]["dtype"] == "uint8" and card["input"]["shape"] == [4, 3, 32, 32]
    _, spec, model, _, _ = load_run_student(resnet8_run)
    images, _ = first_test_images(spec, 4)
    x = (images.float() / 255 - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = model(x)[0]
    got = load_exported(str(out / card["file"]))(images)  # uint8 in, normalised inside the graph
    assert (got - ref).abs().max() <= DEFAULT_TOLERANCE and torch.equal(got.argmax(1), ref.argmax(1))
    assert eval_top1(capsys, "-c", out / card["file"], "-bs", "3") == eval_top1(capsys, "-c", resnet8_run)
    assert (out / "README.md").read_text().startswith("# resnet8")


def test_checkpoint_choice_and_card_contents(resnet8_run, tmp_path, capsys):
    code, out, err = tool(export_cli.main, capsys, resnet8_run, "--checkpoint", "last", "--format", "torchscript",
                          "--out", tmp_path)
    assert code == 0, err
    assert out.startswith(f"{tmp_path}/student.torchscript: resnet8, 78,042 parameters")
    card = json.load(open(tmp_path / "model_card.json"))
    assert card["checkpoint"]["file"] == "student_latest" and card["checkpoint"]["epoch"] == 1
    acc = card["accuracy"]
    assert acc["selected_test_top1"] == acc["last_test_top1"] and acc["selection"].startswith("test set")
    assert card["parity"]["test_images"] == 8 and card["parity"]["random_inputs"] == 8
    assert card["teacher"] is None and card["method"] == "NONE" and len(card["config_sha256"]) == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "config.yaml", "model_card.json",
                                                          "student.torchscript"]


def test_parity_failure_writes_nothing(resnet8_run, tmp_path, monkeypatch, capsys):
    import mdistiller.export.run_export as run_export

    def off_by(delta):  # an exported model whose logits differ from PyTorch's by delta
        def load(path):
            run = load_exported(path)
            return lambda x: run(x) + delta
        return load

    out = tmp_path / "never"
    monkeypatch.setattr(run_export, "load_exported", off_by(0.01))
    code, _, err = tool(export_cli.main, capsys, resnet8_run, "--format", "torchscript", "--out", out)
    assert code == 2 and re.fullmatch(r"error: the exported torchscript model differs from PyTorch: max \|logit "
                                      r"difference\| 0.01 > --tolerance 0.001 .*nothing was written.*\n", err)
    assert not out.exists()
    # an existing output folder keeps its earlier export untouched
    monkeypatch.setattr(run_export, "load_exported", off_by(0.0))
    assert tool(export_cli.main, capsys, resnet8_run, "--format", "torchscript", "--out", out)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(run_export, "load_exported", off_by(0.01))
    assert tool(export_cli.main, capsys, resnet8_run, "--format", "torchscript", "--out", out)[0] == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_corrupt_and_mismatched_checkpoints_are_one_line(resnet8_run, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(resnet8_run, bad)
    # a truncated checkpoint (a text file is named as one instead: tests/cli/test_errors.py)
    with open(os.path.join(resnet8_run, "student_best"), "rb") as f:
        whole = f.read()
    (bad / "student_best").write_bytes(whole[:len(whole) // 2])
    code, _, err = tool(export_cli.main, capsys, bad)
    assert code == 2 and re.fullmatch(r"error: checkpoint .*student_best' is truncated or corrupt .*\n", err)
    shutil.copy(os.path.join(resnet8_run, "student_best"), bad / "student_best")
    cfg = (bad / "config.yaml").read_text().replace("STUDENT: resnet8", "STUDENT: resnet14")
    (bad / "config.yaml").write_text(cfg)
    code, _, err = tool(export_cli.main, capsys, bad)
    assert code == 2 and re.fullmatch(r"error: checkpoint .* does not fit model resnet14: .*\n", err)
    assert not (bad / "export").exists()


def test_an_unexportable_model_names_the_reason(resnet8_run, tmp_path, monkeypatch, capsys):
    class DataDependent(torch.nn.Module):
        def forward(self, x):
            return x.mean((2, 3)) if x.sum() > 0 else -x.mean((2, 3))  # control flow on values

    monkeypatch.setattr("mdistiller.export.run_export.LogitsOnly", lambda *a: DataDependent())
    code, _, err = tool(export_cli.main, capsys, resnet8_run, "--format", "pt2", "--out", tmp_path / "x")
    assert code == 2 and re.fullmatch(r"error: cannot export to pt2: .+; try another --format .*\n", err), err
    assert not (tmp_path / "x").exists()

    class NoOnnxOperator(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.eigvals(x[:, 0, :4, :4]).real  # no ONNX function for aten.linalg_eig

    monkeypatch.setattr("mdistiller.export.run_export.LogitsOnly", lambda *a: NoOnnxOperator())
    code, _, err = tool(export_cli.main, capsys, resnet8_run, "--out", tmp_path / "o")
    assert code == 2 and re.fullmatch(r"error: cannot export to onnx: No ONNX function found for .*aten.linalg_eig.*\n",
                                      err), err
    monkeypatch.setattr("mdistiller.export.run_export.LogitsOnly", lambda *a: torch.nn.Flatten())
    code, _, err = tool(export_cli.main, capsys, resnet8_run, "--format", "torchscript", "--out", tmp_path / "y")
    assert code == 2 and re.fullmatch(r"error: the exported model returns shape \(16, 3072\), not PyTorch's logits "
                                      r"\(16, 10\).*\n", err), err


def test_model_cost_is_cached_per_architecture(tmp_path, monkeypatch):
    import mdistiller.export.cost as cost

    calls = []
    real = cost.measure_latency
    monkeypatch.setattr(cost, "measure_latency", lambda *a, **k: calls.append(1) or real(*a, repeats=2, warmup=1))
    a = model_cost("resnet8", "cifar", 10, 32, cache=str(tmp_path))
    b = model_cost("resnet8", "cifar", 10, 32, cache=str(tmp_path))
    assert a == b and len(calls) == 1 and a["latency_ms"] > 0
    assert a["parameters"] == count_parameters(build_model("resnet8", "cifar", 10))
    model_cost("resnet8", "cifar", 100, 32, cache=str(tmp_path))  # another class count: measured again
    assert len(calls) == 2


def test_summarize_cost_columns_and_plots(resnet8_run, tmp_path, monkeypatch, capsys):
    from mdistiller.cli import summarize

    monkeypatch.setenv("MDISTILLER_CACHE", str(tmp_path / "cache"))
    project = os.path.dirname(resnet8_run)
    code, out, err = tool(summarize.main, capsys, project, "--cost", "--csv", "--plot", tmp_path / "plots")
    assert code == 0, err
    row = list(__import__("csv").DictReader(out.splitlines()))[0]
    assert row["student"] == "resnet8" and int(row["parameters"]) == count_parameters(build_model("resnet8", "cifar", 10))
    assert int(row["flops"]) > 0 and float(row["latency_ms"]) > 0 and row["cpu"]
    assert {p.name for p in (tmp_path / "plots").iterdir()} >= {"top1_vs_flops.png", "top1_vs_latency.png"}
    code, out, _ = tool(summarize.main, capsys, project, "--cost")
    assert "params (M)" in out and "MFLOPs" in out and "latency (ms)" in out and "batch 1 on" in out
