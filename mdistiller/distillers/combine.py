"""The one builder: ``DISTILLER.TYPE`` alone, or combined with the methods of ``DISTILLER.EXTRA``.

:func:`build_distiller` builds any method through its :meth:`~Distiller.build` (which hands
it what it declares in ``needs``) and, when ``EXTRA`` is not empty, joins the methods in a
:class:`Combined` distiller; :func:`views_for_cfg` decides the run's views. Every method of a
combination shares the same student and teacher:

* **Loss terms.** The main method's terms keep their names. Each extra method's
  ``loss_ce`` is dropped (the main method already has the cross-entropy, with its own
  weight); its other terms are added under ``<name>_<term>`` in lower case (REVIEWKD's
  ``loss_kd`` becomes ``reviewkd_loss_kd``), each weighted by that method's own config.
* **Views.** The run uses the largest number of views of the methods; in a two-view run a
  one-view method gets ``image = image_weak``.
* **Forwards.** The teacher runs once per step over all views, through the combination's
  cached, BN-folded (optionally compiled) path (:meth:`Distiller._run_teacher`); the
  student runs once per distinct input tensor (methods calling it on the same view share
  the output).
* **Checkpoint layout.** ``student.*``, ``teacher.*``, the main method's own modules under
  ``main.*`` and each extra's under ``extras.<NAME>.*``.
* The teacher stays in eval mode (OFD alone trains with a train-mode teacher).
"""

import torch.nn as nn

from ..utils.errors import ConfigError
from .registry import DISTILLERS
from .base import Distiller, Need


def method_names(cfg):
    """``[DISTILLER.TYPE, *DISTILLER.EXTRA]``, checked for repeats."""
    names = [cfg.DISTILLER.TYPE, *cfg.DISTILLER.EXTRA]
    if len(set(names)) != len(names):
        raise ConfigError(f"DISTILLER.EXTRA {list(cfg.DISTILLER.EXTRA)} repeats a method of "
                          f"DISTILLER.TYPE + EXTRA ({names}); list each method once")
    return names


def method_classes(cfg):
    """The classes of the run's methods (UnknownNameError for a name not registered)."""
    return [DISTILLERS[name] for name in method_names(cfg)]


def views_for_cfg(cfg):
    """Number of augmented views the run needs (the most of any of its methods)."""
    return max(cls.views_for(cfg) for cls in method_classes(cfg))


def uses_teacher(cfg):
    """Whether any of the run's methods uses a teacher (else none is loaded)."""
    return any(cls.uses_teacher for cls in method_classes(cfg))


def build_distiller(cfg, student, teacher, train_set=None):
    """Build ``DISTILLER.TYPE`` (and the ``DISTILLER.EXTRA`` methods) on student and teacher.

    ``train_set`` (a :class:`~mdistiller.distillers.TrainingSet` or a dataset spec) goes to
    the methods that declare ``Need.TRAIN_SET`` (CRD). Returns the method itself when
    ``EXTRA`` is empty, else a :class:`Combined` distiller.
    """
    names = method_names(cfg)
    classes = method_classes(cfg)
    if len(names) > 1 and teacher is None:
        raise ConfigError(f"DISTILLER.EXTRA {names[1:]} needs a teacher; set DISTILLER.TEACHER")
    parts = [cls.build(student, teacher, cfg, train_set) for cls in classes]
    if len(parts) == 1:
        return parts[0]
    return Combined(student, teacher, parts, names, [cls.views_for(cfg) for cls in classes])


class _SharedCall:
    """Calls a module, reusing its output for an input tensor already seen this step."""

    def __init__(self, module):
        self.module, self.memo = module, None

    def __call__(self, x, *args, **kwargs):
        if self.memo is None or args or kwargs:
            return self.module(x, *args, **kwargs)
        for seen, out in self.memo:
            if seen is x:
                return out
        out = self.module(x)
        self.memo.append((x, out))
        return out

    def __getattr__(self, name):
        if "module" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["module"], name)


class _Shared:
    """What the parts of a combination share (see :meth:`Distiller.join`): the host's
    student (one forward per distinct input per step) and its teacher path (one forward
    over all of the step's views, memoised by view)."""

    def __init__(self, host):
        self.host, self.student, self.teacher_memo = host, _SharedCall(host.student), []

    def model(self, name):
        if name == "teacher":
            return self.host.teacher
        if self.student.module is not self.host.student:  # the host's student was replaced
            self.student = _SharedCall(self.host.student)
        return self.student

    def teacher_forward(self, *images, features=True):
        """The step's memoised outputs for views seen by identity, else a fresh forward
        through the host's teacher path."""
        found = [next((out for seen, out in self.teacher_memo if seen is im), None) for im in images]
        if all(f is not None for f in found):
            return found
        return Distiller.teacher_forward(self.host, *images, features=features)

    def begin_step(self, views):
        self.teacher_memo = list(zip(views, Distiller.teacher_forward(self.host, *views)))
        self.student.memo = []

    def end_step(self):
        self.teacher_memo, self.student.memo = [], None


class Combined(Distiller):
    """The main distiller plus extra ones, summing their loss terms (see the module doc)."""

    def __init__(self, student, teacher, parts, names, views):
        super().__init__(student, teacher)
        self.names, self.views = list(names), list(views)
        self.num_views = max(views)
        self.needs = frozenset().union(*(p.needs for p in parts))
        self.shared = _Shared(self)  # a plain object (not a module): the parts reach the models through it
        for p in parts:
            p.join(self.shared)
        self.main = parts[0]
        self.extras = nn.ModuleDict(zip(names[1:], parts[1:]))

    @classmethod
    def views_for(cls, cfg):
        return views_for_cfg(cfg)

    def parts(self):
        """``(name, distiller, views)`` of the main and the extra methods."""
        return zip(self.names, [self.main, *self.extras.values()], self.views)

    def train(self, mode=True):
        super().train(mode)
        self.teacher.eval()  # after the parts: OFD's train() would switch it to train mode
        return self

    def set_train_targets(self, targets):
        """Hand the training targets to the parts that need the training set (CRD)."""
        for _, part, _ in self.parts():
            if Need.TRAIN_SET in part.needs:
                part.set_train_targets(targets)

    def prepare_batch(self, batch):
        for _, part, _ in self.parts():
            batch = part.prepare_batch(batch)
        return batch

    def forward_train(self, **batch):
        views = [batch[k] for k in ("image", "image_weak", "image_strong") if batch.get(k) is not None]
        one_view = batch if "image" in batch else {**batch, "image": batch.get("image_weak")}
        self.shared.begin_step(views)
        try:
            losses = {}
            for i, (name, part, n_views) in enumerate(self.parts()):
                out, terms = part.forward_train(**(batch if n_views > 1 else one_view))
                if i == 0:
                    logits = out
                    losses.update(terms)
                else:
                    losses.update({f"{name.lower()}_{k}": v for k, v in terms.items() if k != "loss_ce"})
        finally:
            self.shared.end_step()
        return logits, losses
