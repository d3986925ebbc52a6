"""Checkpoints: atomic writes, mdistiller-compatible layouts, and teacher loading.

Run folders hold mdistiller's files: ``latest``, ``best``, ``epoch_N`` (the whole distiller,
optimizer and epoch) and ``student_latest``, ``student_best``, ``student_N`` (``{"model":
student_state_dict}``, the format of mdistiller's published teacher checkpoints). Every file
is written to a temporary file in the same folder and renamed into place, so a crash or a
full disk never leaves a half-written checkpoint under a real name.
"""

import hashlib
import os
import pickle

import torch

from ..utils.errors import CheckpointError
from .folder import is_disk_full, mkstemp_shared

CKPT_FIX = ("get a teacher with 'python3 tools/download_ckpts.py' (mdistiller's cifar_teachers.tar) "
            "or train one with DISTILLER.TYPE NONE, then pass it as DISTILLER.TEACHER_CKPT")


def save_checkpoint(obj, path):
    """Write ``obj`` to ``path`` atomically (temporary file + rename).

    On failure the temporary file is removed, any previous file at ``path`` is left
    untouched, and a CheckpointError says so.
    """
    fd, tmp = mkstemp_shared(path)  # the umask's mode, not mkstemp's 0600
    out = None
    try:
        with os.fdopen(fd, "wb") as f:
            out = _KeepWriteError(f)
            torch.save(obj, out)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError, pickle.PicklingError) as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        e = getattr(out, "error", None) or e  # torch.save reports a failed write as "unexpected pos"
        if is_disk_full(e):
            reason, hint = "no space left on device", "free space on that disk (or set LOG.PREFIX to a disk with room)"
        else:
            reason = os.strerror(e.errno) if isinstance(e, OSError) and e.errno else str(e).strip()[:200]
            hint = "check the folder"
        err = CheckpointError(
            f"could not write checkpoint '{path}': {reason}; the previous checkpoint there is intact; "
            f"{hint}, then continue with --resume"
        )
        err.reason, err.hint = reason, hint
        raise err from e


class _KeepWriteError:
    """The file torch.save writes to, keeping the OSError of a failed write (torch
    replaces it by ``[enforce fail ...] unexpected pos``, losing ENOSPC)."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data):
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self):
        self.f.flush()


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint file, turning missing / truncated / corrupt files into CheckpointError."""
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint '{path}' is a folder, not a checkpoint file; give the file inside it")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint '{path}' is empty (truncated); {_fix(path)}")
    if path.endswith(".safetensors"):  # timm's and Hugging Face's weight files
        from safetensors.torch import load_file

        try:
            return load_file(path, device=str(map_location))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"checkpoint '{path}' is not a readable safetensors file ({e}); {_fix(path)}") from None
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged file can break the unpickler anywhere
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if _looks_like_text(path):
            fix = _fix(path) if os.path.basename(path) == "interrupted" else \
                "give a checkpoint written by torch.save instead (e.g. a run folder's student_best)"
            raise CheckpointError(f"checkpoint '{path}' is a text file, not a checkpoint; {fix}") from None
        err = CheckpointError(f"checkpoint '{path}' is truncated or corrupt ({first}); {_fix(path)}")
        err.cause = first  # the reason, whole (quoted by the run folder's recovery)
        raise err from None


