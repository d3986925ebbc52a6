"""Run folders: where a run may live, who may write it, and how an epoch is committed.

* A run folder is ``LOG.PREFIX/PROJECT/(NAME or TAG)``; each of the three is one path
  component, so the folder is always inside ``LOG.PREFIX``. A folder carries the marker file
  ``.mdistiller-run`` from its creation; ``--overwrite`` deletes only folders that carry it.
* One process per run folder: the writer holds an exclusive ``flock`` on the run folder
  itself (released by the kernel when the process dies, so a stale lock is taken over; a
  user cannot delete it from under the holder); ``.lock`` only records the holder's PID
  and host for the message that names it.
* One place decides what a folder holds (:func:`saved_files`): a folder with any
  checkpoint (``latest``, ``interrupted``, ``epoch_N``, ``student_*``, ``best``) is never
  treated as empty; a missing ``latest`` is rebuilt from the newest whole ``epoch_N``.
* One atomic epoch commit (:class:`EpochCommit`): the epoch's side files are first written
  whole as ``<name>.e<N>.stage``, then ``latest`` (holding the metrics history and the best
  epoch) replaces the previous one: that rename is the commit. The stages are then renamed
  into place and ``metrics.jsonl`` is rewritten from the history. :func:`recover` runs at
  every start: it rolls the stages of the committed epoch forward, deletes the others and
  leftover ``*.tmp`` files, and re-derives ``metrics.jsonl`` from ``latest``. Whatever the
  point of a kill or a full disk, the folder then holds the previous epoch or the new one.
"""

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import tempfile

from ..utils.errors import CheckpointError, ConfigError, MdistillerError  # noqa: F401
from .loggers import read_metrics

logger = logging.getLogger(__name__)

MARKER = ".mdistiller-run"
LOCK = ".lock"
STAGE_RE = re.compile(r"^(?P<name>.+)\.e(?P<epoch>\d+)\.stage$")
CHECKPOINTS = ("latest", "interrupted")


def has_checkpoint(run_dir):
    """Does ``run_dir`` hold a checkpoint ``--resume`` continues from?"""
    return any(os.path.isfile(os.path.join(run_dir, f)) for f in CHECKPOINTS)


class RunFolderError(MdistillerError, OSError):
    """A run folder cannot be used (in use, not a run folder, not writable, disk full)."""


# ---------------------------------------------------------------------------------------
# names and OS errors
# ---------------------------------------------------------------------------------------
def check_component(key, value):
    """``value`` must be a single, non-empty path component (no separator, not . or ..)."""
    bad = (not value or value in (".", "..") or "/" in value or (os.sep != "/" and os.sep in value)
           or not value.isprintable() or value != value.strip())
    if bad:
        raise ConfigError(f"{key} {value!r} is not a valid folder name; use a single name without '/', "
                          f"'.', '..', control characters (e.g. a newline) or surrounding spaces (e.g. {key} my_run)")


def run_dir_of(cfg):
    """``LOG.PREFIX/PROJECT/(NAME or TAG)``, each a single folder name (checked)."""
    if not cfg.LOG.PREFIX.strip():
        raise ConfigError("LOG.PREFIX is empty; set it to the folder that holds run folders (e.g. ./output)")
    check_component("EXPERIMENT.PROJECT", cfg.EXPERIMENT.PROJECT)
    key = "EXPERIMENT.NAME" if cfg.EXPERIMENT.NAME else "EXPERIMENT.TAG"
    name = cfg.EXPERIMENT.NAME or cfg.EXPERIMENT.TAG
    if not name:
        raise ConfigError("EXPERIMENT.NAME and EXPERIMENT.TAG are both empty; set EXPERIMENT.NAME to the run's "
                          "folder name")
    check_component(key, name)
    return os.path.join(cfg.LOG.PREFIX, cfg.EXPERIMENT.PROJECT, name)


def describe_os_error(e, path, then="then continue with --resume"):
    """One line for an OSError met while writing ``path``: the reason and the fix."""
    code = getattr(e, "errno", None)
    if is_disk_full(e):
        return (f"no space left on device writing '{path}'; free space on that disk (or set LOG.PREFIX to a disk "
                f"with room), {then}")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"permission denied writing '{path}' ({os.strerror(code)}); make the folder writable or set "
                f"LOG.PREFIX to a writable folder, {then}")
    reason = os.strerror(code) if code else str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return f"could not write '{path}': {reason}; check the folder, {then}"


