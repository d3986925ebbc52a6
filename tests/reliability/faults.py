"""In-process fault injection for the run-folder tests and scripts/probe_bad_inputs.py.

A *write point* is one file-system operation of an epoch commit: a checkpoint's content
(``torch.save``), a rename (``os.replace``), a deletion (``os.unlink``) or a text file's
content (``atomic_write_text``). :class:`Faults` counts them while the commit of a chosen
epoch runs and, at the N-th, either *kills* the run (raises :class:`SimulatedKill`, a
BaseException nothing in the package catches, leaving the files as a dead process would;
a half-written checkpoint stays as a ``*.tmp``) or makes the disk *full* (ENOSPC).
"""

import errno
import os

import torch

from mdistiller.runs import folder as runfolder
from mdistiller.runs.checkpoint import load_checkpoint


class SimulatedKill(BaseException):
    """The process died here (SIGKILL, power loss)."""


class Faults:
    def __init__(self, monkeypatch, epoch, at=None, kind="kill"):
        self.epoch, self.at, self.kind = epoch, at, kind
        self.points, self.active = [], False
        real_save, real_replace, real_unlink = torch.save, os.replace, os.unlink
        real_text, real_commit = runfolder.atomic_write_text, runfolder.EpochCommit.__call__

        def point(what, path):
            if not self.active:
                return
            self.points.append(f"{what} {os.path.basename(str(path))}")
            if self.at is not None and len(self.points) - 1 == self.at:
                if self.kind == "kill":
                    raise SimulatedKill(self.points[-1])
                raise OSError(errno.ENOSPC, "No space left on device", str(path))

        def save(obj, f, *a, **k):
            name = getattr(f, "name", f)
            if isinstance(name, int):  # a file opened from a descriptor: name its path
                try:
                    name = os.readlink(f"/proc/self/fd/{name}")
                except OSError:
                    name = "checkpoint"
            if self.active and self.at is not None and len(self.points) == self.at:
                f.write(b"half a checkpoint")  # the bytes that reached the disk
            point("write", name)
            return real_save(obj, f, *a, **k)

        def replace(src, dst, *a, **k):
            point("rename", f"{os.path.basename(str(src))} -> {os.path.basename(str(dst))}")
            return real_replace(src, dst, *a, **k)

        def unlink(path, *a, **k):
            if os.path.exists(path):
                point("delete", path)
            return real_unlink(path, *a, **k)

        def text(path, content):
            point("write", path)
            return real_text(path, content)

        def commit(this, epoch, state, side):
            self.active = epoch == self.epoch
            try:
                return real_commit(this, epoch, state, side)
            finally:
                self.active = False

        monkeypatch.setattr(torch, "save", save)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(os, "unlink", unlink)
        monkeypatch.setattr(runfolder, "atomic_write_text", text)
        monkeypatch.setattr(runfolder.EpochCommit, "__call__", commit)


def fixed_accuracy(monkeypatch, accs):
    """Make the validation top-1 of epoch e equal ``accs[e - 1]`` (the rest stays real),
    so a test decides which epochs are a new best."""
    from mdistiller.engine.trainer import Trainer

    real = Trainer.evaluate

    def evaluate(self, model_fn=None):
        res = real(self, model_fn)
        if model_fn is None:  # the student's end-of-epoch validation
            epoch = self.history[-1]["epoch"] + 1 if self.history else 1
            res = dict(res, top1=float(accs[epoch - 1]))
        return res

    monkeypatch.setattr(Trainer, "evaluate", evaluate)


def snapshot(folder):
    """{file name: bytes} of every file in ``folder`` (recursively), to prove nothing changed."""
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = fh.read()
    return out


def student_weights(path):
    return load_checkpoint(path)["model"]


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
