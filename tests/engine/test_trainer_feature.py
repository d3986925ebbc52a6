"""Feature-based distillers through the real trainer on synthetic data: connectors train,
the teacher does not, CRD resumes with its memory bank, SLD combines with a feature method."""

import os

import pytest
import torch

from mdistiller.runs.checkpoint import load_checkpoint
from tests.engine.helpers import make_teacher, metrics, run_dir, tiny_argv, train_main

FEATURE = ["FITNET", "AT", "OFD", "RKD", "KDSVD", "CRD", "NST", "PKT", "SP", "VID", "REVIEWKD"]
PAIR = ["DISTILLER.TEACHER", "resnet32x4", "DISTILLER.STUDENT", "resnet8x4", "CRD.NCE.K", "8",
        "DATASET.SYNTHETIC_SIZE", "16", "SOLVER.BATCH_SIZE", "8", "DATASET.TEST.BATCH_SIZE", "16"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    path = tmp_path_factory.mktemp("t") / "res32x4.pth"
    make_teacher(path, name="resnet32x4")
    return path


def own_state(state, prefix_out=("student.", "teacher.")):
    return {k: v for k, v in state.items() if not k.startswith(prefix_out)}


@pytest.mark.parametrize("method", FEATURE)
def test_feature_method_trains_through_the_trainer(tmp_path, teacher, method):
    from mdistiller.distillers import DISTILLERS
    from mdistiller.engine.build import build_distiller
    from mdistiller.config.load import load_cfg
    from mdistiller.models import build_model

    argv = tiny_argv(tmp_path, method, "DISTILLER.TYPE", method, *PAIR, teacher=teacher)
    cfg = load_cfg(None, argv)
    torch.manual_seed(0)

    class Spec:  # what build_distiller reads
        num_train = 16
        train_targets = torch.arange(16) % 10

    initial = build_distiller(cfg, build_model("resnet8x4", "cifar", 10), build_model("resnet32x4", "cifar", 10),
                              Spec()).state_dict()
    assert method in DISTILLERS
    assert train_main(argv) == 0
    state = load_checkpoint(os.path.join(run_dir(tmp_path, method), "latest"))["model"]
    t_ref = torch.load(teacher)["model"]
    for k, v in t_ref.items():  # teacher weights never change (OFD's train-mode BN stats may)
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(state[f"teacher.{k}"], v), k
        elif method != "OFD":
            assert torch.equal(state[f"teacher.{k}"], v), k
    extra = own_state(state)
    assert set(extra) == set(own_state(initial))
    trainable = [k for k, v in extra.items() if v.is_floating_point() and ("weight" in k or "bias" in k)]
    if method in ("FITNET", "OFD", "VID", "CRD", "REVIEWKD"):
        assert trainable
        assert any(not torch.equal(extra[k], initial[k]) for k in trainable), "connectors did not train"
    assert metrics(tmp_path, method)[0]["losses"]


def test_crd_resumes_with_its_memory_bank(tmp_path, teacher):
    common = ["DISTILLER.TYPE", "CRD", *PAIR, "EXPERIMENT.DETERMINISTIC", "True"]
    assert train_main(tiny_argv(tmp_path, "crd_full", *common, "SOLVER.EPOCHS", "2", teacher=teacher)) == 0
    assert train_main(tiny_argv(tmp_path, "crd_cut", *common, "SOLVER.EPOCHS", "1", teacher=teacher)) == 0
    first = load_checkpoint(os.path.join(run_dir(tmp_path, "crd_cut"), "latest"))["model"]
    banks = [k for k in first if "memory" in k]
    assert banks, "CRD's memory bank is not in the checkpoint"
    assert train_main(["--resume"] + tiny_argv(tmp_path, "crd_cut", *common, "SOLVER.EPOCHS", "2",
                                               teacher=teacher)) == 0
    a = load_checkpoint(os.path.join(run_dir(tmp_path, "crd_full"), "latest"))["model"]
    b = load_checkpoint(os.path.join(run_dir(tmp_path, "crd_cut"), "latest"))["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(first[banks[0]], b[banks[0]])  # the bank moved on after resuming


def test_sld_combined_with_a_feature_method(tmp_path, teacher):
    argv = tiny_argv(tmp_path, "combo", "DISTILLER.TYPE", "SLD", "DISTILLER.EXTRA", "['REVIEWKD']", "SLD.GAMMA", "0",
                     *PAIR, teacher=teacher)
    assert train_main(argv) == 0
    losses = metrics(tmp_path, "combo")[0]["losses"]
    assert {"loss_ce", "loss_kd"} <= set(losses) and any(k.startswith("reviewkd_") for k in losses)
