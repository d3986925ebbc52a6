"""Every config file of upstream mdistiller (tests/data/mdistiller_repo_configs.json.gz) is
shipped here and trains the same run: the same effective solver, dataset, pair, method and
method settings (the file's value, else upstream's default), as
tests/configs/test_sld_repo_configs.py checks for the SLD repository.

What differs by design (configs/README.md):
- run names (``EXPERIMENT.*``); ``SOLVER.TRAINER`` is compared where it selects DOT
  (``dot``, ``crd_dot``) and otherwise accepted and not read (the views follow the distiller);
- ``LOG.WANDB``: upstream's default is True (it falls back when wandb fails); here wandb is
  opt-in (``LOG.WANDB True``), since it needs an account;
- upstream's ``imagenet/r50_mv1/{at,crd,ofd,reviewkd}.yaml`` are shipped at the SLD
  repository's paths ``imagenet/r50_mv2/`` with the same values (student ``MobileNetV1``);
- a vanilla run (``NONE``) builds no teacher, so its ``DISTILLER.TEACHER`` is not read.
"""

import os

import pytest

from mdistiller.engine.cfg import get_key, load_cfg
from mdistiller.engine.dot import DOT_TRAINERS
from tests.configs.helpers import same
from tests.conftest import REPO_ROOT, load_reference

REF = load_reference("mdistiller_repo_configs")
SHIPPED_AT = {f"configs/imagenet/r50_mv1/{m}.yaml": f"configs/imagenet/r50_mv2/{m}.yaml"
              for m in ("at", "crd", "ofd", "reviewkd")}


def expected_values(rel):
    ref = {**REF["defaults"], **REF["files"][rel]}
    out = {k: v for k, v in ref.items() if not k.startswith("EXPERIMENT.") and k != "LOG.WANDB"}
    if out["SOLVER.TRAINER"] not in DOT_TRAINERS:
        del out["SOLVER.TRAINER"]
    if out["DISTILLER.TYPE"] == "NONE":
        del out["DISTILLER.TEACHER"]
    return out


def test_record_is_complete():
    assert REF["commit"].startswith("a08d46f") and len(REF["files"]) == 42


@pytest.mark.parametrize("rel", sorted(REF["files"]))
def test_upstream_file_is_shipped_with_its_values(rel):
    ours = SHIPPED_AT.get(rel, rel)
    assert os.path.isfile(os.path.join(REPO_ROOT, ours)), f"{ours} is not shipped"
    cfg = load_cfg(os.path.join(REPO_ROOT, ours))
    differ = {key: (get_key(cfg, key), value) for key, value in expected_values(rel).items()
              if not same(get_key(cfg, key), value)}
    assert not differ, f"{ours}: ours vs upstream {differ}"


@pytest.mark.parametrize("method", ["kd", "dkd", "mlkd", "sld"])
@pytest.mark.parametrize("pair", ["r18_mv2", "r18_shuv2"])
def test_tiny_imagenet_files_use_upstreams_recipe(method, pair):
    """configs/tiny_imagenet/<method>/<pair>.yaml: the pair, solver and dataset of upstream's
    Tiny-ImageNet DOT file for the pair (its only Tiny-ImageNet recipe), with the plain trainer
    (and the default DATASET.NUM_WORKERS: a machine setting, not the recipe)."""
    cfg = load_cfg(os.path.join(REPO_ROOT, "configs", "tiny_imagenet", method, f"{pair}.yaml"))
    ref = expected_values(f"configs/tiny_imagenet/dot/{pair}.yaml")
    keys = [k for k in ref if k.startswith(("SOLVER.", "DATASET.", "DISTILLER.TEACHER", "DISTILLER.STUDENT"))
            and not k.startswith(("SOLVER.TRAINER", "SOLVER.DOT.", "DATASET.NUM_WORKERS"))]
    differ = {k: (get_key(cfg, k), ref[k]) for k in keys if not same(get_key(cfg, k), ref[k])}
    assert not differ and cfg.SOLVER.TRAINER not in DOT_TRAINERS
