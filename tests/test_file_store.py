"""Files on disk for transfers, in a temporary folder: partial files, saving, and refusals."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest

from peerchat.net.file_store import (
    Downloads,
    FileStoreError,
    SourceReader,
    inspect_source,
    offered_name,
)

FP = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567ABCDEFGHIJKLMNOPQRST"
TID = "cd" * 16


@pytest.fixture
def downloads(tmp_path: Path) -> Downloads:
    store = Downloads(tmp_path / "downloads")
    store.prepare()
    return store


def _partial_with(downloads: Downloads, data: bytes, tid: str = TID) -> tuple[Path, object]:
    path = downloads.partial_path(FP, tid)
    partial = downloads.open_partial(path, fresh=True)
    partial.write_at(0, data)
    return path, partial


def test_source_is_checked_and_hashed(tmp_path: Path) -> None:
    path = tmp_path / "report.pdf"
    path.write_bytes(b"%PDF" + bytes(5000))
    source = inspect_source(path)
    assert source.name == "report.pdf"
    assert source.size == 5004
    assert source.sha256 == hashlib.sha256(path.read_bytes()).digest()
    assert source.path.is_absolute()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "is a folder, not a file"),
        (lambda p: os.mkfifo(p), "not a regular file"),
    ],
    ids=["missing", "folder", "fifo"],
)
def test_a_path_that_is_not_a_readable_regular_file_is_one_clear_line(
    tmp_path: Path, make: object, message: str
) -> None:
    path = tmp_path / "thing"
    make(path)  # type: ignore[operator]
    with pytest.raises(FileStoreError, match=message) as error:
        inspect_source(path)
    assert "\n" not in str(error.value)


def test_a_socket_is_not_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        with pytest.raises(FileStoreError, match=r"cannot be read|not a regular file"):
            inspect_source(path)


def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"x")
    path.chmod(0)
    if os.geteuid() != 0:
        with pytest.raises(FileStoreError, match="permission denied"):
            inspect_source(path)
        return
    # Root reads anything: try as an unprivileged user, in a forked child.
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.setgid(65534)
            os.setuid(65534)
            inspect_source(path)
            os.write(write_end, b"read it")
        except FileStoreError as exc:
            os.write(write_end, str(exc).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as answer:
        said = answer.read().decode()
    assert said == f"{path} cannot be read: permission denied"


def test_offered_names_are_valid_utf8_even_from_undecodable_file_names(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/caf\xe9.txt"
    assert offered_name(Path(os.fsdecode(raw))) == "caf\ufffd.txt"
    assert len(offered_name(Path("a" * 4000)).encode()) == 1024


def test_source_reader_notices_a_file_that_changed(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(bytes(100))
    with pytest.raises(FileStoreError, match="changed since it was offered"):
        SourceReader(path, 99)
    reader = SourceReader(path, 100)
    assert reader.read_at(90, 10) == bytes(10)
    assert reader.prefix_digest(50) == hashlib.sha256(bytes(50)).digest()
    path.write_bytes(bytes(40))  # truncated behind our back
    with pytest.raises(FileStoreError, match="shorter"):
        reader.read_at(90, 10)
    reader.close()


def test_partial_file_is_hidden_and_renamed_into_place_only_on_save(downloads: Downloads) -> None:
    path, partial = _partial_with(downloads, b"hello world")
    assert path.parent == downloads.root and path.name.startswith(".")
    assert os.stat(path).st_mode & 0o777 == 0o600
    size, digest = partial.hash_all()  # type: ignore[attr-defined]
    assert (size, digest.digest()) == (11, hashlib.sha256(b"hello world").digest())
    saved = downloads.save(partial, "greeting.txt")  # type: ignore[arg-type]
    assert saved == downloads.root / "greeting.txt"
    assert saved.read_bytes() == b"hello world"
    assert not path.exists()
    assert sorted(os.listdir(downloads.root)) == ["greeting.txt"]


def test_an_existing_name_is_never_overwritten(downloads: Downloads) -> None:
    (downloads.root / "report.pdf").write_bytes(b"mine")
    (downloads.root / "report (1).pdf").write_bytes(b"mine too")
    _, partial = _partial_with(downloads, b"theirs")
    saved = downloads.save(partial, "report.pdf")  # type: ignore[arg-type]
    assert saved.name == "report (2).pdf"
    assert (downloads.root / "report.pdf").read_bytes() == b"mine"
    assert (downloads.root / "report (1).pdf").read_bytes() == b"mine too"
    assert saved.read_bytes() == b"theirs"


def test_a_planted_symlink_is_neither_followed_nor_replaced(
    downloads: Downloads, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"untouched")
    (downloads.root / "report.pdf").symlink_to(outside)
    _, partial = _partial_with(downloads, b"payload")
    saved = downloads.save(partial, "report.pdf")  # type: ignore[arg-type]
    assert saved.name == "report (1).pdf"
    assert outside.read_bytes() == b"untouched"
    assert (downloads.root / "report.pdf").is_symlink()
    # A symlink planted where the partial file goes is not written through either.
    target = downloads.partial_path(FP, "ef" * 16)
    target.symlink_to(outside)
    with pytest.raises(FileStoreError):
        downloads.open_partial(target, fresh=False)
    assert outside.read_bytes() == b"untouched"


def test_hostile_names_are_saved_inside_the_folder(downloads: Downloads, tmp_path: Path) -> None:
    for number, name in enumerate(["../../escape.txt", "/etc/passwd", "..", "CON", ".profile"]):
        _, partial = _partial_with(downloads, b"x", tid=f"{number:032x}")
        saved = downloads.save(partial, name)  # type: ignore[arg-type]
        assert saved.parent == downloads.root
    assert sorted(os.listdir(downloads.root)) == [
        "_CON",
        "escape.txt",
        "file",
        "passwd",
        "profile",
    ]
    assert sorted(os.listdir(tmp_path)) == ["downloads"]


def test_paths_outside_the_folder_are_refused(downloads: Downloads, tmp_path: Path) -> None:
    with pytest.raises(FileStoreError, match="outside"):
        downloads.open_partial(downloads.root / ".." / "x.part", fresh=True)
    assert not (tmp_path / "x.part").exists()
    with pytest.raises(FileStoreError, match="outside"):
        downloads.discard(Path(".."))


def test_discard_removes_the_partial_file(downloads: Downloads) -> None:
    path, partial = _partial_with(downloads, b"abc")
    partial.close()  # type: ignore[attr-defined]
    downloads.discard(path)
    downloads.discard(path)  # already gone: fine
    assert os.listdir(downloads.root) == []


def test_a_downloads_folder_that_is_a_file_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(FileStoreError, match=r"is a file|not a folder"):
        Downloads(tmp_path / "file").prepare()
    with pytest.raises(FileStoreError, match="cannot create"):
        Downloads(tmp_path / "file" / "sub").prepare()


def test_free_space_is_reported(downloads: Downloads) -> None:
    assert downloads.free_bytes() > 0
