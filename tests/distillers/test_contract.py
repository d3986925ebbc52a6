"""The distiller contract: each method declares its config node (with comments), checks,
legacy keys, views and needs; registration merges the node into CFG; a file dropped into
the package is found without an import list; engine/ names no method."""

import inspect
import os
import re
import textwrap

import pytest
import torch

from mdistiller import distillers
from mdistiller.distillers import DISTILLERS, Distiller, Need, register_distiller, registered_methods
from mdistiller.config.load import CFG, load_cfg
from mdistiller.utils.errors import ConfigError, DuplicateNameError
from tests.conftest import REPO_ROOT


def test_each_method_node_is_in_cfg_with_a_comment_per_default():
    owners = {cls.cfg_node for cls in registered_methods() if cls.cfg_node}
    assert owners >= {"KD", "DKD", "MLKD", "SLD", "CRD", "REVIEWKD"} and owners <= set(CFG)
    for cls in registered_methods():
        if cls.cfg_node is None or cls.defaults is Distiller.defaults:
            continue
        for line in inspect.getsource(cls.defaults).splitlines():
            if re.match(r"\s*c\.[A-Z_.]+ = ", line) and "= CN()" not in line:
                assert "#" in line, f"{cls.__name__}: default without a comment: {line.strip()}"


def test_engine_names_no_method():
    names = {n for n in DISTILLERS if n != "NONE"} | {cls.cfg_node for cls in registered_methods() if cls.cfg_node}
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, names))) + r")\b")
    engine = os.path.join(REPO_ROOT, "mdistiller", "engine")
    for name in sorted(os.listdir(engine)):
        if name.endswith(".py"):
            with open(os.path.join(engine, name), encoding="utf-8") as f:
                found = pattern.findall(f.read())
            assert not found, f"engine/{name} names {sorted(set(found))}"


def test_declarations_of_the_shipped_methods():
    assert DISTILLERS["CRD"].needs == {Need.TRAIN_SET}
    assert all(Need.EPOCH in DISTILLERS[n].needs for n in ("SLD", "DKD", "REVIEWKD"))
    assert not DISTILLERS["NONE"].uses_teacher and DISTILLERS["KD"].uses_teacher
    assert DISTILLERS["KD_ours"] is DISTILLERS["MLKD"]
    assert DISTILLERS["SLD"].legacy_keys["KD.TEMPERATURE"] is None
    assert DISTILLERS["MLKD"].legacy_keys["KD.TEMPERATURE"] == "MLKD.TEMPERATURES[0]"


