"""DATASET.HOLDOUT (issue #23): a stratified held-out split of the training set, never
trained on, evaluated every epoch (``val_acc``), selecting the reported epoch; split.json;
for every dataset type; exact resume."""

import json
import os
import warnings

import pytest
import torch
import torchvision

from mdistiller.cli.eval import main as eval_main
from mdistiller.dataset import base, get_dataset, holdout_indices
from mdistiller.engine import trainer as trainer_mod
from mdistiller.engine.cfg import get_default_cfg
from mdistiller.engine.checkpoint import load_checkpoint
from mdistiller.utils.errors import ConfigError
from tests.dataset.test_datasets import write_fashion
from tests.dataset.test_folders import write_folder, write_tiny
from tests.engine.helpers import make_teacher, metrics, run_dir, tiny_argv, train_main, train_straight_and_resumed

SPLIT_KEYS = {"holdout_indices", "seed", "fraction", "num_train"}


@pytest.fixture
def served(monkeypatch):
    """Records the training-set indices the loaders served: ``train`` while an epoch
    trains, ``eval`` while the model is evaluated (the holdout; the test split is not an
    IndexedSubset without VAL_SUBSET). Indices are those into the full training set."""
    log = {"train": set(), "eval": set(), "phase": None}
    get_item, train_epoch, evaluate = base.IndexedSubset.__getitem__, trainer_mod.Trainer.train_epoch, \
        trainer_mod.Trainer.evaluate

    def recording_get(self, i):
        if log["phase"]:
            log[log["phase"]].add(int(self.indices[i]))
        return get_item(self, i)

    def phase(name, fn):
        def wrapped(*args, **kwargs):
            log["phase"] = name
            try:
                return fn(*args, **kwargs)
            finally:
                log["phase"] = None
        return wrapped

    monkeypatch.setattr(base.IndexedSubset, "__getitem__", recording_get)
    monkeypatch.setattr(trainer_mod.Trainer, "train_epoch", phase("train", train_epoch))
    monkeypatch.setattr(trainer_mod.Trainer, "evaluate", phase("eval", evaluate))
    return log


def read_split(tmp_path, name):
    with open(os.path.join(run_dir(tmp_path, name), "split.json")) as f:
        return json.load(f)


class FakeCIFAR:
    """torchvision's CIFAR100 without files: 100 classes, 2 training images each."""

    def __init__(self, root, train, download):
        n = 200 if train else 20
        g = torch.Generator().manual_seed(int(train))
        self.data = torch.randint(0, 256, (n, 32, 32, 3), generator=g, dtype=torch.uint8).numpy()
        self.targets = [i % 100 for i in range(n)]


def dataset_argv(kind, tmp_path, monkeypatch):
    """KEY VALUE overrides of a tiny dataset of type ``kind`` faked in ``tmp_path``."""
    root = tmp_path / "data"
    root.mkdir()
    if kind == "synthetic":
        return []
    if kind == "cifar100":
        monkeypatch.setattr(torchvision.datasets, "CIFAR100", FakeCIFAR)
        return ["DATASET.TYPE", "cifar100", "DATASET.ROOT", str(root)]
    if kind == "fashion_mnist":
        write_fashion(root, n_train=40, n_val=10)
        return ["DATASET.TYPE", "fashion_mnist", "DATASET.ROOT", str(root)]
    if kind == "tiny_imagenet":
        write_tiny(root, per_class=4)
        return ["DATASET.TYPE", "tiny_imagenet", "DATASET.ROOT", str(root), "DATASET.IMAGE_SIZE", "32"]
    if kind in ("imagefolder", "imagefolder48"):  # 32: the CIFAR pipeline; 48: the ImageNet one
        write_folder(root, per_class=4)
        size, student = ("32", "resnet8") if kind == "imagefolder" else ("48", "ResNet18")
        return ["DATASET.TYPE", "imagefolder", "DATASET.ROOT", str(root), "DATASET.IMAGE_SIZE", size,
                "DISTILLER.STUDENT", student]
    assert kind == "imagenet"
    from PIL import Image

    for split, n in (("train", 3), ("val", 1)):
        for c, wnid in enumerate(("n001", "n002")):
            os.makedirs(root / split / wnid)
            for i in range(n):
                Image.new("RGB", (40 + 10 * i, 30), (80 * c, 20, 200)).save(root / split / wnid / f"{i}.png")
    return ["DATASET.TYPE", "imagenet", "DATASET.ROOT", str(root), "DISTILLER.STUDENT", "ResNet18"]


