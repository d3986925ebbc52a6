"""timm: and torchvision: models in the zoo's (logits, feats) form: shapes, state-dict
round trips, weights and their errors (random weights, small models and images, offline)."""

import sys

import pytest
import torch

from mdistiller.runs.checkpoint import load_model_weights
from mdistiller.models import build_model, check_model_name
from mdistiller.models.external import resize_inputs
from mdistiller.utils.errors import CheckpointError, ConfigError, UnknownNameError

# name, image size, stage (channels, side) expected from the libraries' architectures, pooled width
CASES = {
    "timm:resnet10t": (32, [(64, 16), (64, 8), (128, 4), (256, 2), (512, 1)], 512),
    "timm:vit_tiny_patch16_224": (32, [(192, 2)] * 12, 192),
    "torchvision:mobilenet_v3_small": (32, [(16, 16), (16, 8), (24, 4), (48, 2), (576, 1)], 1024),
    "torchvision:resnet18": (64, [(64, 32), (64, 16), (128, 8), (256, 4), (512, 2)], 512),
}


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: build_model(name, "cifar", 7, size) for name, (size, _, _) in CASES.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_and_features_in_the_zoo_form(models, name, one_thread):
    size, stages, pooled_width = CASES[name]
    model = models[name].eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        logits, feats = model(x)
        library = model.model(x)  # the wrapped library model's own forward
    assert logits.shape == (2, 7) and feats["pooled_feat"].shape == (2, pooled_width)
    assert [(f.shape[1], f.shape[2]) for f in feats["feats"]] == stages
    assert all(f.shape[0] == 2 and f.shape[2] == f.shape[3] for f in feats["feats"])
    assert model.get_stage_channels() == [c for c, _ in stages]
    torch.testing.assert_close(logits, library)
    with pytest.raises(ConfigError, match=r"gives no feats\['preact_feats'\]"):
        feats["preact_feats"]


@pytest.mark.parametrize("name", ["timm:resnet10t", "torchvision:mobilenet_v3_small"])
def test_state_dicts_round_trip_in_every_layout(models, name, tmp_path, one_thread):
    size = CASES[name][0]
    source = models[name].eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        want = source(x)[0]
    layouts = {
        "library": source.model.state_dict(),  # a plain timm/torchvision state dict
        "wrapped": {"model": source.state_dict()},  # this framework's student_best
        "distiller": {"model": {f"module.student.{k}": v for k, v in source.state_dict().items()}},
    }
    for layout, obj in layouts.items():
        torch.save(obj, tmp_path / f"{layout}.pth")
        model = build_model(name, "cifar", 7, size)
        load_model_weights(model, str(tmp_path / f"{layout}.pth"), name)
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(x)[0], want, msg=layout)
    # another number of classes, or another architecture, is refused with what differs
    with pytest.raises(CheckpointError, match=r"is for 7 classes but .* has 5"):
        load_model_weights(build_model(name, "cifar", 5, size), str(tmp_path / "library.pth"), name)
    with pytest.raises(CheckpointError, match="does not fit model"):
        load_model_weights(build_model("resnet8", "cifar", 7), str(tmp_path / "library.pth"), "resnet8")


def test_safetensors_checkpoint(models, tmp_path, one_thread):
    from safetensors.torch import save_file

    source = models["timm:resnet10t"]
    save_file(source.model.state_dict(), str(tmp_path / "model.safetensors"))
    model = load_model_weights(build_model("timm:resnet10t", "cifar", 7, 32), str(tmp_path / "model.safetensors"),
                               "timm:resnet10t")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), source.state_dict().values()))


def test_names_sizes_and_missing_timm_are_one_line_errors(monkeypatch):
    check_model_name("timm:resnet10t")
    with pytest.raises(UnknownNameError, match="timm"):
        check_model_name("keras:resnet")
    for name, lib in (("timm:no_such_net", "timm"), ("torchvision:no_such_net", "torchvision")):
        with pytest.raises(ConfigError, match=f"{lib} has no model 'no_such_net'"):
            build_model(name, "cifar", 7)
    with pytest.raises(ConfigError, match="cannot take 8-pixel images"):
        build_model("timm:vit_tiny_patch16_224", "cifar", 7, 8)
    monkeypatch.setitem(sys.modules, "timm", None)  # as if timm were not installed
    with pytest.raises(ConfigError) as e:
        build_model("timm:resnet10t", "cifar", 7)
    assert "pip install timm" in str(e.value) and "\n" not in str(e.value)


def test_pretrained_weights_offline_say_where_to_put_the_file(monkeypatch):
    import timm
    import torch.hub

    def offline(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(CheckpointError) as e:
        build_model("torchvision:resnet18", "imagenet", 1000, 32, pretrained=True)
    msg = str(e.value)
    assert "resnet18-f37072fd.pth" in msg and torch.hub.get_dir() in msg and "offline" in msg
    real_create = timm.create_model
    monkeypatch.setattr(timm, "create_model",
                        lambda *a, pretrained=False, **k: offline() if pretrained else real_create(*a, **k))
    with pytest.raises(CheckpointError, match="timm/resnet10t.*DISTILLER.TEACHER_CKPT"):
        build_model("timm:resnet10t", "imagenet", 1000, 32, pretrained=True)
    # the library's 1000-class head does not fit another class count
    with pytest.raises(CheckpointError, match="1000-class head but the dataset has 7"):
        build_model("torchvision:resnet18", "cifar", 7, 32, pretrained=True)


def test_resized_inputs_reach_the_model_at_its_size(models, one_thread):
    teacher = models["torchvision:resnet18"].eval()  # built for 64 pixels
    resized = resize_inputs(build_model("torchvision:resnet18", "cifar", 7, 64), 64).eval()
    resized.load_state_dict(teacher.state_dict())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        logits, feats = resized(x)
        up = torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
        torch.testing.assert_close(logits, teacher(up)[0])
    assert feats["feats"][0].shape[-1] == 32  # the stem halves 64, not 32
