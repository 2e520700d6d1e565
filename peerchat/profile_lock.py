"""One profile, one process: an exclusive lock on a file in the data folder.

Two processes on one profile would share one identity under two addresses
(the other peers' lists would flip between them on every beacon) and write
one database. The lock is the operating system's (flock), held for the life
of the process and released by the kernel however the process ends, so a
killed run never leaves a stale lock. The file holds the holder's pid, read
only to name the running process in the refusal.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from peerchat.errors import PeerChatError

LOCK_FILE = "peer_chat.lock"


class ProfileInUseError(PeerChatError):
    """The profile is held by another running process."""


class ProfileLock:
    """Held from `acquire` until `release` or the end of the process."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise PeerChatError(
                f"Cannot lock the data folder {self.data_dir}: {exc.strerror or exc}."
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "another process"
            raise ProfileInUseError(
                f"Data folder {self.data_dir} is in use by peer_chat ({who}): "
                "one profile runs once; quit that one or use another --data-dir."
            ) from None
        except OSError as exc:
            os.close(fd)
            raise PeerChatError(
                f"Cannot lock the data folder {self.data_dir}: {exc.strerror or exc}."
            ) from None
        self._fd = fd
        _write_pid(fd, os.getpid())

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the lock
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _write_pid(fd: int, pid: int) -> None:
    """Best effort: the pid only names the holder in another run's refusal."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{pid}\n".encode("ascii"), 0)
    except OSError:
        pass