@pytest.mark.parametrize("kind", ["synthetic", "cifar100", "fashion_mnist", "tiny_imagenet", "imagefolder",
                                  "imagefolder48", "imagenet"])
def test_holdout_is_never_trained_on_for_every_dataset_type(tmp_path, monkeypatch, served, kind):
    extra = dataset_argv(kind, tmp_path, monkeypatch)
    # the folders are a few images a class: batches of 1 fit what the holdout leaves and serve all of it
    argv = tiny_argv(tmp_path, "h", "DISTILLER.TYPE", "NONE", "DATASET.HOLDOUT", "0.3", "SOLVER.BATCH_SIZE", "1",
                     *extra)
    assert train_main(argv) == 0
    split = read_split(tmp_path, "h")
    assert set(split) == SPLIT_KEYS and split["seed"] == 0 and split["fraction"] == 0.3
    held = split["holdout_indices"]
    assert held == sorted(set(held)) and held
    # the stratified draw of DATASET.HOLDOUT_SEED, independent of the run
    cfg = get_default_cfg()
    cfg.merge_from_list(extra or ["DATASET.TYPE", "synthetic", "DATASET.SYNTHETIC_SIZE", "48"])
    cfg.DATASET.HOLDOUT = 0.3
    spec = get_dataset(cfg)
    full_targets = torch.as_tensor(spec.train.base.targets)
    assert held == holdout_indices(full_targets, 0.3, 0).tolist()
    assert not served["train"] & set(held)  # never trained on
    assert served["train"] == set(range(len(full_targets))) - set(held) and split["num_train"] == len(served["train"])
    assert served["eval"] == set(held)  # evaluated, as a whole
    records = metrics(tmp_path, "h")
    assert records and all("val_acc" in r and r["selected_epoch"] == 1 for r in records)


def test_imagenet_style_holdout_is_loaded_with_the_evaluation_crop(tmp_path, monkeypatch):
    cfg = get_default_cfg()
    cfg.merge_from_list(dataset_argv("imagenet", tmp_path, monkeypatch) + ["DATASET.HOLDOUT", "0.3"])
    spec = get_dataset(cfg)
    assert spec.train.base.train and not spec.holdout.base.train  # training crop vs test crop
    assert len(spec.train) == 4 and len(spec.holdout) == 2
    a, b = spec.holdout[0]["image"], spec.holdout[0]["image"]
    assert torch.equal(a, b) and a.shape == (3, 224, 224)  # deterministic: resize + centre crop


def test_split_is_shared_by_seeds_and_methods_and_composes_with_subset(tmp_path, served):
    teacher = tmp_path / "t.pth"
    make_teacher(teacher)
    common = ["DATASET.HOLDOUT", "0.25", "DATASET.SYNTHETIC_SIZE", "80"]
    runs = {"s0": ["DISTILLER.TYPE", "NONE"], "s1": ["DISTILLER.TYPE", "NONE", "EXPERIMENT.SEED", "1"],
            "kd": ["DISTILLER.TYPE", "KD", "EXPERIMENT.SEED", "3"],
            "sub": ["DISTILLER.TYPE", "NONE", "DATASET.SUBSET", "0.5"]}
    trained = {}
    for name, opts in runs.items():
        served["train"] = set()
        assert train_main(tiny_argv(tmp_path, name, *common, *opts, teacher=teacher)) == 0
        trained[name] = served["train"]
    splits = {name: read_split(tmp_path, name) for name in runs}
    held = splits["s0"]["holdout_indices"]
    assert len(held) == 20  # 8 images per class, 2 held out of each of the 10 classes
    assert all(s["holdout_indices"] == held for s in splits.values())
    assert [splits[n]["num_train"] for n in runs] == [60, 60, 60, 30]
    assert trained["sub"] < trained["s0"] and not trained["sub"] & set(held)  # the subset, from what is left
    other = get_default_cfg()
    other.merge_from_list(["DATASET.TYPE", "synthetic", *common, "DATASET.HOLDOUT_SEED", "1"])
    assert get_dataset(other).split["holdout_indices"] != held


