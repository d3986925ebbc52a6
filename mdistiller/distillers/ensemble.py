"""Several teachers (``DISTILLER.TEACHER`` and ``DISTILLER.TEACHER_CKPT`` as lists of equal
length): a :class:`TeacherEnsemble` is the run's teacher. Its logits are the weighted mean
of its members' (``DISTILLER.TEACHER_WEIGHTS``, normalised to sum 1; equal weights by
default), so every logit method distils from the ensemble unchanged. It runs once per step
over all views through the distiller's cached teacher path, each member BN-folded as a
single teacher is (:meth:`TeacherEnsemble.folded`). Feature methods read one teacher's
features and refuse more than one teacher.
"""

import torch.nn as nn

from ..utils.errors import ConfigError
from .base import fold_teacher
from .combine import method_classes
from .logit import LogitDistiller
from .registry import method_names


def as_list(value):
    """A str-or-list key as a list (``"resnet8"`` -> ``["resnet8"]``)."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def teacher_names(cfg):
    """The run's teacher names (one for a single teacher)."""
    return as_list(cfg.DISTILLER.TEACHER)


def teacher_ckpts(cfg):
    """One DISTILLER.TEACHER_CKPT per teacher (a single empty or str value serves every one
    only when there is one teacher)."""
    ckpts = as_list(cfg.DISTILLER.TEACHER_CKPT)
    n = len(teacher_names(cfg))
    return ckpts * n if len(ckpts) == 1 and ckpts[0] == "" else ckpts


def teacher_label(cfg):
    """The teachers' names for messages: ``resnet8`` or ``resnet8+resnet14``."""
    return "+".join(teacher_names(cfg))


def ensemble_weights(cfg):
    """The normalised weights of the teachers' logits (equal when TEACHER_WEIGHTS is [])."""
    n = len(teacher_names(cfg))
    w = [float(x) for x in cfg.DISTILLER.TEACHER_WEIGHTS] or [1.0] * n
    return [x / sum(w) for x in w]


def check_teachers(cfg):
    """One-line ConfigErrors for the teacher lists and weights."""
    d = cfg.DISTILLER
    names = teacher_names(cfg)
    if not names or not all(names):
        raise ConfigError(f"DISTILLER.TEACHER must name a teacher or a list of teachers, got {d.TEACHER!r}")
    ckpts = as_list(d.TEACHER_CKPT)
    if len(names) > 1 and ckpts != [""] and len(ckpts) != len(names):
        raise ConfigError(f"DISTILLER.TEACHER_CKPT has {len(ckpts)} entries for {len(names)} teachers; give one "
                          f"checkpoint per teacher, in the order of DISTILLER.TEACHER")
    if len(names) == 1 and len(ckpts) != 1:
        raise ConfigError(f"DISTILLER.TEACHER_CKPT lists {len(ckpts)} checkpoints for one teacher ({names[0]}); "
                          f"give one, or list the teachers in DISTILLER.TEACHER")
    w = list(d.TEACHER_WEIGHTS)
    if w and (len(w) != len(names) or any(x < 0 for x in w) or not sum(w) > 0):
        raise ConfigError(f"DISTILLER.TEACHER_WEIGHTS must be {len(names)} numbers >= 0 with a positive sum (one "
                          f"per teacher, normalised to sum 1) or [] for equal weights, got {w}")
    if len(names) > 1:
        feature = [c.__name__ for c in method_classes(cfg) if c.uses_teacher and not issubclass(c, LogitDistiller)]
        if feature:
            raise ConfigError(f"{', '.join(feature)} reads one teacher's features and cannot distil from "
                              f"{len(names)} teachers; give DISTILLER.TEACHER one teacher, or use a logit method "
                              f"({', '.join(teacher_logit_methods())})")


def teacher_logit_methods():
    """The logit methods that distil from a teacher (any number of them)."""
    return method_names(lambda c: issubclass(c, LogitDistiller) and c.uses_teacher)


class TeacherEnsemble(nn.Module):
    """Teachers whose logits are averaged with ``weights`` (summing to 1); ``forward``
    returns ``(mean logits, {"logits": [each teacher's]})``."""

    def __init__(self, teachers, weights):
        super().__init__()
        self.teachers = nn.ModuleList(teachers)
        self.weights = [float(w) for w in weights]

    def forward(self, x):
        outs = [t(x)[0] for t in self.teachers]
        mean = sum(w * z for w, z in zip(self.weights, outs))
        return mean, {"logits": outs}

    def folded(self):
        """A copy with each teacher BN-folded (:func:`~mdistiller.distillers.base.fold_teacher`)."""
        copy = TeacherEnsemble([fold_teacher(t) for t in self.teachers], self.weights)
        return copy.train(self.training)


def build_ensemble(teachers, cfg):
    """The run's teacher: the one teacher, or a :class:`TeacherEnsemble` of several."""
    return teachers[0] if len(teachers) == 1 else TeacherEnsemble(teachers, ensemble_weights(cfg))


__all__ = ["TeacherEnsemble", "build_ensemble", "check_teachers", "ensemble_weights", "teacher_ckpts",
           "teacher_label", "teacher_names"]
