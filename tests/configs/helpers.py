"""A training step of a config's distiller on its pair, for the config tests."""

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