def _looks_like_text(path):
    """A small file of printable UTF-8 text (a checkpoint is a zip or pickle: binary)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
        text = head.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return bool(text) and all(c.isprintable() or c in "\n\r\t" for c in text)


def _fix(path):
    """What to do about a damaged file: an 'interrupted' checkpoint is deleted (the run then
    resumes from 'latest'); any other file is replaced."""
    if os.path.basename(path) == "interrupted":
        return "delete it to resume from the last epoch end ('latest')"
    return "replace it"


def _numpy_globals():
    """numpy scalars and dtypes that older checkpoints (e.g. a ``best_acc`` numpy float)
    carry; allowed in the weights-only unpickler, which rejects arbitrary code."""
    try:
        import numpy as np
    except ImportError:
        return []
    core = getattr(np, "_core", None) or np.core
    dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    return [core.multiarray.scalar, np.dtype] + dtypes


def strip_prefix(state, prefix):
    """Remove ``prefix`` from every key that has it (e.g. DataParallel's ``module.``)."""
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def extract_model_state(obj, part="student"):
    """The model state dict inside a checkpoint of any supported layout.

    Accepts a raw state dict, ``{"model": state_dict}`` (mdistiller teachers, our
    ``student_*`` files) and mdistiller distiller checkpoints whose keys carry
    ``module.`` and ``student.``/``teacher.`` prefixes (``part`` picks which).
    """
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError("checkpoint holds no model state dict (expected {'model': state_dict})")
    state = strip_prefix(state, "module.")
    prefixed = [k for k in state if k.startswith(f"{part}.")]
    if prefixed:
        state = {k[len(part) + 1:]: v for k, v in state.items() if k.startswith(f"{part}.")}
    return strip_prefix(state, "module.")


def describe_mismatch(model, state, limit=4):
    """A short text of missing/unexpected keys and shape differences, or '' if they fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = []

    def show(label, items):
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{label}: {', '.join(items[:limit])}{more}")

    show("missing keys", missing)
    show("unexpected keys", unexpected)
    show("shape differences (checkpoint vs model)", shapes)
    return "; ".join(parts)


def load_model_weights(model, path, name, part="student", obj=None):
    """Strictly load the weights at ``path`` (``obj``: that file, if already loaded) into
    ``model`` or raise a CheckpointError that says what differs (another architecture,
    another number of classes)."""
    state = extract_model_state(load_checkpoint(path) if obj is None else obj, part)
    state = getattr(model, "normalize_state_dict", lambda s: s)(state)  # e.g. a bare timm/torchvision state dict
    mismatch = describe_mismatch(model, state)
    if mismatch:
        own = model.state_dict()
        cls_keys = [k for k in own if k in state and own[k].dim() >= 1 and state[k].dim() >= 1
                    and own[k].shape[1:] == state[k].shape[1:] and own[k].shape[0] != state[k].shape[0]]
        only_classes = cls_keys and all(k in cls_keys for k in own if k in state
                                        and tuple(own[k].shape) != tuple(state[k].shape)) and \
            not any(k not in state for k in own)
        if only_classes:
            k = cls_keys[-1]
            raise CheckpointError(
                f"checkpoint '{path}' is for {state[k].shape[0]} classes but {name} here has "
                f"{own[k].shape[0]} (the dataset's class count); use a checkpoint trained on this dataset"
            )
        raise CheckpointError(f"checkpoint '{path}' does not fit model {name}: {mismatch}")
    model.load_state_dict(state)
    return model


#: the file, in a folder of installed teachers, recording each checkpoint's SHA-256
SHA256_FILE = "SHA256SUMS"


def file_sha256(path, chunk=1 << 20):
    """SHA-256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def recorded_sha256(path):
    """``(digest, sums file)`` recorded for ``path`` in a SHA256SUMS file of its folder or
    the two above it (``sha256sum`` format, paths relative to that file), else ``(None, None)``."""
    folder = os.path.dirname(os.path.abspath(path))
    for _ in range(3):
        sums = os.path.join(folder, SHA256_FILE)
        if os.path.isfile(sums):
            rel = os.path.relpath(os.path.abspath(path), folder).replace(os.sep, "/")
            with open(sums, encoding="utf-8") as f:
                for line in f:
                    digest, _, name = line.strip().partition("  ")
                    if name == rel:
                        return digest, sums
        folder = os.path.dirname(folder)
    return None, None


def verify_recorded_sha256(path):
    """CheckpointError if ``path`` differs from the SHA-256 recorded when it was installed;
    returns that digest (the file's, checked), or None when nothing was recorded."""
    digest, sums = recorded_sha256(path)
    if digest is not None and file_sha256(path) != digest:
        raise CheckpointError(f"teacher checkpoint '{path}' does not match the SHA-256 recorded in '{sums}' "
                              f"(a corrupted copy); install it again with 'python3 tools/download_ckpts.py'")
    return digest