@pytest.mark.parametrize("opts, message", [
    (["DKD.WARMUP", "-1"], "DKD.WARMUP must be an integer >= 0, got -1"),
    (["AT.P", "0"], "AT.P must be positive, got 0"),
    (["CRD.NCE.K", "0"], "CRD.NCE.K must be an integer >= 1, got 0"),
    (["CRD.MODE", "fuzzy"], "CRD.MODE must be one of exact, relax; got 'fuzzy'"),
    (["CRD.NCE.MOMENTUM", "1.5"], r"CRD.NCE.MOMENTUM must be in \[0, 1\], got 1.5"),
    (["KDSVD.K", "0"], "KDSVD.K must be an integer >= 1, got 0"),
    (["REVIEWKD.WARMUP_EPOCHS", "0"], "REVIEWKD.WARMUP_EPOCHS must be an integer >= 1, got 0"),
    (["REVIEWKD.SHAPES", "[1, 8]"], "REVIEWKD.SHAPES, OUT_SHAPES, IN_CHANNELS and OUT_CHANNELS must be"),
    (["OFD.CONNECTOR.KERNEL_SIZE", "2"], "OFD.CONNECTOR.KERNEL_SIZE must be odd"),
    (["VID.INIT_PRED_VAR", "0.0"], "VID.INIT_PRED_VAR must be a number above VID.EPS"),
    (["FITNET.INPUT_SIZE", "(0, 32)"], "FITNET.INPUT_SIZE must be two positive integers"),
    (["PKT.LOSS.FEAT_WEIGHT", "-1.0"], "PKT.LOSS.FEAT_WEIGHT must be a non-negative number, got -1.0"),
    (["RKD.ANGLE_WEIGHT", "-1"], "RKD.ANGLE_WEIGHT must be a non-negative number, got -1"),
    (["KD.TEMPERATURE", "0.0"], "KD.TEMPERATURE must be positive, got 0.0"),
    (["SLD.VIEWS", "3"], r"SLD.VIEWS must be 0 \(= DISTILLER.VIEWS\), 1 or 2, got 3"),
])
def test_each_method_checks_its_own_node(opts, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_cfg(None, opts)
    assert "\n" not in str(e.value)


METHOD_FILE = '''
import torch.nn.functional as F
from mdistiller.distillers import register_distiller
from mdistiller.distillers.logit import LogitDistiller


@register_distiller("{name}")
class Dropped(LogitDistiller):
    cfg_node = "{name}"

    @staticmethod
    def defaults(c):
        c.WEIGHT = 1.0  # weight of the cross-entropy term

    def __init__(self, student, teacher, cfg):
        super().__init__(student, teacher)
        self.weight = cfg.{name}.WEIGHT

    def losses(self, student, teacher, target, epoch):
        return {{"loss_ce": self.weight * F.cross_entropy(student[0], target)}}
'''


def test_a_file_dropped_into_the_package_is_a_method(tmp_path, monkeypatch, restore_methods):
    (tmp_path / "dropped.py").write_text(METHOD_FILE.format(name="DROPPED"))
    (tmp_path / "_private.py").write_text("raise RuntimeError('not a method module')\n")
    monkeypatch.setattr(distillers, "__path__", [*distillers.__path__, str(tmp_path)])
    distillers.discover()  # what importing the package does
    assert "DROPPED" in DISTILLERS and CFG.DROPPED.WEIGHT == 1.0
    cfg = load_cfg(None, ["DISTILLER.TYPE", "DROPPED", "DROPPED.WEIGHT", "0.5"])
    from mdistiller.models import build_model

    d = DISTILLERS["DROPPED"](build_model("resnet8", "cifar", 10), None, cfg).train()
    _, losses = d(image=torch.zeros(2, 3, 32, 32), target=torch.tensor([0, 1]), epoch=1)
    assert sorted(losses) == ["loss_ce"]


def test_importing_a_method_twice_is_harmless_and_clashes_are_errors(tmp_path, restore_methods):
    import importlib.util

    path = tmp_path / "twice.py"
    path.write_text(METHOD_FILE.format(name="TWICE"))
    for _ in range(2):  # the same module executed again (a re-import) replaces its entry
        spec = importlib.util.spec_from_file_location("plugin_test_twice", path)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    assert DISTILLERS["TWICE"].__module__ == "plugin_test_twice"
    other = tmp_path / "other.py"
    other.write_text(METHOD_FILE.format(name="TWICE"))
    spec = importlib.util.spec_from_file_location("plugin_test_other", other)
    with pytest.raises(DuplicateNameError, match="TWICE"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    assert DISTILLERS["TWICE"].__module__ == "plugin_test_twice"


def test_config_node_clashes_fail_before_registering(restore_methods):
    class Clash(Distiller):
        cfg_node = "SOLVER"

        @staticmethod
        def defaults(c):
            c.X = 1  # a key

    with pytest.raises(DuplicateNameError, match="'SOLVER' of distiller .*framework"):
        register_distiller("CLASH", Clash)
    Clash.cfg_node = "KD"
    with pytest.raises(DuplicateNameError, match="config node 'KD' is declared by both"):
        register_distiller("CLASH", Clash)
    assert "CLASH" not in DISTILLERS and "X" not in CFG.KD

    class Reader(Distiller):  # declares nothing: reads another method's node
        cfg_node = "KD"

    class Sub(DISTILLERS["DKD"]):  # a subclass shares its parent's node
        num_views = 2

    register_distiller("READER", Reader)
    register_distiller("SUB", Sub)
    assert CFG.KD.TEMPERATURE == 4.0 and CFG.DKD.BETA == 8.0
