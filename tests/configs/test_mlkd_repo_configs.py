"""The MLKD repository's own recipe files (tests/data/mlkd_repo_configs.json.gz, recorded
from Jin-Ying/Multi-Level-Logit-Distillation: ``configs/cifar100/ours/<pair>.yaml`` and
``configs/imagenet/<pair>/kd_ours.yaml``, its method ``KD_ours``) train the same runs as this
project's ``cifar100/mlkd_repo/<pair>.yaml`` and ``imagenet/<pair>/mlkd.yaml``: the same
effective solver, dataset, pair and MLKD settings (its ``KD.*`` keys are ``MLKD.*`` here, its
first temperature ``KD.TEMPERATURE``, then 3, 5, 2, 6 hard-coded). Run names and
``SOLVER.TRAINER`` are not read here. Its ImageNet ``MobileNetV2`` had MobileNetV1's
architecture (configs/README.md): ``r50_mv1/mlkd.yaml`` holds that run; ``r50_mv2/mlkd.yaml``
keeps the reference's name at its path."""

import os
import warnings

import pytest

from mdistiller.engine.cfg import get_key, load_cfg
from tests.configs.helpers import same, translate_reference
from tests.conftest import REPO_ROOT, load_reference

REF = load_reference("mlkd_repo_configs")
#: (reference file, this project's file)
PAIRS = [(rel, rel.replace("/ours/", "/mlkd_repo/") if "/ours/" in rel else rel.replace("kd_ours", "mlkd"))
         for rel in sorted(REF["files"])] + [("configs/imagenet/r50_mv2/kd_ours.yaml", "configs/imagenet/r50_mv1/mlkd.yaml")]


def expected_values(rel, ours):
    ref = {**REF["defaults"], **REF["files"][rel]}
    assert ref["DISTILLER.TYPE"] == "KD_ours"
    out = translate_reference({**ref, "DISTILLER.TYPE": "MLKD"})
    if "/r50_mv1/" in ours:
        out["DISTILLER.STUDENT"] = "MobileNetV1"  # the architecture the reference's MobileNetV2 had
    return out


def test_record_is_complete():
    assert REF["commit"].startswith("5ee473f") and len(REF["files"]) == 13


@pytest.mark.parametrize("rel,ours", PAIRS, ids=[o for _, o in PAIRS])
def test_mlkd_repo_file_is_shipped_with_its_values(rel, ours):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = load_cfg(os.path.join(REPO_ROOT, ours))
    differ = {k: (get_key(cfg, k), v) for k, v in expected_values(rel, ours).items() if not same(get_key(cfg, k), v)}
    assert not differ, f"{ours}: ours vs the MLKD repository's {rel}: {differ}"
