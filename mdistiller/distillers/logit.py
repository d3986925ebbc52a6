"""The logit distillers' base class, :class:`LogitDistiller`: the student runs once per view
(train-mode BN normalises each view separately); the teacher runs once over all views
(:meth:`Distiller.teacher_logits`). Losses are computed with autocast off, on float32 (or
float64) copies of the logits, so they stay in full precision under AMP.

The methods are one file each: NONE (:mod:`.vanilla`), KD (:mod:`.kd`), DKD and DKD_aug
(:mod:`.dkd`), MLKD (:mod:`.mlkd`), SLD (:mod:`.sld`) and SWAPKD (:mod:`.swapkd`). Each
declares and reads only its own config node and returns the student's weak-view logits and
its weighted loss terms.
"""

import torch

from ..utils.errors import DataError
from .base import Distiller, as_float
from .losses import standardize


class LogitDistiller(Distiller):
    """Runs student and teacher on the batch's views and hands the logits to :meth:`losses`.

    A method listing ``Need.EPOCH`` in ``needs`` gets the epoch (``forward_train`` then
    requires ``epoch``). Built with ``cfg``, it follows the recipe keys of the ``DISTILLER``
    node:

    * ``DISTILLER.VIEWS`` (:meth:`views_for`): 0 = the method's :attr:`num_views`, 1 or 2
      overrides it. A method whose :meth:`losses` takes one view (``views_in_loss`` False)
      has it applied to each view and the terms summed (so the cross-entropy covers both
      views, as in MLKD and SLD); a method whose loss combines the views itself sets
      ``views_in_loss`` and gets them all; one that needs two views (``min_views = 2``)
      refuses ``DISTILLER.VIEWS 1``.
    * ``DISTILLER.LOGIT_STAND`` (:attr:`logit_stand`): methods with ``supports_logit_stand``
      standardize (:func:`~mdistiller.distillers.losses.standardize`) the logits of their
      distillation terms; the config check refuses it for the others.
    """

    #: the loss takes all views at once (else it is applied to each view and summed)
    views_in_loss = False
    #: fewest views the loss needs
    min_views = 1
    #: the method honours DISTILLER.LOGIT_STAND
    supports_logit_stand = False

    def __init__(self, student, teacher=None, cfg=None):
        super().__init__(student, teacher)
        self.logit_stand = bool(cfg is not None and cfg.DISTILLER.LOGIT_STAND)
        if cfg is not None:
            self.num_views = self.views_for(cfg)

    @classmethod
    def views_for(cls, cfg):
        return max(cfg.DISTILLER.VIEWS or cls.num_views, cls.min_views)

    @classmethod
    def build(cls, student, teacher, cfg, train_set=None):
        distiller = super().build(student, teacher, cfg, train_set)
        distiller.num_views = cls.views_for(cfg)  # also for plugins whose __init__ does not pass cfg
        return distiller

    def stand(self, z):
        """``z`` standardized when DISTILLER.LOGIT_STAND is on, else ``z``."""
        return standardize(z) if self.logit_stand else z

    def _views(self, image, image_weak, image_strong):
        """The batch's views, weak first: ``[image]`` or ``[image_weak, image_strong]``."""
        if self.num_views == 1:
            views = [image if image is not None else image_weak]
        else:
            views = [image_weak, image_strong]
        if any(v is None for v in views):
            given = [k for k, v in (("image", image), ("image_weak", image_weak),
                                    ("image_strong", image_strong)) if v is not None]
            need = "image" if self.num_views == 1 else "image_weak and image_strong"
            raise DataError(f"{type(self).__name__} trains on {need} but the batch has {given or 'no image'}; "
                            f"build the data pipeline with views_for(cfg) = {self.num_views}")
        return views

    def forward_train(self, target, epoch=None, image=None, image_weak=None, image_strong=None, **kwargs):
        self.check_epoch(epoch)
        views = self._views(image, image_weak, image_strong)
        student = [self.student(v)[0] for v in views]
        teacher = self.teacher_logits(*views) if self.teacher is not None else [None] * len(views)
        with torch.autocast(student[0].device.type, enabled=False):
            student = [as_float(z) for z in student]
            if self.views_in_loss or len(views) == 1:
                losses = self.losses(student, teacher, target, epoch)
            else:  # a one-view loss on each view, summed term by term
                parts = [self.losses([s], [t], target, epoch) for s, t in zip(student, teacher)]
                losses = {k: sum((p[k] for p in parts[1:]), parts[0][k]) for k in parts[0]}
        return student[0], losses

    def losses(self, student, teacher, target, epoch):
        """Weighted loss terms from per-view student and teacher logits (lists, weak first)."""
        raise NotImplementedError


def _temperatures(values):
    """Configured temperatures as a tensor, registered as a non-persistent buffer: it follows
    ``.to(device)`` (no host-to-device copy per step) and stays out of checkpoints
    (mdistiller's state-dict layout). The losses cast it to the logits' dtype."""
    return torch.tensor(list(values), dtype=torch.get_default_dtype())
