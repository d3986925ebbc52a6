"""NONE: the student alone, trained with cross-entropy (the baseline every method is compared with)."""


from .logit import LogitDistiller
from .registry import register_distiller


@register_distiller("NONE")
class Vanilla(LogitDistiller):
    """The student alone, trained with cross-entropy (``loss_ce``); the teacher is ignored."""

    uses_teacher = False

    def __init__(self, student, teacher=None, cfg=None):
        super().__init__(student, None, cfg)

    def losses(self, student, teacher, target, epoch):
        return {"loss_ce": self.ce(student[0], target)}
