"""The shipped YAML configs: they load, name real models and methods, carry the published
top-1 of tests/data/published.md, hold only what differs from their bases, match the table
in configs/README.md, and agree with the reference repositories' own files."""

import glob
import os
import re
import warnings

import pytest
import yaml

from mdistiller.config.load import ConfigWarning, diff_cfg, load_cfg, read_yaml_with_bases
from mdistiller.distillers.ensemble import teacher_names
from mdistiller.utils.errors import ConfigError
from tests.conftest import DATA_DIR, REPO_ROOT
from tests.configs.helpers import assert_trains_a_step

CONFIG_DIR = os.path.join(REPO_ROOT, "configs")
CONFIG_FILES = sorted(os.path.relpath(p, CONFIG_DIR)
                      for p in glob.glob(os.path.join(CONFIG_DIR, "**", "*.yaml"), recursive=True))
LOGIT_METHODS = ("NONE", "KD", "DKD", "MLKD", "SLD")
FEATURE_METHODS = ("fitnet", "at", "ofd", "rkd", "kdsvd", "crd", "nst", "pkt", "sp", "vid", "reviewkd")
FEATURE_PAIRS = ("res32x4_res8x4.yaml", "res56_res20.yaml", "wrn40_2_wrn_16_2.yaml", "vgg13_vgg8.yaml")
FEATURE_FILES = [os.path.join("cifar100", m, p) for m in FEATURE_METHODS for p in FEATURE_PAIRS]
MODEL_FAMILY = {"cifar100": "cifar", "imagenet": "imagenet", "tiny_imagenet": "tiny_imagenet"}


