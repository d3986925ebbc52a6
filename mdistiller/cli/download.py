"""``python3 tools/download_ckpts.py [--dest DIR] [--url URL] [--sha256 HEX] [--archive FILE] [--verify]``

Installs mdistiller's published CIFAR-100 teachers (its release file ``cifar_teachers.tar``)
where training looks for them: ``download_ckpts/cifar_teachers/<model>_vanilla/
ckpt_epoch_240.pth``. The archive is streamed to a temporary file next to the destination
and renamed when complete, then checked before anything is unpacked: the optional SHA-256;
a tar whose members are all ``.pth`` files under ``cifar_teachers/`` (no absolute paths,
``..`` or links); every checkpoint loading with ``torch.load(weights_only=True)`` to a dict
whose ``"model"`` entry is a state dict; every published teacher (the zoo's
``CIFAR_TEACHERS``, as in the reference's ``cifar_models.json``) present and loading strictly
into its zoo model (keys, shapes, 100 classes). Each file's SHA-256 is recorded in
``cifar_teachers/SHA256SUMS``: training refuses a teacher whose bytes changed since, and
``--verify`` checks the installed files. A network failure, a bad file or a write failure is
reported as one line (exit code 2); nothing half-written is left behind.
"""

import argparse
import logging
import contextlib
import hashlib
import http.client
import io
import os
import pickle
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib

import torch
from tqdm import tqdm

from ..models import CIFAR_TEACHER_DIR, build_model, cifar_teacher_ckpt
from ..models.cifar import CIFAR_TEACHERS
from ..runs.folder import missing_folders, remove_empty
from ..runs.checkpoint import (SHA256_FILE, describe_mismatch, file_sha256, recorded_sha256, strip_prefix,
                               verify_recorded_sha256)
from ..utils.errors import CheckpointError, ConfigError, MdistillerError
from .common import ArgumentParser, REPO_ROOT, add_debug_flag, number, run_tool

log = logging.getLogger("mdistiller.download")

DEFAULT_URL = "https://github.com/megvii-research/mdistiller/releases/download/checkpoints/cifar_teachers.tar"
DEFAULT_DEST = os.path.join(REPO_ROOT, "download_ckpts")
ARCHIVE_NAME = "cifar_teachers.tar"
ARCHIVE_ROOT = "cifar_teachers"
CHUNK = 1 << 20
# what a damaged tar stream or checkpoint raises while being read
BAD_TAR = (tarfile.TarError, EOFError, zlib.error)
BAD_CHECKPOINT = (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, KeyError)
REINSTALL = "run 'python3 tools/download_ckpts.py' again"
#: the zoo models whose published checkpoints the archive must hold
TEACHERS = CIFAR_TEACHERS


class DownloadError(MdistillerError):
    """The archive could not be fetched (network, HTTP status, connection cut short)."""


@contextlib.contextmanager
def writing_to(dest):
    """Report a file-system error under ``dest`` as one user-facing line."""
    try:
        yield
    except OSError as e:
        raise MdistillerError(f"cannot write to '{dest}': {e.strerror or e}; check the folder's permissions "
                              f"and free space, or choose another --dest") from None


def network_error(url, e):
    reason = f"HTTP {e.code} {e.reason}" if isinstance(e, urllib.error.HTTPError) else getattr(e, "reason", e)
    return DownloadError(f"cannot download {url}: {reason}; check the network connection and --url "
                         f"(or fetch the file another way and pass it with --archive)")


def fetch(url, path, timeout=60.0, quiet=False):
    """Stream ``url`` into ``path`` with a progress bar and return the data's SHA-256 (hex)."""
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except (OSError, ValueError, http.client.HTTPException) as e:  # URLError, HTTPError, timeout, bad URL
        raise network_error(url, e) from None
    digest, received = hashlib.sha256(), 0
    with response, open(path, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=ARCHIVE_NAME,
                  disable=quiet, file=sys.stderr) as bar:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    raise network_error(url, e) from None
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        raise DownloadError(f"download of {url} stopped after {received} of {total} bytes; run the command again")
    return digest.hexdigest()


