"""Files on disk for transfers: the source a sender reads, the downloads a receiver writes.

A received file is written to a partial file in the downloads folder, named
after its transfer (`.ID.PEER.part`, hidden, never a name a saved file can
have), and moved into place under its offered name, made safe, only once its
whole SHA-256 has matched. Moving never overwrites: a hard link fails if the
name exists, and the next name is tried (`report (1).pdf`); on a file system
without hard links the name is first claimed with O_EXCL. Every path written
is checked to resolve directly inside the downloads folder, and files are
opened with O_NOFOLLOW, so no offered name and no planted symbolic link can
make a write land anywhere else.

Errors are `FileStoreError` with one line for the user.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from peerchat.limits import MAX_OFFERED_NAME_BYTES
from peerchat.policy.filenames import numbered_name, safe_file_name

READ_BLOCK: Final = 1024 * 1024  # bytes read at a time when hashing
MAX_NUMBERED: Final = 10_000  # `name (N)` alternatives tried before giving up
_NO_LINKS: Final = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV})
_O_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)


class FileStoreError(Exception):
    """A file cannot be read or written; the message is one line for the user."""


def _why(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


# -- the sender's side ---------------------------------------------------------------


@dataclass(frozen=True)
class SourceFile:
    """A file as it is offered: where it is, what it is called, its size and digest."""

    path: Path
    name: str
    size: int
    sha256: bytes


def offered_name(path: Path) -> str:
    """The name a file is offered under: its own, as valid UTF-8, within the wire's bound."""
    raw = os.fsencode(path.name)
    name = raw.decode("utf-8", "replace")
    encoded = name.encode()
    if len(encoded) > MAX_OFFERED_NAME_BYTES:
        name = encoded[:MAX_OFFERED_NAME_BYTES].decode(errors="ignore")
    return name or "file"