def load(rel, opts=None):
    """Load a config, failing on any warning except the intended one of the ImageNet SLD
    files (the reference's student swap loss never starts in a 100-epoch run)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = load_cfg(os.path.join(CONFIG_DIR, rel), opts)
    for w in caught:
        intended = (issubclass(w.category, ConfigWarning) and "SLD.GAMMA" in str(w.message)
                    and cfg.DISTILLER.TYPE == "SLD" and cfg.SLD.GAMMA >= cfg.SOLVER.EPOCHS)
        assert intended, f"{rel}: unexpected warning: {w.message}"
    return cfg


def raw(rel):
    with open(os.path.join(CONFIG_DIR, rel), encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def is_base(rel):
    return rel.startswith("base" + os.sep)


def is_alias(rel):
    """A file that only points to another one (mdistiller's kd.yaml, vanilla.yaml)."""
    return set(raw(rel)) == {"_BASE_"}


def flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# ---------------------------------------------------------------------------------------
# published.md (a copy of the shared reference file)
# ---------------------------------------------------------------------------------------
def table_rows(lines):
    """Rows (lists of stripped cells) of the markdown table starting at ``lines[0]``."""
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not all(set(c) <= set("-: ") for c in cells):
            rows.append(cells)
    return rows


def tables(text):
    """Every markdown table of ``text`` as a list of row lists (header first)."""
    lines = text.splitlines()
    return [table_rows(lines[i:]) for i, line in enumerate(lines)
            if line.startswith("|") and (i == 0 or not lines[i - 1].startswith("|"))]


def parse_published(text):
    """``{(dataset, method, teacher, student): top1}``; vanilla models use method NONE and
    teacher None. In the ImageNet sentence the first figure of a method for a pair is the
    one of the reference config (a later one, e.g. the SLD paper's own KD run, is not)."""
    out = {}
    for rows in tables(text):
        header = rows[0]
        if header[:2] == ["model", "top-1"]:
            out.update({("cifar100", "NONE", None, m): float(v) for m, v in rows[1:]})
        elif header[0] == "teacher → student":
            for row in rows[1:]:
                teacher, student = (s.strip() for s in row[0].split("→"))
                for method, cell in zip(header[1:], row[1:]):
                    if cell:
                        out[("cifar100", method, teacher, student)] = float(cell)
    paragraph = text[text.index("ImageNet:"):].split("\n\n")[0].replace("\n", " ")
    for teacher, student, figures in re.findall(r"(\w+) → (\w+): (.*?)(?=\w+ → \w+:|$)", paragraph):
        for method, value in re.findall(r"\b(KD|DKD|MLKD|SLD) (\d+\.\d+)", figures):
            out.setdefault(("imagenet", method, teacher, student), float(value))
    return out


@pytest.fixture(scope="module")
def published():
    with open(os.path.join(DATA_DIR, "published.md"), encoding="utf-8") as f:
        return parse_published(f.read())


def test_published_parser_reads_every_section(published):
    assert published[("cifar100", "NONE", None, "resnet32x4")] > 0
    assert published[("cifar100", "SLD", "resnet32x4", "resnet8x4")] > 0
    assert ("cifar100", "SLD", "resnet56", "resnet20") not in published  # empty cell
    sld, kd = (published[("imagenet", m, "ResNet34", "ResNet18")] for m in ("SLD", "KD"))
    assert sld > kd > 0
    assert ("imagenet", "DKD", "ResNet50", "MobileNetV1") in published


# ---------------------------------------------------------------------------------------
# Every file
# ---------------------------------------------------------------------------------------
def test_config_tree_is_complete():
    """The twelve CIFAR-100 pairs of SLD, the four reference pairs of every feature method,
    two ImageNet pairs, bases and vanilla models."""
    assert len([f for f in CONFIG_FILES if f.startswith(os.path.join("cifar100", "sld") + os.sep)]) == 12
    assert set(FEATURE_FILES) <= set(CONFIG_FILES)
    for rel in ("cifar100/kd.yaml", "cifar100/vanilla.yaml", "cifar100/dkd/res32x4_res8x4.yaml",
                "imagenet/r34_r18/sld.yaml", "imagenet/r50_mv1/dkd.yaml", "base/cifar100.yaml"):
        assert rel.replace("/", os.sep) in CONFIG_FILES


@pytest.mark.parametrize("rel", CONFIG_FILES)
def test_config_loads(rel):
    cfg = load(rel)
    assert cfg.is_frozen()
    # the same file with a command-line override still loads
    assert load(rel, ["SOLVER.EPOCHS", "300"]).SOLVER.EPOCHS == 300


@pytest.mark.parametrize("rel", [f for f in CONFIG_FILES if not is_base(f)])
def test_model_names_exist(rel):
    try:
        from mdistiller import models
    except ImportError as e:  # the model zoo is not there yet
        pytest.skip(f"mdistiller.models does not import: {e}")
    cfg = load(rel)
    family = MODEL_FAMILY.get(cfg.DATASET.TYPE)
    if family is None:
        pytest.skip(f"no model-name check for dataset {cfg.DATASET.TYPE}")
    registry = models.MODEL_FAMILIES[family]
    names = [cfg.DISTILLER.STUDENT] + ([] if cfg.DISTILLER.TYPE == "NONE" else teacher_names(cfg))
    for name in names:
        assert name in registry, f"{rel}: model '{name}' is not a {family} model"


@pytest.mark.parametrize("rel", CONFIG_FILES)
def test_distiller_type_exists(rel):
    try:
        from mdistiller.distillers import DISTILLERS
    except ImportError as e:  # the distillers are not there yet
        pytest.skip(f"mdistiller.distillers does not import: {e}")
    cfg = load(rel)
    for name in [cfg.DISTILLER.TYPE] + list(cfg.DISTILLER.EXTRA):
        assert name in DISTILLERS, f"{rel}: distiller '{name}' is not registered"


#: the logit-standardization-KD README's figures (resnet32x4 -> resnet8x4, CIFAR-100)
LS_PUBLISHED = {"KD": 76.62, "DKD": 77.01, "MLKD": 78.28}


@pytest.mark.parametrize("rel", [f for f in CONFIG_FILES if not is_base(f)])
def test_published_top1_matches_published_md(rel, published):
    cfg = load(rel)
    method = cfg.DISTILLER.TYPE
    if cfg.DISTILLER.VIEWS or cfg.SOLVER.TRAINER == "dot" or len(teacher_names(cfg)) > 1:
        # fair recipes; upstream's DOT files (as shipped); ensembles of teachers (nobody published them)
        assert cfg.EXPERIMENT.PUBLISHED_TOP1 == -1.0
        return
    if cfg.DISTILLER.LOGIT_STAND:
        assert (cfg.DISTILLER.TEACHER, cfg.DISTILLER.STUDENT) == ("resnet32x4", "resnet8x4")
        assert cfg.EXPERIMENT.PUBLISHED_TOP1 == LS_PUBLISHED.get(method, -1.0)
        return
    if method not in LOGIT_METHODS or cfg.DATASET.TYPE not in MODEL_FAMILY:
        pytest.skip("published.md has figures for logit methods on CIFAR-100 and ImageNet only")
    teacher = None if method == "NONE" else cfg.DISTILLER.TEACHER
    expected = published.get((cfg.DATASET.TYPE, method, teacher, cfg.DISTILLER.STUDENT), -1.0)
    assert cfg.EXPERIMENT.PUBLISHED_TOP1 == expected


@pytest.mark.parametrize("rel", [f for f in CONFIG_FILES if "_BASE_" in raw(f)])
def test_file_holds_only_what_differs_from_its_bases(rel):
    data = raw(rel)
    bases = data.pop("_BASE_")
    inherited = {}
    for base in [bases] if isinstance(bases, str) else bases:
        inherited.update(flatten(read_yaml_with_bases(os.path.join(CONFIG_DIR, os.path.dirname(rel), base))))
    repeated = sorted(k for k, v in flatten(data).items() if k in inherited and inherited[k] == v)
    assert not repeated, f"{rel} repeats inherited values: {repeated}"


def test_runs_have_distinct_folders():
    """Two experiment files with the same PROJECT/TAG would write to the same run folder."""
    seen = {}
    for rel in CONFIG_FILES:
        if is_base(rel) or is_alias(rel):
            continue
        cfg = load(rel)
        if cfg.EXPERIMENT.NAME:
            key = (cfg.EXPERIMENT.PROJECT, cfg.EXPERIMENT.NAME)
        else:
            key = (cfg.EXPERIMENT.PROJECT, cfg.EXPERIMENT.TAG)
        assert key not in seen, f"{rel} and {seen[key]} share the run folder {key}"
        seen[key] = rel


@pytest.mark.parametrize("rel", FEATURE_FILES)
def test_feature_config_builds_its_pair_and_trains_a_step(rel):
    """The file's method serves its pair as configured (channels, sizes, dims): the
    distiller builds on the real zoo models and a training step gives finite losses."""
    assert_trains_a_step(load(rel), "cifar", 100, 32)


def test_mdistiller_paths_point_to_the_same_runs():
    assert not diff_cfg(load("cifar100/kd.yaml"), load("cifar100/kd/res32x4_res8x4.yaml"))
    for m in FEATURE_METHODS:
        assert not diff_cfg(load(f"cifar100/{m}.yaml"), load(f"cifar100/{m}/res32x4_res8x4.yaml"))
    assert not diff_cfg(load("cifar100/vanilla.yaml"), load("cifar100/vanilla/resnet8x4.yaml"))


# ---------------------------------------------------------------------------------------
# configs/README.md
# ---------------------------------------------------------------------------------------
def readme_entries():
    """``(config path, cell)`` for every method cell of the README's tables."""
    with open(os.path.join(CONFIG_DIR, "README.md"), encoding="utf-8") as f:
        text = f.read()
    entries = []
    for rows in tables(text):
        header = [h.lower() for h in rows[0]]
        for row in rows[1:]:
            cells = dict(zip(header, row))
            if "file" in cells:
                entries += [(f"cifar100/{m}/{cells['file'].strip('`')}", cells[m]) for m in header[2:]]
            elif "folder" in cells:
                entries += [(f"imagenet/{cells['folder'].strip('`')}/{m}.yaml", cells[m]) for m in header[2:]]
            elif "published top-1" in cells:
                entries.append((f"cifar100/vanilla/{cells['model']}.yaml", cells["published top-1"]))
    return entries


def test_readme_tables_match_the_files():
    entries = readme_entries()
    listed = set()
    for path, cell in entries:
        rel = path.replace("/", os.sep)
        assert (rel in CONFIG_FILES) == (cell != "—"), f"README cell '{cell}' for {path}"
        if cell == "—":
            continue
        listed.add(rel)
        top1 = load(rel).EXPERIMENT.PUBLISHED_TOP1
        assert top1 == (-1.0 if cell == "✓" else float(cell)), f"README figure for {path}"
    methods = ("kd", "dkd", "mlkd", "sld", "vanilla") + FEATURE_METHODS
    ours = {f for f in CONFIG_FILES
            if f.split(os.sep)[:2] in [["cifar100", m] for m in methods]
            or (f.startswith("imagenet") and os.path.basename(f)[:-5] in methods)}
    assert ours and ours <= listed, f"files missing from configs/README.md: {sorted(ours - listed)}"


# ---------------------------------------------------------------------------------------
# Files written the reference repositories' way
# ---------------------------------------------------------------------------------------
# What the reference files say (values as in the SLD repository's configs/imagenet/r34_r18/
# sld.yaml and configs/cifar100/sld/res32x4_shuv1.yaml, and the logit-standardization
# repository's MLKD copy configs/imagenet/r34_r18/kd_ours.yaml with the method's name here).
IMAGENET_REF = """
EXPERIMENT: {{NAME: "", TAG: "{tag}", PROJECT: "imagenet_baselines"}}
DATASET: {{TYPE: "imagenet", NUM_WORKERS: 32, TEST: {{BATCH_SIZE: 128}}}}
DISTILLER: {{TYPE: "{method}", TEACHER: "ResNet34", STUDENT: "ResNet18"}}
SOLVER: {{BATCH_SIZE: 512, EPOCHS: 100, LR: {lr}, LR_DECAY_STAGES: [30, 60, 90], LR_DECAY_RATE: 0.1,
          WEIGHT_DECAY: 0.0001, MOMENTUM: 0.9, TYPE: "SGD", TRAINER: "ours"}}
KD: {{TEMPERATURE: 1, LOSS: {{CE_WEIGHT: 0.5, KD_WEIGHT: 0.5}}}}
LOG: {{TENSORBOARD_FREQ: 50, SAVE_CHECKPOINT_FREQ: 10}}
"""
CIFAR_SLD_REF = """
EXPERIMENT: {NAME: "", TAG: "sld,res32x4,shuv1", PROJECT: "cifar100_baselines_epoch960"}
DISTILLER: {TYPE: "SLD", TEACHER: "resnet32x4", STUDENT: "ShuffleV1"}
SOLVER: {BATCH_SIZE: 64, EPOCHS: 240, LR: 0.009, LR_DECAY_STAGES: [150, 180, 210], LR_DECAY_RATE: 0.1,
         WEIGHT_DECAY: 0.0005, MOMENTUM: 0.9, TYPE: "SGD", TRAINER: "ours"}
"""
REFERENCE_FILES = {
    "imagenet/r34_r18/sld.yaml": IMAGENET_REF.format(tag="sld,res34,res18", method="SLD", lr=0.2),
    "imagenet/r34_r18/mlkd.yaml": IMAGENET_REF.format(tag="kd_ours,res34,res18", method="MLKD", lr=0.1),
    "cifar100/sld/res32x4_shuv1.yaml": CIFAR_SLD_REF,
}


@pytest.mark.parametrize("ours", sorted(REFERENCE_FILES))
def test_reference_file_trains_the_same_run(ours, tmp_path):
    path = tmp_path / "reference.yaml"
    path.write_text(REFERENCE_FILES[ours])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ref = load_cfg(str(path))
    # only experiment names, KD.* (moved into the method's node) and the unused TRAINER differ
    differ = [k for k in diff_cfg(ref, load(ours)) if not k.startswith(("EXPERIMENT.", "KD."))]
    assert differ in ([], ["SOLVER.TRAINER"])
    moved = [str(w.message) for w in caught if "reference-repo key" in str(w.message)]
    assert bool(moved) == ("KD:" in REFERENCE_FILES[ours])


def test_reference_kd_weight_key_for_sld_moves_to_sld_node(tmp_path):
    path = tmp_path / "sld_reference.yaml"
    path.write_text("DISTILLER:\n  TYPE: SLD\nKD:\n  LOSS:\n    CE_WEIGHT: 0.3\n")
    with pytest.warns(ConfigWarning, match="SLD.CE_WEIGHT"):
        cfg = load_cfg(str(path))
    assert cfg.SLD.CE_WEIGHT == 0.3
    assert cfg.KD.LOSS.CE_WEIGHT == 0.3  # left in place; SLD does not read it


def test_reference_kd_weight_key_on_a_shipped_sld_file_is_refused():
    """The shipped files set SLD.CE_WEIGHT, so a KD.* override would be silently shadowed."""
    with pytest.raises(ConfigError, match="SLD.CE_WEIGHT"):
        load_cfg(os.path.join(CONFIG_DIR, "cifar100", "sld", "res32x4_res8x4.yaml"),
                 ["KD.LOSS.CE_WEIGHT", "0.3"])
