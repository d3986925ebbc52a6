"""The distiller interface shared by every method (mdistiller's calling convention).

A distiller owns a ``student`` and a frozen ``teacher``::

    distiller = distiller_dict[cfg.DISTILLER.TYPE](student, teacher, cfg)
    logits, losses = distiller(image=x, target=y, epoch=e)                      # one view
    logits, losses = distiller(image_weak=xw, image_strong=xs, target=y, epoch=e)  # two views

``losses`` maps names (``loss_ce``, ``loss_kd``, ...) to already weighted scalar tensors;
the trainer sums them. ``logits`` are the student's (weak view) logits, for accuracy.
In eval mode, ``distiller(image=x)`` returns the student's logits.
"""

import copy
import itertools

import torch
import torch.nn as nn
from torch.fx.experimental.optimization import fuse as fold_batch_norms


class Distiller(nn.Module):
    """Base class: freezes the teacher, keeps it in eval mode, dispatches train/test."""

    #: how many augmented views of each image the method trains on (1 or 2)
    num_views = 1
    #: ``torch.compile`` the cached teacher copy of :meth:`_run_teacher` (SOLVER.COMPILE sets it)
    compile_teacher = False
    #: its ``torch.compile`` mode (None: the default; SOLVER.COMPILE_MODE sets it)
    compile_mode = None

    def __init__(self, student, teacher=None):
        super().__init__()
        self.student = student
        self.teacher = teacher
        if teacher is not None:
            for p in teacher.parameters():
                p.requires_grad_(False)
            teacher.eval()

    @classmethod
    def views_for(cls, cfg):
        """Views this method needs under ``cfg`` (the data pipeline follows it)."""
        return cls.num_views

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
    def teacher_forward(self, *images):
        """Teacher logits and features for each image batch, in one forward over all of them.

        The teacher is in eval mode, so concatenating the views is exact up to float
        rounding. Runs under ``torch.inference_mode`` (see :meth:`_run_teacher`); the logits
        are cloned into normal tensors so losses may use them next to tensors that require grad.
        """
        with torch.inference_mode():
            logits, feats = self._run_teacher(images[0] if len(images) == 1 else torch.cat(images, 0))
        logits = logits.clone()
        if len(images) == 1:
            return [(logits, feats)]
        sizes = [im.shape[0] for im in images]
        return [(chunk, None) for chunk in logits.split(sizes, 0)]

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
            try:
                model = fold_batch_norms(self.teacher)
            except Exception:  # control flow fx cannot trace: keep the BNs
                model = copy.deepcopy(self.teacher)
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
        outs = [lg for lg, _ in self.teacher_forward(*images)]
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