def _open_regular(path: Path) -> tuple[int, int]:
    """An open descriptor and the size of `path`, if it is a readable regular file."""
    shown = str(path)
    try:
        # O_NONBLOCK: opening a FIFO would otherwise wait for a writer (forever);
        # it changes nothing for a regular file.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _O_CLOEXEC)
    except FileNotFoundError:
        raise FileStoreError(f"{shown}: no such file") from None
    except IsADirectoryError:
        raise FileStoreError(f"{shown} is a folder, not a file") from None
    except PermissionError:
        raise FileStoreError(f"{shown} cannot be read: permission denied") from None
    except OSError as exc:
        raise FileStoreError(f"{shown} cannot be read: {_why(exc)}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise FileStoreError(f"{shown} is a folder, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise FileStoreError(f"{shown} is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, info.st_size


def inspect_source(path: Path) -> SourceFile:
    """Check that `path` is a readable regular file and compute its SHA-256 (reads it all)."""
    path = Path(os.path.abspath(path))
    fd, size = _open_regular(path)
    digest = hashlib.sha256()
    total = 0
    try:
        while block := os.read(fd, READ_BLOCK):
            digest.update(block)
            total += len(block)
    except OSError as exc:
        raise FileStoreError(f"{path} cannot be read: {_why(exc)}") from None
    finally:
        os.close(fd)
    if total != size:
        raise FileStoreError(f"{path} changed while it was being read")
    return SourceFile(path, offered_name(path), size, digest.digest())


class SourceReader:
    """The sender's open source file, read at offsets."""

    def __init__(self, path: Path, expected_size: int) -> None:
        self.path = path
        self._fd, size = _open_regular(path)
        if size != expected_size:
            os.close(self._fd)
            raise FileStoreError(
                f"{path} changed since it was offered ({size} bytes, offered {expected_size})"
            )
        self._size = size

    def read_at(self, offset: int, length: int) -> bytes:
        try:
            data = os.pread(self._fd, length, offset)
        except OSError as exc:
            raise FileStoreError(f"{self.path} cannot be read: {_why(exc)}") from None
        if len(data) != length:
            raise FileStoreError(f"{self.path} changed since it was offered (it is shorter)")
        return data

    def prefix_digest(self, length: int) -> bytes:
        """SHA-256 of the first `length` bytes (reads them all: run it off the event loop).

        Reads through a descriptor of its own, so the reader may be closed meanwhile.
        """
        fd, _ = _open_regular(self.path)
        digest = hashlib.sha256()
        offset = 0
        try:
            while offset < length:
                block = os.pread(fd, min(READ_BLOCK, length - offset), offset)
                if not block:
                    raise FileStoreError(f"{self.path} changed since it was offered")
                digest.update(block)
                offset += len(block)
        except OSError as exc:
            raise FileStoreError(f"{self.path} cannot be read: {_why(exc)}") from None
        finally:
            os.close(fd)
        return digest.digest()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


# -- the receiver's side -----------------------------------------------------------


class PartialFile:
    """A transfer's partial file, open for writing at offsets."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        try:
            while view:
                written = os.pwrite(self._fd, view, offset)
                view = view[written:]
                offset += written
        except OSError as exc:
            raise FileStoreError(f"cannot write {self.path.name}: {_why(exc)}") from None

    def hash_all(self) -> tuple[int, hashlib._Hash]:
        """How many bytes the file holds and a SHA-256 fed with them (reads it all).

        Reads through a descriptor of its own, so the file may be closed meanwhile.
        """
        digest = hashlib.sha256()
        offset = 0
        try:
            fd = os.open(self.path, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
            try:
                while block := os.pread(fd, READ_BLOCK, offset):
                    digest.update(block)
                    offset += len(block)
            finally:
                os.close(fd)
        except OSError as exc:
            raise FileStoreError(f"cannot read {self.path.name}: {_why(exc)}") from None
        return offset, digest

    def truncate(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)
        except OSError as exc:
            raise FileStoreError(f"cannot write {self.path.name}: {_why(exc)}") from None

    def sync(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise FileStoreError(f"cannot write {self.path.name}: {_why(exc)}") from None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Downloads:
    """The downloads folder: partial files in, verified files out under safe names."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(os.path.abspath(folder))
        self._root: Path | None = None

    def prepare(self) -> Path:
        """Create the folder if needed (private to the user) and check it can be written."""
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except FileExistsError:
            raise FileStoreError(f"downloads folder {self.folder} is a file") from None
        except OSError as exc:
            raise FileStoreError(
                f"cannot create downloads folder {self.folder}: {_why(exc)}"
            ) from None
        if not self.folder.is_dir():
            raise FileStoreError(f"downloads folder {self.folder} is not a folder")
        if not os.access(self.folder, os.W_OK | os.X_OK):
            raise FileStoreError(f"downloads folder {self.folder} is not writable")
        self._root = self.folder.resolve()
        return self._root

    @property
    def root(self) -> Path:
        return self._root if self._root is not None else self.prepare()

    def free_bytes(self) -> int:
        try:
            return shutil.disk_usage(self.root).free
        except OSError as exc:
            raise FileStoreError(f"cannot check free space in {self.folder}: {_why(exc)}") from None

    def _inside(self, name: str) -> Path:
        """root/name, refused unless it names an entry directly inside the folder."""
        root = self.root
        path = root / name
        if path.name != name or path.parent.resolve() != root or name in {"", ".", ".."}:
            raise FileStoreError(f"refused to write {name!r} outside {root}")
        return path

    def partial_path(self, peer_fp: str, transfer_id: str) -> Path:
        return self._inside(f".{transfer_id}.{peer_fp[:16].lower()}.part")

    def _checked(self, path: Path) -> Path:
        """`path` itself, refused unless it is an entry directly inside the folder."""
        checked = self._inside(path.name)
        if Path(os.path.abspath(path)).parent.resolve() != self.root:
            raise FileStoreError(f"refused to write {str(path)!r} outside {self.root}")
        return checked

    def open_partial(self, path: Path, *, fresh: bool) -> PartialFile:
        """Open (create if missing) a partial file; `fresh` insists it did not exist."""
        path = self._checked(path)
        flags = os.O_RDWR | os.O_CREAT | _O_NOFOLLOW | _O_CLOEXEC | (os.O_EXCL if fresh else 0)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            raise FileStoreError(f"{path.name} already exists in {self.root}") from None
        except OSError as exc:
            raise FileStoreError(f"cannot create a file in {self.root}: {_why(exc)}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise FileStoreError(f"{path.name} in {self.root} is not a regular file")
        except BaseException:
            os.close(fd)
            raise
        return PartialFile(path, fd)

    def save(self, partial: PartialFile, offered: str) -> Path:
        """Move a verified partial file into place under the offered name, made safe.

        Never overwrites: `name`, then `name (1)`, `name (2)`, ... The data is
        flushed to disk first, so the name never appears over a file that a
        power cut could still truncate.
        """
        partial.sync()
        base = safe_file_name(offered)
        for number in range(MAX_NUMBERED):
            target = self._inside(numbered_name(base, number))
            try:
                self._claim(partial.path, target)
            except FileExistsError:
                continue
            partial.close()
            self._unlink(partial.path)
            self._sync_folder()
            return target
        raise FileStoreError(f"no free name for {base} in {self.root}")

    def _claim(self, partial: Path, target: Path) -> None:
        try:
            os.link(partial, target, follow_symlinks=False)
            return
        except FileExistsError:
            raise
        except OSError as exc:
            if exc.errno not in _NO_LINKS:
                raise FileStoreError(f"cannot save {target.name}: {_why(exc)}") from None
        # No hard links here: claim the name first, then move the file over our own claim.
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, 0o600)
        except FileExistsError:
            raise
        except OSError as exc:
            raise FileStoreError(f"cannot save {target.name}: {_why(exc)}") from None
        os.close(fd)
        try:
            os.replace(partial, target)
        except OSError as exc:
            self._unlink(target)
            raise FileStoreError(f"cannot save {target.name}: {_why(exc)}") from None

    def discard(self, path: Path) -> None:
        """Remove a partial file (it may be gone already)."""
        self._unlink(self._checked(path))

    @staticmethod
    def _unlink(path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise FileStoreError(f"cannot remove {path}: {_why(exc)}") from None

    def _sync_folder(self) -> None:
        try:
            fd = os.open(self.root, os.O_RDONLY | _O_CLOEXEC)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
