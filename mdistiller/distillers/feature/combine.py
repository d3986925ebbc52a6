"""Combining methods: ``DISTILLER.TYPE`` plus the methods listed in ``DISTILLER.EXTRA``.

:func:`build_distiller` builds the main method and, when ``EXTRA`` is not empty, wraps it
with the extra methods in a :class:`Combined` distiller. Every method shares the same
student and teacher:

* **Loss terms.** The main method's terms keep their names. Each extra method's
  ``loss_ce`` is dropped (the main method already has the cross-entropy, with its own
  weight); its other terms are added under ``<name>_<term>`` in lower case (REVIEWKD's
  ``loss_kd`` becomes ``reviewkd_loss_kd``), each weighted by that method's own config.
* **Views.** The run uses the largest number of views of the methods; in a two-view run a
  one-view method gets ``image = image_weak``.
* **Forwards.** The teacher runs once per step over all views; the student runs once per
  distinct input tensor (methods calling it on the same view share the output).
* **Checkpoint layout.** ``student.*``, ``teacher.*``, the main method's own modules under
  ``main.*`` and each extra's under ``extras.<NAME>.*``.
* The teacher stays in eval mode (OFD alone trains with a train-mode teacher).
"""

import torch
import torch.nn as nn

from ...utils.errors import ConfigError
from .. import DISTILLERS
from .._base import Distiller
from ._common import tree_map


def method_names(cfg):
    """``[DISTILLER.TYPE, *DISTILLER.EXTRA]``, checked for repeats."""
    names = [cfg.DISTILLER.TYPE, *cfg.DISTILLER.EXTRA]
    if len(set(names)) != len(names):
        raise ConfigError(f"DISTILLER.EXTRA {list(cfg.DISTILLER.EXTRA)} repeats a method of "
                          f"DISTILLER.TYPE + EXTRA ({names}); list each method once")
    return names


def views_for_cfg(cfg):
    """Number of augmented views the run needs (the most of any of its methods)."""
    return max(DISTILLERS[name].views_for(cfg) for name in method_names(cfg))


def build_distiller(cfg, student, teacher, **kwargs):
    """Build ``DISTILLER.TYPE`` (and the ``DISTILLER.EXTRA`` methods) on student and teacher.

    ``kwargs`` (e.g. ``num_data``, ``train_targets``) go to the methods that declare
    ``needs_num_data = True`` (CRD). Returns the method itself when ``EXTRA`` is empty.
    """
    names = method_names(cfg)
    if len(names) > 1 and teacher is None:
        raise ConfigError(f"DISTILLER.EXTRA {names[1:]} needs a teacher; set DISTILLER.TEACHER")
    parts = []
    for name in names:
        cls = DISTILLERS[name]
        parts.append(cls(student, teacher, cfg, **(kwargs if getattr(cls, "needs_num_data", False) else {})))
    if len(parts) == 1:
        return parts[0]
    return Combined(parts, names, [DISTILLERS[n].views_for(cfg) for n in names])


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


class _TeacherMemo:
    """The teacher's outputs for this step's views, from one forward over all of them."""

    def __init__(self, teacher):
        self.teacher, self.memo = teacher, []

    @torch.no_grad()
    def run(self, *images):
        """``[(logits, feats)]`` per image, from one inference-mode forward over all."""
        with torch.inference_mode():
            out = self.teacher(images[0] if len(images) == 1 else torch.cat(images))
        out = tree_map(torch.clone, out)  # normal tensors, usable next to autograd ones
        sizes = [im.shape[0] for im in images]
        return [tree_map(lambda t, i=i: t.split(sizes)[i], out) for i in range(len(images))]

    def forward(self, *images):
        """Drop-in ``teacher_forward``: memoised views by identity, else a fresh forward."""
        found = [next((out for seen, out in self.memo if seen is im), None) for im in images]
        return found if all(f is not None for f in found) else self.run(*images)


class Combined(Distiller):
    """The main distiller plus extra ones, summing their loss terms (see the module doc)."""

    def __init__(self, parts, names, views):
        main, extras = parts[0], parts[1:]
        super().__init__(main.student, main.teacher)
        self.names, self.views = list(names), list(views)
        self.num_views = max(views)
        self.needs_num_data = any(getattr(p, "needs_num_data", False) for p in parts)
        self._student = _SharedCall(self.student)
        self._teacher = _TeacherMemo(self.teacher)
        for p in parts:  # share the top-level student/teacher instead of owning copies
            del p._modules["student"], p._modules["teacher"]
            object.__setattr__(p, "student", self._student)
            object.__setattr__(p, "teacher", self.teacher)
            object.__setattr__(p, "teacher_forward", self._teacher.forward)
        self.main = main
        self.extras = nn.ModuleDict(zip(names[1:], extras))

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
        for _, part, _ in self.parts():
            if hasattr(part, "set_train_targets"):
                part.set_train_targets(targets)

    def prepare_batch(self, batch):
        for _, part, _ in self.parts():
            if hasattr(part, "prepare_batch"):
                batch = part.prepare_batch(batch)
        return batch

    def forward_train(self, **batch):
        views = [batch[k] for k in ("image", "image_weak", "image_strong") if batch.get(k) is not None]
        one_view = batch if "image" in batch else {**batch, "image": batch.get("image_weak")}
        self._teacher.memo = list(zip(views, self._teacher.run(*views)))
        self._student.memo = []
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
            self._teacher.memo, self._student.memo = [], None
        return logits, losses