def test_holdout_indices_are_stratified_and_checked():
    targets = torch.tensor([0] * 10 + [1] * 3 + [2] * 2)
    held = holdout_indices(targets, 0.2, seed=5)
    counts = torch.bincount(targets[held], minlength=3).tolist()
    assert counts == [2, 1, 1]  # round(0.2 * n), at least one per class
    assert torch.equal(held, holdout_indices(targets, 0.2, seed=5))
    with pytest.raises(ConfigError, match="holds out all 1 training images of class 3"):
        holdout_indices(torch.tensor([0, 0, 3]), 0.5, seed=0)
    cfg = get_default_cfg()
    for bad in (1.0, -0.1):
        cfg.DATASET.HOLDOUT = bad
        with pytest.raises(ConfigError, match=r"DATASET.HOLDOUT must be a fraction in \[0, 1\)"):
            get_dataset(cfg)


def test_student_best_is_the_val_acc_selected_epoch(tmp_path, monkeypatch, capsys):
    """Holdout accuracies scripted as 50, 70, 70, 60: epoch 2 is selected (the tie with
    epoch 3 goes to the earliest), whatever the test set says."""
    script = iter([50.0, 70.0, 70.0, 60.0])
    evaluate = trainer_mod.Trainer.evaluate

    def scripted(self, model_fn=None, loader=None):
        out = evaluate(self, model_fn, loader)
        if loader is not None and loader is self.holdout_loader:
            out["top1"] = next(script)
        return out

    monkeypatch.setattr(trainer_mod.Trainer, "evaluate", scripted)
    argv = tiny_argv(tmp_path, "sel", "DISTILLER.TYPE", "NONE", "DATASET.HOLDOUT", "0.2", "SOLVER.EPOCHS", "4",
                     "LOG.SAVE_CHECKPOINT_FREQ", "1", "SOLVER.LR", "0.2")
    assert train_main(argv) == 0
    records = metrics(tmp_path, "sel")
    assert [r["val_acc"] for r in records] == [50.0, 70.0, 70.0, 60.0]
    assert [r["selected_epoch"] for r in records] == [1, 2, 2, 2]
    assert [r["best_acc"] for r in records] == [records[0]["test_acc"]] + [records[1]["test_acc"]] * 3
    d = run_dir(tmp_path, "sel")
    best, second = load_checkpoint(os.path.join(d, "student_best")), load_checkpoint(os.path.join(d, "student_2"))
    assert best["epoch"] == 2 and best["selected_on"] == "holdout" and best["val_acc"] == 70.0
    assert all(torch.equal(best["model"][k], second["model"][k]) for k in second["model"])
    assert load_checkpoint(os.path.join(d, "best"))["selected_on"] == "holdout"
    capsys.readouterr()
    assert eval_main(["-c", d, "--device", "cpu", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert f"top-1 {records[1]['test_acc']:.2f} " in out
    assert out.strip().endswith("; epoch 2, selected on the holdout split of the training set")


def test_without_holdout_the_best_is_selected_on_test_and_says_so(tmp_path, capsys):
    assert train_main(tiny_argv(tmp_path, "plain", "DISTILLER.TYPE", "NONE", "SOLVER.EPOCHS", "2")) == 0
    out = capsys.readouterr().out
    records = metrics(tmp_path, "plain")
    assert all("val_acc" not in r for r in records)
    best = max(records, key=lambda r: (r["test_acc"], r["epoch"]))  # the reference: ties to the latest
    assert records[-1]["selected_epoch"] == best["epoch"] and records[-1]["best_acc"] == best["test_acc"]
    assert not os.path.exists(os.path.join(run_dir(tmp_path, "plain"), "split.json"))
    assert "selected on the test set (optimistic)" in out.splitlines()[-1]
    assert all("selected on the test set" in line for line in out.splitlines() if " best " in line)


def test_resume_with_holdout_is_exact(tmp_path):
    common = ["DISTILLER.TYPE", "KD", "DATASET.HOLDOUT", "0.2", "EXPERIMENT.DETERMINISTIC", "True",
              "SOLVER.LR_DECAY_STAGES", "[2]"]
    teacher = tmp_path / "t.pth"
    make_teacher(teacher)
    train_straight_and_resumed(tmp_path, common, 3, teacher)
    a, b = (load_checkpoint(os.path.join(run_dir(tmp_path, n), "student_latest"))["model"]
            for n in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    keys = ("epoch", "val_acc", "val_loss", "test_acc", "best_acc", "selected_epoch", "train_loss")
    straight, resumed = metrics(tmp_path, "straight"), metrics(tmp_path, "resumed")
    assert [[r[k] for k in keys] for r in resumed] == [[r[k] for k in keys] for r in straight]
    assert read_split(tmp_path, "straight") == read_split(tmp_path, "resumed")
    best = [load_checkpoint(os.path.join(run_dir(tmp_path, n), "student_best")) for n in ("straight", "resumed")]
    assert best[0]["epoch"] == best[1]["epoch"] == straight[-1]["selected_epoch"]


def test_summarize_json_on_trained_runs_matches_their_records_and_scipy(tmp_path, capsys):
    """Two learning rates x two seeds with a holdout: summarize's selected figure is the
    test_acc of each run's recorded selected_epoch, and --baseline matches scipy."""
    stats = pytest.importorskip("scipy.stats")
    from mdistiller.cli import summarize

    for lr in ("0.05", "0.2"):
        for seed in ("0", "1"):
            assert train_main(tiny_argv(tmp_path, f"lr{lr}_s{seed}", "DISTILLER.TYPE", "NONE", "DATASET.HOLDOUT",
                                        "0.2", "SOLVER.EPOCHS", "3", "SOLVER.LR", lr, "EXPERIMENT.SEED", seed)) == 0
    capsys.readouterr()
    assert summarize.main([str(tmp_path / "out"), "--baseline", "SOLVER.LR=0.05", "--json"]) == 0
    out, err = capsys.readouterr()
    groups = {g["config"]["SOLVER.LR"]: g for g in json.loads(out)}
    figures = {}
    for lr, g in groups.items():
        for run in g["runs"]:
            records = metrics(tmp_path, os.path.basename(run["run"]))
            chosen = records[-1]["selected_epoch"]
            assert run["selected"] == records[chosen - 1]["test_acc"] == records[-1]["best_acc"]
            assert run["last"] == records[-1]["test_acc"]
            figures.setdefault(lr, []).append(run["selected"])
    with warnings.catch_warnings():  # equal figures: scipy warns and returns nan
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = stats.ttest_ind(figures[0.2], figures[0.05], equal_var=False)
    got = groups[0.2]
    assert got["metric"] == "selected" and got["n_compared"] == 2
    if ref.pvalue == ref.pvalue:  # defined (the figures are not all equal)
        ci = ref.confidence_interval(0.95)
        assert abs(got["p_value"] - ref.pvalue) < 1e-9
        assert abs(got["ci95"][0] - ci.low) < 1e-9 and abs(got["ci95"][1] - ci.high) < 1e-9
    else:
        assert got["p_value"] is None and got["ci95"] is None
    assert abs(got["diff"] - (sum(figures[0.2]) - sum(figures[0.05])) / 2) < 1e-9


def test_mid_epoch_interrupt_with_holdout_resumes_exactly(tmp_path, monkeypatch):
    common = ["DISTILLER.TYPE", "NONE", "DATASET.HOLDOUT", "0.2", "EXPERIMENT.DETERMINISTIC", "True",
              "SOLVER.EPOCHS", "3"]
    assert train_main(tiny_argv(tmp_path, "straight", *common)) == 0
    real_step, calls = trainer_mod.Trainer.train_step, {"n": 0}

    def step(self, batch, epoch):
        out = real_step(self, batch, epoch)
        calls["n"] += 1
        self._stop = calls["n"] == 4  # epoch 2, step 1 (3 steps per epoch: 38 images, batch 16)
        return out

    monkeypatch.setattr(trainer_mod.Trainer, "train_step", step)
    assert train_main(tiny_argv(tmp_path, "cut", *common)) == 130
    monkeypatch.setattr(trainer_mod.Trainer, "train_step", real_step)
    assert train_main(["--resume"] + tiny_argv(tmp_path, "cut", *common)) == 0
    keys = ("epoch", "val_acc", "test_acc", "best_acc", "selected_epoch")
    cut, straight = metrics(tmp_path, "cut"), metrics(tmp_path, "straight")
    assert [[r[k] for k in keys] for r in cut] == [[r[k] for k in keys] for r in straight]
    assert [r["train_loss"] for r in cut] == pytest.approx([r["train_loss"] for r in straight])
    a, b = (load_checkpoint(os.path.join(run_dir(tmp_path, n), "student_best")) for n in ("straight", "cut"))
    assert a["epoch"] == b["epoch"] and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