def is_disk_full(e):
    """ENOSPC or EDQUOT, also as a message (e.g. wrapped by a library)."""
    return getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(e)


def file_mode(base=0o666):
    """The mode a new file (``base`` 0666) or folder (0777) gets from the umask, as ``open``
    or ``mkdir`` would give it."""
    mask = os.umask(0o022)
    os.umask(mask)
    return base & ~mask


def mkstemp_shared(path):
    """``tempfile.mkstemp`` beside ``path`` (for an atomic write), with the umask's mode
    instead of mkstemp's 0600, so the renamed file is as shareable as any other."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, file_mode())
    except OSError:
        pass
    return fd, tmp


def atomic_write_text(path, text):
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    fd, tmp = mkstemp_shared(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass


# ---------------------------------------------------------------------------------------
# creation, marker, overwrite
# ---------------------------------------------------------------------------------------
def is_run_folder(path):
    return os.path.isfile(os.path.join(path, MARKER))


SAVED_RE = re.compile(r"^(latest|interrupted|best|epoch_\d+|student_(\d+|latest|best))$")
EPOCH_RE = re.compile(r"^epoch_(\d+)$")


def saved_files(path):
    """The checkpoints a folder holds (sorted); the one test of whether a run folder is
    empty: a folder with any of them is never cleared as "holding no checkpoint"."""
    try:
        names = os.listdir(path)
    except OSError:
        return []
    return sorted(f for f in names if SAVED_RE.match(f) and os.path.isfile(os.path.join(path, f)))


def newest_whole_epoch(run_dir, load):
    """``(path, state, skipped)``: the newest ``epoch_N`` that loads whole (``skipped``: the
    newer ones that did not, with their reasons), or ``(None, None, skipped)``."""
    epochs = sorted((int(m[1]), f) for f in saved_files(run_dir) if (m := EPOCH_RE.match(f)))
    skipped = []
    for _, name in reversed(epochs):
        path = os.path.join(run_dir, name)
        try:
            state = load(path)
        except CheckpointError as e:
            skipped.append(f"{name}: {e}")
            continue
        if isinstance(state, dict) and "epoch" in state and "model" in state:
            return path, state, skipped
        skipped.append(f"{name}: not a whole epoch checkpoint")
    return None, None, skipped


def mark(run_dir):
    with open(os.path.join(run_dir, MARKER), "w") as f:
        f.write("mdistiller run folder: --overwrite may delete it\n")


def missing_folders(path):
    """The folders ``os.makedirs(path)`` would create, deepest first."""
    missing = []
    d = os.path.abspath(path)
    while not os.path.exists(d) and d != os.path.dirname(d):
        missing.append(d)
        d = os.path.dirname(d)
    return missing


def remove_empty(folders):
    """Remove those of ``folders`` (deepest first) that exist and are empty: undoes a
    ``makedirs`` of a tool that failed before writing anything."""
    for d in folders:
        if os.path.isdir(d) and not os.listdir(d):
            os.rmdir(d)


def create(run_dir):
    """Create ``run_dir`` (and its parents) with the marker; returns the folders created,
    deepest first, so a start that fails early can remove exactly them."""
    created = missing_folders(run_dir)
    try:
        os.makedirs(run_dir, exist_ok=True)
        if not os.path.isdir(run_dir):
            raise RunFolderError(f"run folder '{run_dir}' exists as a file; set EXPERIMENT.NAME to another name")
        if created or not os.listdir(run_dir):
            mark(run_dir)
    except OSError as e:
        if isinstance(e, MdistillerError):
            raise
        raise RunFolderError(describe_os_error(e, run_dir, then="then start again")) from None
    return created


def remove_created(created):
    """Undo :func:`create` for a start that failed before the run began: the folders this
    process created (the run folder, if it carries the marker, and then empty parents)."""
    if created and is_run_folder(created[0]):
        shutil.rmtree(created[0], ignore_errors=True)
    remove_empty(created)


def clear(run_dir, keep=(LOCK, MARKER)):
    """Delete the contents of a marked run folder (for --overwrite, or a restart after a
    start that never reached a checkpoint); refuses a folder without the marker."""
    if not is_run_folder(run_dir):
        raise RunFolderError(f"'{run_dir}' is not a run folder (it has no {MARKER} marker), so it is not deleted; "
                             f"set EXPERIMENT.NAME to a new name, or move that folder away yourself")
    for name in os.listdir(run_dir):
        if name in keep:
            continue
        p = os.path.join(run_dir, name)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)


# ---------------------------------------------------------------------------------------
# one process per run folder
# ---------------------------------------------------------------------------------------
class RunLock:
    """An exclusive ``flock`` on the run folder itself (which a user cannot delete while it
    holds files, unlike a lock file), with the holder's PID and host recorded in ``.lock``."""

    def __init__(self, run_dir):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, LOCK)
        self.fd = None
        self.previous = ""

    def acquire(self):
        try:
            self.fd = os.open(self.run_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError as e:
            raise RunFolderError(describe_os_error(e, self.run_dir, then="then start again")) from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = self._read() or "another process"
            os.close(self.fd)
            self.fd = None
            raise RunFolderError(f"run folder '{self.run_dir}' is in use by {holder}; wait for it to "
                                 f"finish or stop it, or set EXPERIMENT.NAME to another name") from None
        self.previous = self._read()
        me = f"process {os.getpid()} on {socket.gethostname()}"
        if self.previous and self.previous != me:
            logger.info(f"note: run folder '{self.run_dir}' was locked by {self.previous}, which is "
                        f"no longer running; taking it over")
        try:  # a plain write: the record only names the holder in messages
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            try:
                os.write(fd, me.encode())
            finally:
                os.close(fd)
        except OSError as e:
            self.release()
            raise RunFolderError(describe_os_error(e, self.path, then="then start again")) from None
        return self

    def _read(self):
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                return f.read(200).strip()
        except OSError:
            return ""

    def release(self):
        if self.fd is None:
            return
        try:
            if self._read() == f"process {os.getpid()} on {socket.gethostname()}":
                _unlink(self.path)
        except OSError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


# ---------------------------------------------------------------------------------------
# the epoch commit
# ---------------------------------------------------------------------------------------
def stage_name(name, epoch):
    return f"{name}.e{epoch}.stage"


class EpochCommit:
    """Writes one epoch's files so that the folder holds either the previous epoch or the
    new one, whole (see the module docstring). ``save`` is the atomic checkpoint writer."""

    def __init__(self, run_dir, save):
        self.run_dir = run_dir
        self.save = save

    def path(self, name):
        return os.path.join(self.run_dir, name)

    def __call__(self, epoch, state, side_files):
        """``state`` (the ``latest`` checkpoint, with ``history``) and ``side_files``
        (name -> object, e.g. student_latest, best, student_best, epoch_N)."""
        try:
            for name, obj in side_files.items():
                self.save(obj, self.path(stage_name(name, epoch)))
            self.save(state, self.path("latest"))  # the commit point
        except CheckpointError as e:
            if not hasattr(e, "reason"):
                raise
            before = (f"the run folder holds epoch {epoch - 1}, whole" if epoch > 1
                      else "no epoch was saved yet (--resume starts the run again)")
            raise CheckpointError(f"could not save epoch {epoch} in '{self.run_dir}': {e.reason}; {before}; "
                                  f"{e.hint}, then continue with --resume") from e
        roll_forward(self.run_dir, epoch)
        _unlink(self.path("interrupted"))
        write_metrics(self.run_dir, state.get("history", []))


def roll_forward(run_dir, epoch):
    """Rename the stages of ``epoch`` into place; delete stages of any other epoch."""
    for f in sorted(os.listdir(run_dir)):
        m = STAGE_RE.match(f)
        if not m:
            continue
        if int(m["epoch"]) == epoch:
            os.replace(os.path.join(run_dir, f), os.path.join(run_dir, m["name"]))
        else:
            _unlink(os.path.join(run_dir, f))


def write_metrics(run_dir, history):
    atomic_write_text(os.path.join(run_dir, "metrics.jsonl"), "".join(json.dumps(r) + "\n" for r in history))


def damaged_latest(run_dir, error, load):
    """The message for an unreadable ``latest``: the reason, whole, and the ``epoch_N`` that
    replaces it (nothing is changed or deleted here)."""
    reason = getattr(error, "cause", None) or str(error)
    latest = os.path.join(run_dir, "latest")
    path, state, _ = newest_whole_epoch(run_dir, load)
    if path is None:
        fix = ("no whole epoch_N checkpoint is there to replace it; start a new run with another EXPERIMENT.NAME, "
               "or --overwrite to replace this one")
    else:
        fix = (f"replace it with the newest whole epoch checkpoint, {os.path.basename(path)}: "
               f"cp '{path}' '{latest}', then --resume (later epochs are trained again)")
    return f"checkpoint '{latest}' cannot be read ({reason}); nothing was changed or deleted; {fix}"


def rebuild_latest(run_dir, load):
    """``latest`` is missing but the folder holds checkpoints: copy the newest whole
    ``epoch_N`` to ``latest`` (returns its path) when no later epoch is recorded; otherwise
    refuse in one line naming it. Nothing is deleted either way."""
    saved = saved_files(run_dir)
    path, state, skipped = newest_whole_epoch(run_dir, load)
    if path is None:
        why = f" ({'; '.join(skipped)})" if skipped else ""
        raise CheckpointError(f"--resume: '{run_dir}' has no 'latest' checkpoint and no whole epoch_N to rebuild it "
                              f"from{why} (it holds {', '.join(saved[:6])}); nothing was changed or deleted; start a "
                              f"new run with another EXPERIMENT.NAME")
    epoch = state["epoch"]
    later = [r["epoch"] for r in read_metrics(run_dir)] + \
        [int(m[1]) for f in saved if (m := re.match(r"^student_(\d+)$", f))]
    last = max(later, default=0)
    name = os.path.basename(path)
    if last > epoch:
        raise CheckpointError(f"--resume: 'latest' is missing in '{run_dir}'; the newest whole epoch checkpoint is "
                              f"{name}, but epoch {last} was recorded; nothing was changed or deleted; to continue "
                              f"from epoch {epoch} (epochs {epoch + 1}-{last} are trained again) copy it: cp '{path}' "
                              f"'{os.path.join(run_dir, 'latest')}', then --resume")
    fd, tmp = mkstemp_shared(os.path.join(run_dir, "latest"))
    os.close(fd)
    try:
        shutil.copyfile(path, tmp)
        os.replace(tmp, os.path.join(run_dir, "latest"))
    except BaseException:
        _unlink(tmp)
        raise
    logger.info(f"note: 'latest' is missing in '{run_dir}'; rebuilt it from {name}, the newest whole epoch "
                f"checkpoint (no later epoch is recorded); nothing was deleted")
    return os.path.join(run_dir, "latest")


def recover(run_dir, load):
    """Bring a run folder to its last committed epoch (see the module docstring); returns
    the ``latest`` state (or None). ``load`` reads a checkpoint file."""
    for f in os.listdir(run_dir):
        if f.endswith(".tmp"):
            _unlink(os.path.join(run_dir, f))
    latest_path = os.path.join(run_dir, "latest")
    latest = None
    if os.path.isfile(latest_path):
        try:
            latest = load(latest_path)
        except CheckpointError as e:
            raise CheckpointError(damaged_latest(run_dir, e, load)) from None
    epoch = latest["epoch"] if latest else 0
    roll_forward(run_dir, epoch)
    if latest is not None and "history" in latest:
        history = [r for r in latest["history"] if r["epoch"] <= epoch]
        if read_metrics(run_dir) != history:
            write_metrics(run_dir, history)
    inter = os.path.join(run_dir, "interrupted")
    if latest is not None and os.path.isfile(inter):
        try:
            stale = load(inter)["interrupted"]["epoch"] <= epoch
        except CheckpointError:
            stale = False  # reported when --resume reads it
        if stale:  # left by a kill between the commit and its deletion
            _unlink(inter)
    return latest


__all__ = ["MARKER", "LOCK", "RunFolderError", "RunLock", "EpochCommit", "check_component", "create", "clear",
           "recover", "remove_created", "describe_os_error", "is_run_folder", "atomic_write_text",
           "is_disk_full", "saved_files", "newest_whole_epoch", "rebuild_latest", "file_mode", "mkstemp_shared",
           "missing_folders", "remove_empty"]