def checkpoint_members(tar):
    """The archive's checkpoint files; anything that could land outside ``cifar_teachers/``
    or is not a ``.pth`` file is refused before a byte is written."""
    files = []
    for m in tar.getmembers():
        parts = m.name.split("/")
        if m.name.startswith("/") or "\\" in m.name or ".." in parts or ":" in parts[0]:
            raise CheckpointError(f"unsafe path '{m.name}' in the archive; refusing to unpack it")
        parts = [p for p in parts if p not in ("", ".")]
        if not parts or parts[0] != ARCHIVE_ROOT:
            raise CheckpointError(f"'{m.name}' in the archive is not under {ARCHIVE_ROOT}/; "
                                  f"this is not mdistiller's teacher archive")
        if m.isdir():
            continue
        if not m.isfile() or not m.name.endswith(".pth"):
            raise CheckpointError(f"'{m.name}' in the archive is not a .pth checkpoint file; "
                                  f"this is not mdistiller's teacher archive")
        files.append(("/".join(parts), m))
    if not files:
        raise CheckpointError(f"the archive holds no checkpoints under {ARCHIVE_ROOT}/")
    return files


def check_checkpoint(name, data):
    """Load ``data`` as a checkpoint (tensors only) and return its state dict."""
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except BAD_CHECKPOINT as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"'{name}' in the archive does not load as a checkpoint ({first[:160]}); "
                              f"download it again") from None
    state = obj.get("model") if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"'{name}' in the archive is not a {{'model': state_dict}} checkpoint; "
                              f"this is not mdistiller's teacher archive")
    return state


def expected_teachers():
    """``{path in the archive: model name}`` of the published teachers (the zoo's list, which
    the tests check against the reference's ``cifar_models.json``)."""
    return {f"{ARCHIVE_ROOT}/{cifar_teacher_ckpt(n)[len(CIFAR_TEACHER_DIR) + 1:]}": n for n in TEACHERS}


def check_fits_model(rel, state, name):
    """CheckpointError unless ``state`` loads strictly into the zoo's ``name`` (100 classes)."""
    mismatch = describe_mismatch(build_model(name, "cifar", 100), strip_prefix(state, "module."))
    if mismatch:
        raise CheckpointError(f"'{rel}' in the archive does not fit the zoo's {name} ({mismatch}); "
                              f"this is not mdistiller's teacher archive")


def check_layout(installed):
    """CheckpointError when a published teacher is missing; a warning for extra files."""
    names = {rel for rel, _ in installed}
    missing = [rel for rel in expected_teachers() if rel not in names]
    if missing:
        raise CheckpointError(f"the archive lacks {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}; "
                              f"this is not mdistiller's complete teacher archive: download it again")
    extra = sorted(names - set(expected_teachers()))
    if extra:
        warnings.warn(f"the archive also holds {', '.join(extra[:3])}, which no zoo model uses; installed anyway")


