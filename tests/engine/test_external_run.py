"""Training with timm/torchvision models through the command line's path (tiny synthetic
runs): KD and SLD with a timm teacher and a zoo student (one with a resized teacher view), a
feature method with a torchvision student where shapes match, the one-line errors where
they do not, and the teacher-weight keys."""

import pytest
import torch

from mdistiller.models import build_model
from tests.engine.helpers import metrics, tiny_argv, train_main

TEACHER = "timm:resnet10t"
STUDENT = "torchvision:mobilenet_v3_small"


@pytest.fixture(scope="module")
def timm_teacher(tmp_path_factory):
    """A plain timm state dict of the teacher (10 classes), as timm would save it."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "resnet10t.pth"
    torch.save(build_model(TEACHER, "cifar", 10, 32).model.state_dict(), path)
    return path


def run(tmp_path, name, *extra, teacher=None):
    return train_main(tiny_argv(tmp_path, name, "DATASET.SYNTHETIC_SIZE", 32, *extra, teacher=teacher))


@pytest.mark.parametrize("method,extra", [("KD", ("DISTILLER.TEACHER_INPUT_SIZE", 48)), ("SLD", ())])
def test_logit_methods_with_a_timm_teacher_and_a_zoo_student(tmp_path, timm_teacher, method, extra, capsys):
    teacher = timm_teacher
    if extra:  # a teacher trained at 48 pixels: its views are resized on the device
        torch.manual_seed(1)
        teacher = tmp_path / "resnet10t_48.pth"
        torch.save({"model": build_model(TEACHER, "cifar", 10, 48).state_dict()}, teacher)
    assert run(tmp_path, method, "DISTILLER.TYPE", method, "DISTILLER.TEACHER", TEACHER, *extra, teacher=teacher) == 0
    rows = metrics(tmp_path, method)
    assert len(rows) == 1 and torch.isfinite(torch.tensor(rows[0]["train_loss"]))


def test_feature_method_with_a_torchvision_student(tmp_path, timm_teacher, capsys):
    # the timm teacher and the torchvision student have the same stage sizes (16..1 at 32 px): FitNet pairs stage 2
    argv = ["DISTILLER.TYPE", "FITNET", "DISTILLER.TEACHER", TEACHER, "DISTILLER.STUDENT", STUDENT]
    assert run(tmp_path, "fitnet", *argv, teacher=timm_teacher) == 0
    assert len(metrics(tmp_path, "fitnet")) == 1


@pytest.mark.parametrize("method,extra,message", [
    ("FITNET", ("FITNET.HINT_LAYER", 3), "choose another FITNET.HINT_LAYER"),  # 2x2 student map vs 8x8 teacher map
    ("REVIEWKD", (), "gives no feats['preact_feats']"),
    ("OFD", (), "no get_bn_before_relu"),
])
def test_feature_methods_that_cannot_pair_say_which_key(tmp_path, timm_teacher, method, extra, message, capsys):
    argv = ["DISTILLER.TYPE", method, "DISTILLER.TEACHER", "resnet8", "DISTILLER.STUDENT", STUDENT]
    if method != "FITNET":
        argv[3] = TEACHER
    teacher = timm_teacher if method != "FITNET" else None
    if teacher is None:
        from tests.engine.helpers import make_teacher

        teacher = tmp_path / "resnet8.pth"
        make_teacher(teacher)
    assert run(tmp_path, method.lower(), *argv, *extra, teacher=teacher) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_teacher_weight_keys_are_one_line_errors(tmp_path, timm_teacher, capsys):
    cases = [
        (["DISTILLER.TEACHER", TEACHER], None, "set DISTILLER.TEACHER_CKPT to a file"),
        (["DISTILLER.TEACHER", TEACHER, "DISTILLER.TEACHER_PRETRAINED", "True"], timm_teacher, "set one of the two"),
        (["DISTILLER.TEACHER", "resnet8", "DISTILLER.TEACHER_PRETRAINED", "True"], None, "TEACHER_PRETRAINED is for"),
        (["DISTILLER.TEACHER", TEACHER, "DISTILLER.TEACHER_PRETRAINED", "True"], None, "1000-class head"),
        (["DISTILLER.TEACHER", "timm:resnet14t"], timm_teacher, "does not fit model timm:resnet14t"),
    ]
    for i, (argv, teacher, message) in enumerate(cases):
        assert run(tmp_path, f"bad{i}", "DISTILLER.TYPE", "KD", *argv, teacher=teacher) == 2, message
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (message, err)
