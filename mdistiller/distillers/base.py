"""The distiller interface shared by every method (mdistiller's calling convention) and
the contract a method declares next to its ``forward_train``.

A distiller owns a ``student`` and a frozen ``teacher``::

    distiller = distiller_dict[cfg.DISTILLER.TYPE](student, teacher, cfg)
    logits, losses = distiller(image=x, target=y, epoch=e)                      # one view
    logits, losses = distiller(image_weak=xw, image_strong=xs, target=y, epoch=e)  # two views

``losses`` maps names (``loss_ce``, ``loss_kd``, ...) to already weighted scalar tensors;
the trainer sums them. ``logits`` are the student's (weak view) logits, for accuracy.
In eval mode, ``distiller(image=x)`` returns the student's logits.

This module is the one description of the method contract; ``docs/new_method.md`` shows
it at work (a test keeps its table and this one the same), and the errors about a method's
declarations point here. The public base classes:

* :class:`Distiller` (here): every method's base; :class:`Need` and :class:`TrainingSet` (here);
* :class:`~mdistiller.distillers.logit.LogitDistiller`: methods whose loss reads logits
  (``losses(student, teacher, target, epoch)`` on per-view logits);
* :class:`~mdistiller.distillers.feature.base.FeatureDistiller`: methods whose loss reads
  features (``feature_loss``), with the shape probes their connectors are built from.

What a method declares (class attributes and class methods, all optional):

==================== =====================================================================
cfg_node             name of its config node (``"KD"``); :meth:`~Distiller.defaults` fills it
defaults             ``defaults(node)``: the node's keys with their defaults, one ``# comment`` each
check_config         ``check_config(cfg, used)``: one-line ``ConfigError`` for invalid values
legacy_keys          ``{old key: new key}`` of reference config files (``None`` = ignored key)
num_views            1 or 2 augmented views (``views_for(cfg)`` when it depends on the config)
needs                :class:`Need` members: the training set at build time, the epoch per step
uses_teacher         False for methods without a teacher (no teacher checkpoint is loaded)
views_in_loss        (logit methods) the loss takes all views at once (``min_views``: at least)
supports_logit_stand (logit methods) honours ``DISTILLER.LOGIT_STAND`` (``self.stand(z)``)
==================== =====================================================================
"""

import copy
import enum
import itertools
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.experimental.optimization import fuse as fold_batch_norms


class Need(enum.Enum):
    """What a method needs beyond ``(student, teacher, cfg)``."""

    #: the training set: the constructor gets ``num_data=`` (its size) and ``train_targets=``
    TRAIN_SET = "train_set"
    #: ``forward_train`` needs ``epoch=``
    EPOCH = "epoch"


@dataclass(frozen=True)
class TrainingSet:
    """What the builder hands to methods that declare :attr:`Need.TRAIN_SET` (a dataset
    spec with ``num_train`` and ``train_targets`` serves as well)."""

    num_train: int
    train_targets: Optional[Sequence[int]] = None


def fold_teacher(teacher):
    """An inference copy of ``teacher`` with each BatchNorm folded into the convolution
    feeding it (``torch.fx``; a model that does not trace keeps its BNs; a module with a
    ``folded()`` method, such as a teacher ensemble, folds itself)."""
    own = getattr(teacher, "folded", None)
    if callable(own):
        return own()
    try:
        return fold_batch_norms(teacher)
    except Exception:  # control flow fx cannot trace: keep the BNs
        return copy.deepcopy(teacher)


