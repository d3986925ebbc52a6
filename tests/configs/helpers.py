"""For the config tests: a training step of a config's distiller on its pair, and the
translation of a reference repository's effective values into this project's keys."""

import torch

from mdistiller.distillers import DISTILLERS
from mdistiller.models import build_model


def assert_trains_a_step(cfg, family, num_classes, image_size):
    """Build ``cfg``'s distiller on the zoo's real models of ``family``, run one step on a batch
    of 2 images of ``image_size``, and check finite ``loss_ce``/``loss_kd`` and student grads."""
    torch.manual_seed(0)
    student, teacher = (build_model(n, family, num_classes) for n in (cfg.DISTILLER.STUDENT, cfg.DISTILLER.TEACHER))
    targets = torch.arange(40) * num_classes // 40
    kwargs = {"num_data": len(targets), "train_targets": targets} if cfg.DISTILLER.TYPE == "CRD" else {}
    distiller = DISTILLERS[cfg.DISTILLER.TYPE](student, teacher, cfg, **kwargs).train()
    index = torch.tensor([3, 17])
    image = torch.randn(2, 3, image_size, image_size)
    batch = distiller.prepare_batch({"image": image, "target": targets[index], "index": index})
    _, terms = distiller(**batch, epoch=cfg.SOLVER.EPOCHS)
    assert sorted(terms) == ["loss_ce", "loss_kd"]
    sum(terms.values()).backward()
    assert all(torch.isfinite(t) for t in terms.values())
    assert all(p.grad is not None for p in distiller.student.parameters() if p.requires_grad)


#: MLKD's temperatures after the first, hard-coded in the reference repositories
MLKD_FIXED_TAIL = [3.0, 5.0, 2.0, 6.0]
#: SLD's temperatures and gate, hard-coded in the SLD repository
SLD_FIXED = {"SLD.TEMPERATURES": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "SLD.GAMMA": 150}


def translate_reference(ref, not_read=("EXPERIMENT.", "SOLVER.TRAINER")):
    """``{our key: value}`` a shipped file must have for a reference run's effective values
    ``ref`` (flattened): keys the framework does not read dropped, the method's reference keys
    (its ``legacy_keys``) moved into its node, the hard-coded SLD/MLKD values added."""
    method = ref["DISTILLER.TYPE"]
    moved = DISTILLERS[method].legacy_keys
    out = {}
    for key, value in ref.items():
        if key.startswith(not_read):
            continue
        if key in moved:
            if moved[key] is None:  # the reference method ignores it
                continue
            if moved[key].endswith("[0]"):  # MLKD's first temperature
                out[moved[key][:-3]] = [float(value)] + MLKD_FIXED_TAIL
                continue
            key = moved[key]
        out[key] = value
    if method == "SLD":
        out.update(SLD_FIXED)
    if method == "NONE":
        del out["DISTILLER.TEACHER"]
    return out


def same(a, b):
    """Equal values, lists element-wise, a bool never equal to a number."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b
