"""DISTILLER.EXTRA: a main method plus extra ones sharing student and teacher
(mdistiller.distillers.combine)."""

import pytest
import torch

from mdistiller.distillers import DISTILLERS, Combined, Need, TrainingSet, build_distiller, views_for_cfg
from mdistiller.config.load import load_cfg
from mdistiller.models import cifar_model_dict
from mdistiller.utils.errors import ConfigError, UnknownNameError

F64 = torch.float64
# resnet8 -> resnet32 (light); REVIEWKD and CRD need their channel keys for this pair
PAIR = ["DISTILLER.STUDENT", "resnet8", "DISTILLER.TEACHER", "resnet32",
        "REVIEWKD.IN_CHANNELS", "[16,32,64,64]", "REVIEWKD.OUT_CHANNELS", "[16,32,64,64]",
        "CRD.FEAT.STUDENT_DIM", "64", "CRD.FEAT.TEACHER_DIM", "64", "CRD.NCE.K", "5"]


def setup(main, extras, **kwargs):
    torch.manual_seed(0)
    cfg = load_cfg(opts=[*PAIR, "DISTILLER.TYPE", main, "DISTILLER.EXTRA", str(extras)])
    student, teacher = (cifar_model_dict[n][0](num_classes=100).double() for n in ("resnet8", "resnet32"))
    calls = {"student": 0, "teacher": 0}
    for name, m in (("student", student), ("teacher", teacher)):
        m.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    d = build_distiller(cfg, student, teacher, **kwargs).double().train()
    calls.update(student=0, teacher=0)  # construction probes the models' shapes
    return cfg, d, calls


def standalone(cfg, name, combined):
    """``name`` alone on the combined distiller's student/teacher, with the same connectors."""
    d = DISTILLERS[name](combined.student, combined.teacher, cfg).double().train()
    part = combined.main if name == combined.names[0] else combined.extras[name]
    assert not d.load_state_dict(part.state_dict(), strict=False).unexpected_keys
    return d


def batch(views, n=2):
    x = [torch.randn(n, 3, 32, 32, dtype=F64) for _ in range(views)]
    keys = ["image"] if views == 1 else ["image_weak", "image_strong"]
    return {**dict(zip(keys, x)), "target": torch.arange(n), "index": torch.arange(n), "epoch": 5}


def test_without_extra_the_method_itself_is_built():
    cfg = load_cfg(opts=[*PAIR, "DISTILLER.TYPE", "FITNET"])
    d = build_distiller(cfg, *(cifar_model_dict[n][0](num_classes=100) for n in ("resnet8", "resnet32")))
    assert type(d) is DISTILLERS["FITNET"]


@pytest.mark.parametrize("main, extra, views", [("SLD", "REVIEWKD", 2), ("DKD", "FITNET", 1)])
def test_combined_losses_are_the_parts_losses(main, extra, views):
    cfg, d, calls = setup(main, [extra])
    assert isinstance(d, Combined) and d.num_views == views == views_for_cfg(cfg)
    b = batch(views)
    logits, losses = d(**b)
    assert calls == {"student": views, "teacher": 1}  # the views' student forwards are shared
    alone_main = standalone(cfg, main, d)(**b)[1]
    alone_extra = standalone(cfg, extra, d)(**{**b, "image": b.get("image", b.get("image_weak"))})[1]
    expected = {**alone_main, f"{extra.lower()}_loss_kd": alone_extra["loss_kd"]}
    assert sorted(losses) == sorted(expected)
    for k, v in expected.items():
        torch.testing.assert_close(losses[k], v, rtol=1e-10, atol=1e-12)
    sum(losses.values()).backward()
    connector = next(iter(d.extras[extra].parameters()))
    assert connector.grad is not None and connector.grad.abs().sum() > 0
    assert all(p.grad is None for p in d.teacher.parameters())
    assert logits.shape == (2, 100)
    # checkpoint layout: shared models once, each method's own modules under its name
    prefixes = {k.split(".")[0] for k in d.state_dict()}
    assert prefixes <= {"student", "teacher", "main", "extras"}
    assert d.get_extra_parameters() == sum(p.numel() for p in d.extras[extra].parameters())
    assert not d.eval().training and torch.equal(d(image=b.get("image", b.get("image_weak"))),
                                                 d.student(b.get("image", b.get("image_weak")))[0])


def test_crd_as_extra_gets_num_data_and_its_batch_hook():
    targets = torch.arange(20) % 4
    cfg, d, _ = setup("KD", ["CRD"], train_set=TrainingSet(20, targets))
    assert Need.TRAIN_SET in d.needs and d.extras["CRD"].num_data == 20
    b = d.prepare_batch(batch(1, n=4))
    assert b["contrastive_index"].shape == (4, 6)
    _, losses = d(**b)
    assert sorted(losses) == ["crd_loss_kd", "loss_ce", "loss_kd"]


def test_teacher_stays_in_eval_mode_with_ofd_as_extra():
    _, d, _ = setup("KD", ["OFD"])
    assert not d.train().teacher.training


@pytest.mark.parametrize("extra, error", [(["KD"], ConfigError), (["NOPE"], UnknownNameError)])
def test_bad_extra_lists(extra, error):
    with pytest.raises(error):
        setup("KD", extra)


def test_combined_teacher_runs_the_cached_bn_folded_path():
    torch.manual_seed(0)
    cfg = load_cfg(opts=[*PAIR, "DISTILLER.TYPE", "SLD", "DISTILLER.EXTRA", "['FITNET']"])
    student, teacher = (cifar_model_dict[n][0](num_classes=100) for n in ("resnet8", "resnet32"))
    d = build_distiller(cfg, student, teacher).train()
    b = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in batch(2).items()}
    d(**b)
    folded = d.__dict__["_teacher_cache"]["model"]
    assert isinstance(folded, torch.fx.GraphModule)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    calls = []
    folded.register_forward_hook(lambda *_: calls.append(1))
    _, losses = d(**b)
    # the next step reuses the cached copy: one forward over both views serves both methods
    assert calls == [1] and d.__dict__["_teacher_cache"]["model"] is folded
    assert "fitnet_loss_kd" in losses
    parts = [d.main, *d.extras.values()]
    assert all("_teacher_cache" not in p.__dict__ and "teacher" not in p._modules for p in parts)
    assert all(p.teacher is d.teacher for p in parts)
