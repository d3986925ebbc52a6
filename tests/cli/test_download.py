"""tools/download_ckpts.py against a local HTTP server (127.0.0.1, a free port) serving
small teacher archives built in tmp_path."""

import functools
import hashlib
import io
import os
import socket
import tarfile
import threading
from fractions import Fraction
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from mdistiller.cli import download
from mdistiller.cli.download import main
from mdistiller.models import build_model
from mdistiller.runs.checkpoint import extract_model_state, load_checkpoint

RESNET56 = "cifar_teachers/resnet56_vanilla/ckpt_epoch_240.pth"
VGG13 = "cifar_teachers/resnet8_vanilla/ckpt_epoch_240.pth"  # a small stand-in for a second teacher


@pytest.fixture(autouse=True)
def small_teacher_list(monkeypatch):
    """The archive's expected teachers: resnet56 and, standing in for the big ones, resnet8."""
    monkeypatch.setattr(download, "TEACHERS", ("resnet56", "resnet8"))


def checkpoint_bytes(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def teacher(seed, name=None):
    """A checkpoint of zoo model ``name`` (resnet56 for seed 0, resnet8 otherwise) in
    mdistiller's layout, with seeded random weights."""
    torch.manual_seed(seed)
    model = build_model(name or ("resnet56" if seed == 0 else "resnet8"), "cifar", 100)
    return {"model": model.state_dict(), "epoch": 240, "accuracy": torch.tensor(72.3)}


def build_tar(path, files, dirs=("cifar_teachers",), links=()):
    """A tar with ``dirs``, regular ``files`` ({name: bytes}) and symlinks ({name: target})."""
    with tarfile.open(path, "w") as tar:
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in dict(links).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


class QuietHandler(SimpleHTTPRequestHandler):
    """Serves the folder; ``/cut.tar`` promises 100000 bytes and hangs up after 1000."""

    def do_GET(self):
        if self.path != "/cut.tar":
            return super().do_GET()
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"\0" * 1000)
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """``(folder, base URL)`` of an HTTP server on 127.0.0.1 serving ``folder``."""
    root = tmp_path / "srv"
    root.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture
def good_archive(server):
    root, url = server
    objs = {RESNET56: teacher(0), VGG13: teacher(1)}
    path = build_tar(root / "cifar_teachers.tar", {k: checkpoint_bytes(v) for k, v in objs.items()},
                     dirs=("cifar_teachers", "cifar_teachers/resnet56_vanilla", "cifar_teachers/resnet8_vanilla"))
    return f"{url}/cifar_teachers.tar", path, objs


def one_line_error(capsys):
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_downloads_checks_and_installs_teachers(good_archive, tmp_path, capsys):
    url, path, objs = good_archive
    dest = tmp_path / "download_ckpts"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert main(["--url", url, "--dest", str(dest), "--sha256", digest.upper()]) == 0
    out, err = capsys.readouterr()
    assert "100%" in err  # the progress bar ran to the end
    assert "installed 2 teacher checkpoints" in out and RESNET56 in out and VGG13 in out
    for name, obj in objs.items():
        installed = dest / name
        state = extract_model_state(load_checkpoint(str(installed)))  # what training will read
        assert state.keys() == obj["model"].keys()
        assert all(torch.equal(state[k], v) for k, v in obj["model"].items())
    # nothing else is left: no archive, no partial download, no staging folder
    assert sorted(os.listdir(dest)) == ["cifar_teachers"]


def test_keep_archive_and_install_from_a_local_copy(good_archive, tmp_path, capsys):
    url, path, _ = good_archive
    first, second = tmp_path / "a", tmp_path / "b"
    assert main(["--url", url, "--dest", str(first), "--quiet", "--keep-archive"]) == 0
    kept = first / "cifar_teachers.tar"
    assert kept.read_bytes() == path.read_bytes()
    # --archive needs no network and leaves the given file alone
    assert main(["--archive", str(kept), "--dest", str(second), "--url", "http://127.0.0.1:9/none"]) == 0
    assert kept.exists() and (second / RESNET56).read_bytes() == (first / RESNET56).read_bytes()
    capsys.readouterr()


def test_http_404_is_one_line(server, tmp_path, capsys):
    _, url = server
    dest = tmp_path / "dest"
    assert main(["--url", f"{url}/missing.tar", "--dest", str(dest), "--quiet"]) != 0
    assert "404" in one_line_error(capsys)
    assert not dest.exists()  # nothing created (#21)


