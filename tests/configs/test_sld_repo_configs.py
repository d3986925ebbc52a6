"""Every config file of the SLD repository (tests/data/sld_repo_configs.json.gz) is shipped at
the same path and trains the same run: the same effective solver, dataset, pair, method and
method settings (the file's value, else the repository's default).

What differs by design, and is stated in configs/README.md:
- the run's name and folder (``EXPERIMENT.*``) and ``SOLVER.TRAINER``, which the framework
  accepts but does not read (the views follow the distiller);
- SLD and MLKD keep their weights in their own nodes: the reference's ``KD.LOSS.CE_WEIGHT`` /
  ``KD_WEIGHT`` are ``SLD.*`` / ``MLKD.*`` here, MLKD's first temperature is ``KD.TEMPERATURE``
  there; SLD's temperatures 1..6 and gate 150 and MLKD's other temperatures [3, 5, 2, 6] are
  hard-coded in the reference and config values here;
- the SLD repository's ``KD`` is its swap variant (``SWAPKD``); its ``kd.yaml`` files keep
  mdistiller's plain KD here, with the same values;
- the ImageNet student the reference calls ``MobileNetV2`` had MobileNetV1's architecture;
  the ``r50_mv2`` feature files, whose widths are MobileNetV1's, name ``MobileNetV1``;
- a vanilla run (``NONE``) builds no teacher, so its ``DISTILLER.TEACHER`` is not read.
"""

import os
import warnings

import pytest

from mdistiller.distillers import DISTILLERS
from mdistiller.config.load import get_key, load_cfg
from tests.configs.helpers import assert_trains_a_step, same, translate_reference
from tests.conftest import REPO_ROOT, load_reference

REF = load_reference("sld_repo_configs")
NOT_READ = ("EXPERIMENT.", "SOLVER.TRAINER")
IMAGENET_FEATURE_FILES = [f"configs/imagenet/{pair}/{m}.yaml" for pair, methods in
                          (("r34_r18", ("at", "crd", "reviewkd")), ("r50_mv2", ("at", "crd", "ofd", "reviewkd")))
                          for m in methods]
MOBILENET_V1_FILES = [f for f in IMAGENET_FEATURE_FILES if "/r50_mv2/" in f]


def effective(rel):
    """The reference run's settings: the file's keys over the repository's defaults."""
    return {**REF["defaults"], **REF["files"][rel]}


def load_ours(rel):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the ImageNet SLD files warn that GAMMA 150 >= 100 epochs
        return load_cfg(os.path.join(REPO_ROOT, rel))


def expected_values(rel):
    """``{our key: value}`` the shipped file must have for the reference file ``rel``."""
    out = translate_reference(effective(rel), NOT_READ)
    if rel in MOBILENET_V1_FILES:
        assert out["DISTILLER.STUDENT"] == "MobileNetV2"
        out["DISTILLER.STUDENT"] = "MobileNetV1"
    return out


def test_reference_record_is_complete():
    assert len(REF["files"]) == 64
    assert all(rel.startswith("configs/") and rel.endswith(".yaml") for rel in REF["files"])


@pytest.mark.parametrize("rel", sorted(REF["files"]))
def test_reference_file_is_shipped_with_its_values(rel):
    assert os.path.isfile(os.path.join(REPO_ROOT, rel)), f"{rel} is not shipped"
    cfg = load_ours(rel)
    differ = {key: (get_key(cfg, key), value) for key, value in expected_values(rel).items()
              if not same(get_key(cfg, key), value)}
    assert not differ, f"{rel}: ours vs reference {differ}"


def test_every_reference_key_is_compared():
    """Each key a reference file sets is either compared or one of the documented exceptions."""
    compared = {k for rel in REF["files"] for k in expected_values(rel)}
    for rel, keys in REF["files"].items():
        moved = DISTILLERS[effective(rel)["DISTILLER.TYPE"]].legacy_keys
        for key in keys:
            assert key in compared or key.startswith(NOT_READ) or key in moved, (rel, key)


@pytest.mark.parametrize("trainer", sorted({v["SOLVER.TRAINER"] for v in REF["files"].values()
                                            if "SOLVER.TRAINER" in v} | {REF["defaults"]["SOLVER.TRAINER"]}))
def test_reference_trainer_values_keep_loading(trainer):
    assert trainer in ("base", "ours", "crd", "aug")
    cfg = load_cfg(os.path.join(REPO_ROOT, "configs", "cifar100", "dkd", "res32x4_res8x4.yaml"),
                   ["SOLVER.TRAINER", trainer])
    assert cfg.SOLVER.TRAINER == trainer


@pytest.mark.parametrize("rel", IMAGENET_FEATURE_FILES)
def test_imagenet_feature_file_builds_its_pair_and_trains_a_step(rel):
    """The method serves the file's ImageNet pair as configured (widths, dims, sizes): the
    distiller builds on the zoo's ImageNet models and a step on a batch of 2 gives finite
    losses and student gradients. Input 64x64, or 224x224 for ReviewKD, whose fusion sizes
    are those of a 224 input."""
    cfg = load_ours(rel)
    assert_trains_a_step(cfg, "imagenet", 1000, 224 if cfg.DISTILLER.TYPE == "REVIEWKD" else 64)


@pytest.mark.parametrize("method", ["sld", "mlkd", "kd", "dkd"])
def test_r50_mv1_file_is_the_reference_r50_mv2_run_with_mobilenet_v1(method):
    """``imagenet/r50_mv1/<method>.yaml``: the reference's ``r50_mv2`` run, whose student had
    MobileNetV1's architecture, with that architecture's name (configs/README.md)."""
    rel = f"configs/imagenet/r50_mv2/{method}.yaml"
    want = {**expected_values(rel), "DISTILLER.STUDENT": "MobileNetV1"}
    cfg = load_ours(f"configs/imagenet/r50_mv1/{method}.yaml")
    differ = {k: (get_key(cfg, k), v) for k, v in want.items() if not same(get_key(cfg, k), v)}
    assert not differ, differ