def tree_map(fn, tree):
    """Apply ``fn`` to every tensor of a nest of dicts, lists and tuples."""
    if isinstance(tree, dict):
        return {k: tree_map(fn, v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(tree_map(fn, v) for v in tree)
    return fn(tree) if torch.is_tensor(tree) else tree


class Distiller(nn.Module):
    """Base class: freezes the teacher, keeps it in eval mode, dispatches train/test.

    See the module doc for what a subclass declares; register it with
    ``@register_distiller("NAME")``, which also adds its config node to the defaults.
    """

    #: the config node the method reads (filled by :meth:`defaults`); None = no node
    cfg_node = None
    #: reference-repo keys and where they live here: ``{"KD.LOSS.CE_WEIGHT": "SLD.CE_WEIGHT"}``;
    #: ``None`` = the reference ignores the key, ``"X[0]"`` = the first element of list X
    legacy_keys = {}
    #: how many augmented views of each image the method trains on (1 or 2)
    num_views = 1
    #: what the method needs beyond (student, teacher, cfg): :class:`Need` members
    needs = frozenset()
    #: False for a method without a teacher (the builder then loads none)
    uses_teacher = True
    #: ``torch.compile`` the cached teacher copy of :meth:`_run_teacher` (SOLVER.COMPILE sets it)
    compile_teacher = False
    #: its ``torch.compile`` mode (None: the default; SOLVER.COMPILE_MODE sets it)
    compile_mode = None
    #: label smoothing of the cross-entropy term (:meth:`ce`; SOLVER.LABEL_SMOOTHING sets it)
    label_smoothing = 0.0

    def __init__(self, student, teacher=None):
        super().__init__()
        self.student = student
        self.teacher = teacher
        self._shared = None  # what the combination this method is part of shares (see join)
        if teacher is not None:
            for p in teacher.parameters():
                p.requires_grad_(False)
            teacher.eval()

    # -- the contract ---------------------------------------------------------------------
    @staticmethod
    def defaults(node):
        """Fill ``node`` (the method's config node, a yacs CfgNode) with its keys' defaults,
        one ``# comment`` each, as ``node.TEMPERATURE = 4.0  # softmax temperature``."""

    @classmethod
    def check_config(cls, cfg, used):
        """Raise ConfigError (one line: key, rule, value) for invalid values of the method's
        node; ``used`` says the run trains with the method (warn about settings only then).
        Called by the config loader for every registered method."""

    @classmethod
    def views_for(cls, cfg):
        """Views this method needs under ``cfg`` (the data pipeline follows it)."""
        return cls.num_views

    @classmethod
    def build(cls, student, teacher, cfg, train_set=None):
        """The method on ``student`` and ``teacher``, given what it declares in :attr:`needs`
        (``train_set``: a :class:`TrainingSet` or a dataset spec)."""
        if Need.TRAIN_SET in cls.needs and train_set is not None:
            distiller = cls(student, teacher, cfg, num_data=train_set.num_train, train_targets=train_set.train_targets)
        else:
            distiller = cls(student, teacher, cfg)
        if cfg is not None:  # else the class default, 0
            distiller.label_smoothing = float(cfg.SOLVER.LABEL_SMOOTHING)
        return distiller

    def ce(self, logits, target):
        """The cross-entropy term of every method, with ``SOLVER.LABEL_SMOOTHING`` (0: the
        reference's plain cross-entropy)."""
        return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)

    def check_epoch(self, epoch):
        """TypeError when the method declares ``Need.EPOCH`` and the step gave no epoch."""
        if epoch is None and Need.EPOCH in self.needs:
            raise TypeError(f"{type(self).__name__}.forward_train needs the epoch (epoch=...)")

    def join(self, shared):
        """Make this method a part of a combination: the combination owns the student and the
        teacher (they leave this module, so they are saved, moved and counted once), and
        ``shared`` (a plain object, not a module) serves this method's ``self.student`` and
        ``self.teacher`` (``shared.model(name)``) and its :meth:`teacher_forward`."""
        del self.student, self.teacher
        self._shared = shared

    def __getattr__(self, name):
        if name in ("student", "teacher"):
            shared = self.__dict__.get("_shared")
            if shared is not None:
                return shared.model(name)
        return super().__getattr__(name)

    def train(self, mode=True):
        # the teacher is always in eval mode
        self.training = mode
        for name, module in self.named_children():
            module.train(mode and name != "teacher")
        return self

    def get_learnable_parameters(self):
        """Parameters the optimizer updates: the student's plus the method's own modules."""
        return [p for n, p in self.named_parameters() if not n.startswith("teacher.") and p.requires_grad]

    def get_extra_parameters(self):
        """Number of trainable parameters outside the student (connectors, embeddings)."""
        return sum(p.numel() for n, p in self.named_parameters()
                   if not n.startswith(("teacher.", "student.")) and p.requires_grad)

    @torch.no_grad()
    def teacher_forward(self, *images, features=True):
        """``[(logits, feats)]`` of the teacher for each image batch, from one forward over
        all of them (``feats`` is None when ``features`` is False).

        The one teacher path of every method, single or combined (a part of a combination
        asks its host, which runs it once per step over all views). The teacher is in eval
        mode, so concatenating the views is exact up to float rounding. Runs under
        ``torch.inference_mode`` (see :meth:`_run_teacher`); the outputs are cloned into
        normal tensors so losses may use them next to tensors that require grad.
        """
        if self._shared is not None:
            return self._shared.teacher_forward(*images, features=features)
        sizes = [im.shape[0] for im in images]
        with torch.inference_mode():
            logits, feats = self._run_teacher(images[0] if len(images) == 1 else torch.cat(images, 0))
            feats = [tree_map(lambda t, i=i: t.split(sizes)[i], feats) for i in range(len(images))] \
                if features else [None] * len(images)
        logits = logits.clone()
        return [(lg, tree_map(torch.clone, f)) for lg, f in zip(logits.split(sizes, 0), feats)]

    def _run_teacher(self, x):
        """The teacher's outputs on ``x``, computed by a cached copy of the eval-mode teacher
        with each BatchNorm folded into the convolution feeding it (``torch.fx``; models that
        do not trace keep their BNs), in channels_last on the CPU and for channels_last
        inputs (the fastest layout there in every precision; the features follow it). Equal
        to the teacher's forward up to float rounding; the copy is rebuilt when a teacher
        tensor changes (``load_state_dict``, ``.to()``, in-place ops; not writes through
        ``.data``, which bypass version counters). With :attr:`compile_teacher` the copy is
        compiled by ``torch.compile`` with inductor's freezing (the weights become constants
        of the inference graph; its first call compiles). A teacher kept in train mode (OFD,
        whose BN statistics update), one with forward hooks, or float64 inputs (golden-value
        checks, where folding's rounding would show) run the teacher as it is."""
        if x.dtype == torch.float64 or any(m.training or m._forward_hooks or m._forward_pre_hooks
                                           for m in self.teacher.modules()):
            return self.teacher(x)  # float64 (exactness checks), train-mode or hooked teachers run as they are
        channels_last = x.dim() == 4 and (x.device.type == "cpu" or x.is_contiguous(memory_format=torch.channels_last))
        tensors = itertools.chain(self.teacher.parameters(), self.teacher.buffers())
        key = (channels_last, self.compile_teacher, tuple((t.data_ptr(), t._version) for t in tensors))
        cache = self.__dict__.setdefault("_teacher_cache", {})
        if cache.get("key") != key:
            model = fold_teacher(self.teacher)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            cache.update(key=key, model=torch.compile(model, mode=self.compile_mode) if self.compile_teacher else model)
        x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        if not self.compile_teacher:
            return cache["model"](x)
        import torch._inductor.config as inductor_config

        with inductor_config.patch(freezing=True):  # read when a call (re)compiles; not a torch.compile option
            return cache["model"](x)

    def teacher_logits(self, *images):
        """Teacher logits (float32 or better) for each image batch, one forward for all."""
        outs = [lg for lg, _ in self.teacher_forward(*images, features=False)]
        return [o.float() if o.dtype in (torch.float16, torch.bfloat16) else o for o in outs]

    def prepare_batch(self, batch):
        """Add what the method needs to a device batch (e.g. CRD's contrastive indices)."""
        return batch

    def forward_train(self, **kwargs):
        raise NotImplementedError

    def forward_test(self, image):
        return self.student(image)[0]

    def forward(self, **kwargs):
        if self.training:
            return self.forward_train(**kwargs)
        return self.forward_test(kwargs["image"])


def as_float(t):
    """Losses are computed in float32 (or float64 when the inputs are float64)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