def test_connection_refused_is_one_line(tmp_path, capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "dest"
    assert main(["--url", f"http://127.0.0.1:{port}/cifar_teachers.tar", "--dest", str(dest), "--quiet",
                 "--timeout", "5"]) != 0
    assert "cannot download" in one_line_error(capsys)
    assert not dest.exists()  # nothing created (#21)


def test_connection_cut_short_is_one_line(server, tmp_path, capsys):
    _, url = server
    dest = tmp_path / "dest"
    assert main(["--url", f"{url}/cut.tar", "--dest", str(dest), "--quiet"]) != 0
    assert "stopped after 1000 of 100000 bytes" in one_line_error(capsys)
    assert not dest.exists()  # nothing created (#21)


def truncated(path):
    """Cut the file in the middle of its last member's data (as an interrupted copy would)."""
    with tarfile.open(path) as tar:
        last = tar.getmembers()[-1]
    path.write_bytes(path.read_bytes()[: last.offset_data + last.size // 2])


GOOD = {VGG13: checkpoint_bytes(teacher(1))}  # a good member beside the bad one must not be installed
BAD_ARCHIVES = {
    "truncated tar": ({RESNET56: checkpoint_bytes(teacher(0))}, truncated, "not a valid tar"),
    "not a tar": ({}, lambda p: p.write_bytes(b"<html>not found</html>" * 50), "not a valid tar"),
    "corrupt checkpoint": ({**GOOD, RESNET56: b"\x00garbage" * 64}, None, "does not load"),
    "no model entry": ({**GOOD, RESNET56: checkpoint_bytes({"state_dict": teacher(0)["model"]})}, None, "'model'"),
    "needs unsafe unpickling": ({**GOOD, RESNET56: checkpoint_bytes({**teacher(0), "lr": Fraction(1, 3)})}, None,
                                "does not load"),
    "no checkpoints": ({}, None, "no checkpoints"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARCHIVES))
def test_bad_archive_is_refused_with_one_line(case, server, tmp_path, capsys):
    files, damage, message = BAD_ARCHIVES[case]
    root, url = server
    path = build_tar(root / "cifar_teachers.tar", files)
    if damage:
        damage(path)
    dest = tmp_path / "dest"
    assert main(["--url", f"{url}/cifar_teachers.tar", "--dest", str(dest), "--quiet"]) != 0
    assert message in one_line_error(capsys)
    assert not dest.exists()  # not even the good checkpoint, nor the folder (#21)


def test_sha256_mismatch_is_refused(good_archive, tmp_path, capsys):
    url, _, _ = good_archive
    dest = tmp_path / "dest"
    assert main(["--url", url, "--dest", str(dest), "--quiet", "--sha256", "0" * 64]) != 0
    assert "SHA-256" in one_line_error(capsys)
    assert not dest.exists()  # nothing created (#21)


UNSAFE = {
    "parent path": {"files": {"cifar_teachers/../../evil.pth": b"x"}},
    "absolute path": {"files": {"/tmp/mdistiller_evil.pth": b"x"}},
    "outside the teacher folder": {"files": {"other/evil.pth": b"x"}},
    "not a checkpoint": {"files": {"cifar_teachers/run.sh": b"x"}},
    "symlink": {"files": {}, "links": {"cifar_teachers/evil.pth": "/etc/passwd"}},
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_member_is_refused(case, server, tmp_path, capsys):
    root, url = server
    spec = UNSAFE[case]
    build_tar(root / "cifar_teachers.tar", {RESNET56: checkpoint_bytes(teacher(0)), **spec["files"]},
              links=spec.get("links", ()))
    dest = tmp_path / "deep" / "dest"
    assert main(["--url", f"{url}/cifar_teachers.tar", "--dest", str(dest), "--quiet"]) != 0
    line = one_line_error(capsys)
    assert next(iter({**spec["files"], **spec.get("links", {})})) in line
    assert not dest.exists()  # nothing created (#21)
    assert not any(os.path.exists(p) for p in (tmp_path / "evil.pth", tmp_path / "deep" / "evil.pth",
                                                "/tmp/mdistiller_evil.pth"))


def test_write_failure_is_one_line(good_archive, tmp_path, capsys):
    url, _, _ = good_archive
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["--url", url, "--dest", str(blocker / "dest"), "--quiet"]) != 0
    assert "cannot write" in one_line_error(capsys)


def test_bad_sha256_argument_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--sha256", "abc"])
    assert e.value.code == 2
    assert "SHA-256" in capsys.readouterr().err


def test_layout_and_models_are_verified_and_sha256_recorded(good_archive, server, tmp_path, capsys):
    url, _, objs = good_archive
    root, base = server
    dest = tmp_path / "dest"
    # a teacher missing, or one that does not fit its zoo model, refuses the whole archive
    build_tar(root / "one.tar", {RESNET56: checkpoint_bytes(objs[RESNET56])})
    assert main(["--url", f"{base}/one.tar", "--dest", str(dest), "--quiet"]) == 2
    assert "lacks cifar_teachers/resnet8_vanilla/ckpt_epoch_240.pth" in one_line_error(capsys)
    swapped = {RESNET56: checkpoint_bytes(objs[VGG13]), VGG13: checkpoint_bytes(objs[VGG13])}
    build_tar(root / "swapped.tar", swapped)
    assert main(["--url", f"{base}/swapped.tar", "--dest", str(dest), "--quiet"]) == 2
    assert "does not fit the zoo's resnet56" in one_line_error(capsys)
    assert not dest.exists()  # nothing created (#21)
    # installed: the digests are recorded, --verify passes, and a corrupted copy is caught
    assert main(["--url", url, "--dest", str(dest), "--quiet"]) == 0
    sums = (dest / "cifar_teachers" / "SHA256SUMS").read_text().splitlines()
    assert sorted(line.split("  ")[1] for line in sums) == sorted(p[len("cifar_teachers/"):] for p in objs)
    assert main(["--dest", str(dest), "--verify"]) == 0
    assert "2 teacher checkpoints" in capsys.readouterr().out
    installed = dest / RESNET56
    data = bytearray(installed.read_bytes())
    data[len(data) // 2] ^= 0xFF
    installed.write_bytes(bytes(data))
    assert main(["--dest", str(dest), "--verify"]) == 2
    assert "does not match the SHA-256" in one_line_error(capsys)
    assert installed.exists()  # nothing is deleted


def test_expected_teachers_are_the_reference_layout(monkeypatch):
    """The archive must hold exactly the published teachers of the reference's
    cifar_models.json (tests/data/cifar_models.json.gz), at its paths."""
    from tests.conftest import load_reference

    monkeypatch.setattr(download, "TEACHERS", download.CIFAR_TEACHERS)
    reference = {f"cifar_teachers/{v['mdistiller_teacher_ckpt']}": k for k, v in load_reference("cifar_models").items()
                 if v["mdistiller_teacher_ckpt"]}
    assert download.expected_teachers() == reference