def write_sums(folder, digests):
    """Record ``{path relative to folder: sha256}`` in ``folder``/SHA256SUMS (kept entries of
    other files), atomically."""
    sums = os.path.join(folder, SHA256_FILE)
    entries = {}
    if os.path.isfile(sums):
        with open(sums, encoding="utf-8") as f:
            entries = {name: digest for digest, _, name in (line.strip().partition("  ") for line in f) if name}
    entries.update(digests)
    fd, tmp = tempfile.mkstemp(prefix=f".{SHA256_FILE}.", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.writelines(f"{entries[k]}  {k}\n" for k in sorted(entries))
    os.replace(tmp, sums)


def verify(dest):
    """Check every installed checkpoint against its recorded SHA-256; returns the count."""
    folder = os.path.join(dest, ARCHIVE_ROOT)
    sums = os.path.join(folder, SHA256_FILE)
    if not os.path.isfile(sums):
        raise CheckpointError(f"no {sums}; install the teachers with 'python3 tools/download_ckpts.py' first")
    checked = 0
    for rel in expected_teachers():
        path = os.path.join(dest, *rel.split("/"))
        if not os.path.isfile(path):
            raise CheckpointError(f"teacher checkpoint '{path}' is missing; {REINSTALL}")
        if recorded_sha256(path)[0] is None:
            raise CheckpointError(f"'{sums}' records no SHA-256 for '{path}'; {REINSTALL}")
        verify_recorded_sha256(path)
        checked += 1
    return checked


def install(archive, dest):
    """Check every checkpoint of ``archive`` (it loads, it fits its zoo model, every published
    teacher is there), then move them all into ``dest`` and record their SHA-256 in
    ``dest/cifar_teachers/SHA256SUMS``.

    Returns ``[(relative path, number of tensors)]``. Files are staged in a temporary
    folder inside ``dest`` so a bad archive installs nothing.
    """
    teachers = expected_teachers()
    staging = tempfile.mkdtemp(prefix=".cifar_teachers-", dir=dest)
    try:
        installed = []
        try:
            with tarfile.open(archive) as tar:
                for rel, member in checkpoint_members(tar):
                    with tar.extractfile(member) as src:
                        data = src.read()
                    state = check_checkpoint(rel, data)
                    if rel in teachers:
                        check_fits_model(rel, state, teachers[rel])
                    staged = os.path.join(staging, *rel.split("/"))
                    os.makedirs(os.path.dirname(staged), exist_ok=True)
                    with open(staged, "wb") as out:
                        out.write(data)
                    installed.append((rel, len(state)))
        except BAD_TAR as e:
            raise CheckpointError(f"'{archive}' is not a valid tar archive ({e}); the download may be "
                                  f"damaged: run the command again") from None
        check_layout(installed)
        digests = {rel[len(ARCHIVE_ROOT) + 1:]: file_sha256(os.path.join(staging, *rel.split("/")))
                   for rel, _ in installed}
        for rel, _ in installed:
            final = os.path.join(dest, *rel.split("/"))
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.replace(os.path.join(staging, *rel.split("/")), final)
        write_sums(os.path.join(dest, ARCHIVE_ROOT), digests)
        return installed
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def run(args):
    dest = os.path.abspath(args.dest)
    if os.path.isfile(dest):
        raise ConfigError(f"--dest '{args.dest}' is a file; give a folder")
    if args.archive and os.path.isdir(args.archive):
        raise CheckpointError(f"archive '{args.archive}' is a folder; give the cifar_teachers.tar file")
    if args.verify:
        print(f"{verify(dest)} teacher checkpoints in {dest} match their recorded SHA-256")
        return 0
    if args.archive and not os.path.isfile(args.archive):
        raise CheckpointError(f"archive '{args.archive}' does not exist; check the --archive path")
    with writing_to(dest):
        created = missing_folders(dest)  # removed again if nothing is installed
        os.makedirs(dest, exist_ok=True)
        temporary, done = None, False
        try:
            if args.archive:
                archive, digest = args.archive, file_sha256(args.archive)
            else:
                fd, temporary = tempfile.mkstemp(prefix=f".{ARCHIVE_NAME}.", suffix=".part", dir=dest)
                os.close(fd)
                digest = fetch(args.url, temporary, args.timeout, args.quiet)
                archive = os.path.join(dest, ARCHIVE_NAME)
                os.replace(temporary, archive)
                temporary = archive
            if args.sha256 and digest != args.sha256:
                raise CheckpointError(f"SHA-256 of '{archive}' is {digest}, expected {args.sha256}; "
                                      f"the file is damaged or not the expected release")
            installed = install(archive, dest)
            done = True
        finally:
            if temporary and not (done and args.keep_archive) and os.path.exists(temporary):
                os.remove(temporary)
            if not done:
                remove_empty(created)
    log.info(f"installed {len(installed)} teacher checkpoints into {dest}:")
    for rel, n in installed:
        log.info(f"  {rel} ({n} tensors)")
    return 0


def sha256_arg(text):
    if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
        raise argparse.ArgumentTypeError(f"'{text}' is not a SHA-256 digest (64 hex digits)")
    return text.lower()


def parse_args(argv):
    p = ArgumentParser(description="Download and install mdistiller's CIFAR-100 teacher checkpoints.")
    p.add_argument("--url", default=DEFAULT_URL, help="where to fetch cifar_teachers.tar (default: %(default)s)")
    p.add_argument("--dest", default=DEFAULT_DEST, help="folder to install into (default: the repository's "
                   "download_ckpts/, where training looks for teachers)")
    p.add_argument("--sha256", type=sha256_arg, help="expected SHA-256 of the archive")
    p.add_argument("--archive", help="install from this local cifar_teachers.tar instead of downloading")
    p.add_argument("--keep-archive", action="store_true", help="keep the downloaded tar in --dest")
    p.add_argument("--timeout", type=number(float, above=0), default=60.0,
                   help="network timeout in seconds (default: 60)")
    p.add_argument("--verify", action="store_true", help="only check the installed teachers against the "
                   "SHA-256 recorded at installation (no download)")
    add_debug_flag(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    return run_tool(lambda: run(args), args.debug, args.quiet)
