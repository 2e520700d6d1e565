"""Local faults a real peer must survive: a locked, read-only or full history database.

Each test checks what the user sees (one clear line), the exit code where the
program exits, and that no stored message is lost: a message the receiver
could not store is not acknowledged, so the sender keeps it pending and
delivers it once the fault is gone. Read-only files and full disks need root
(a tmpfs mount, `chattr +i` or a read-only bind mount); without it those
tests are skipped with the reason, or fail with it under CI. A corrupt file at start is covered by
tests/test_cli_e2e.py.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import socket
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import (
    Peer,
    cannot_set_up,
    free_tcp_port,
    mount_tmpfs,
    name_and_id,
    run_cli,
    shown_as,
    strip_ansi,
    unmount,
)

pytestmark = pytest.mark.slow

DB = "chat_history.db"
REMOTE = "127.0.0.2"  # where the network's traffic comes from (the peers use 127.0.0.1)
ARRIVAL = 40.0  # seconds for a held-back message to arrive once the fault is gone


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    """Mount points to undo at teardown (after the peers, which are set up later)."""
    made: list[Path] = []
    yield made
    for target in reversed(made):
        unmount(target)


@pytest.fixture
def peers(mounts: list[Path]) -> Iterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    for peer in started:
        peer.close()


def start(peers: list[Peer], name: str, tmp: Path, **kw: object) -> Peer:
    peer = Peer(name, tmp, None, **kw)  # type: ignore[arg-type]
    peers.append(peer)
    return peer


def small_disk(mounts: list[Path], target: Path, size: str) -> Path:
    """A tmpfs of `size` at `target`, unmounted at teardown."""
    mounts.append(mount_tmpfs(target, size))
    return target


def fill(folder: Path) -> Path:
    """Fill the file system of `folder` until a one-byte write fails; returns the filler."""
    filler = folder / "filler"
    chunks = (1 << 20, 1 << 12, 1)
    with open(filler, "wb", buffering=0) as handle:
        for chunk in chunks:
            block = b"\0" * chunk
            for _ in range(1 << 16):  # bounded: the file system is small
                try:
                    handle.write(block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    with pytest.raises(OSError, match="No space left"), open(folder / "probe", "wb") as probe:
        probe.write(b"\0" * 4096)
        probe.flush()
        os.fsync(probe.fileno())
    (folder / "probe").unlink(missing_ok=True)
    return filler


def cli_args(name: str, data_dir: Path) -> list[str]:
    port = str(free_tcp_port())
    return ["--name", name, "--port", port, "--data-dir", str(data_dir), "--no-discovery"]


def profile_with_history(tmp: Path, peers: list[Peer], text: str) -> Path:
    """A data folder whose history holds `text`, delivered to a peer (run to completion)."""
    bob = start(peers, "Bob", tmp)
    data = tmp / "alice"
    done = run_cli(cli_args("Alice", data), stdin=f"1\n127.0.0.1\n{bob.port}\n{text}\n0\n")
    assert done.returncode == 0, done.stderr
    assert f"Message sent to {bob.addr}" in done.stdout
    bob.expect_text(f"({name_and_id('Alice', data)}): {text}")
    return data


def assert_history_kept(data: Path, text: str) -> None:
    shown = run_cli(cli_args("Alice", data), stdin="3\n\n0\n")
    assert shown.returncode == 0, shown.stderr
    assert f"[delivered]: {text}" in shown.stdout


def assert_one_clear_line(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 1, f"exit code {result.returncode}, stderr {result.stderr!r}"
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def screen(peer: Peer) -> str:
    """What the peer's terminal has shown so far (as read by the test), escapes removed."""
    peer.log.flush()
    return strip_ansi(Path(peer.log.name).read_text(encoding="utf-8", errors="replace"))


def send_garbage(port: int) -> None:
    """One connection of garbage from REMOTE; returns once the peer has closed it."""
    with socket.create_connection(
        ("127.0.0.1", port), timeout=5.0, source_address=(REMOTE, 0)
    ) as sock:
        sock.sendall(b"\xff" * 64)
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(1) == b"", "the peer answered garbage"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def first_message(sender: Peer, receiver: Peer, text: str) -> None:
    """`sender` sends `text` to `receiver` by address, before any fault: it arrives."""
    sender.send_to("127.0.0.1", text, port=receiver.port)
    sender.expect_text(f"Message sent to {receiver.addr}")
    receiver.expect_text(f"Received from {sender.addr} ({shown_as(sender)}): {text}")


def assert_held_back(sender: Peer, receiver: Peer, text: str, problem: str) -> None:
    """`text`, sent during a fault at the receiver, is neither stored nor acknowledged there:
    the receiver shows `problem`, the sender keeps the message pending."""
    sender.send_to("Receiver", text)
    receiver.expect_text("Problem: Cannot store messages from Sender: ")
    receiver.expect_text(problem)
    sender.expect_text(
        f"Message to Receiver ({receiver.addr}) sent but not acknowledged yet: "
        "it stays queued for delivery."
    )
    sender.expect_menu()
    assert f"[pending]: {text}" in sender.history("Receiver")
    receiver.expect_menu()
    assert text not in receiver.history("Sender")  # reading works, writing not
    assert text not in screen(receiver)


def assert_delivered_once_after(sender: Peer, receiver: Peer, text: str, earlier: str) -> None:
    """Once the fault is gone the sender's retry delivers the held-back `text`, once,
    beside the `earlier` message."""
    receiver.expect_text(
        f"Received from {sender.addr} ({shown_as(sender)}): {text}", timeout=ARRIVAL
    )
    sender.expect_text(f"Delivered 1 queued message(s) to Receiver ({receiver.addr}).")
    sender.expect_menu()
    assert f"[delivered]: {text}" in sender.history("Receiver")
    receiver.expect_menu()
    history = receiver.history("Sender")
    assert history.count(text) == 1
    assert earlier in history


# -- a database locked by another process -------------------------------------------------


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[sqlite3.Connection]:
    """Another process's write lock on the history (this test process holds it)."""
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


def test_locked_database_holds_the_message_back_until_released(
    tmp_path: Path, peers: list[Peer]
) -> None:
    receiver = start(peers, "Receiver", tmp_path)
    sender = start(peers, "Sender", tmp_path)
    first_message(sender, receiver, "before the lock")

    with exclusive_lock(receiver.data_dir / DB):
        assert_held_back(sender, receiver, "while locked", "the database is locked")
    # Released: the sender's retry delivers it, once.
    assert_delivered_once_after(sender, receiver, "while locked", "before the lock")
    assert receiver.quit() == 0
    assert sender.quit() == 0


def test_locked_database_at_start_is_one_clear_line(tmp_path: Path, peers: list[Peer]) -> None:
    data = profile_with_history(tmp_path, peers, "kept through the lock")
    with exclusive_lock(data / DB):
        result = run_cli(cli_args("Alice", data), stdin="0\n")
    assert_one_clear_line(result, DB, "the database is locked")
    assert_history_kept(data, "kept through the lock")


# -- a read-only database file --------------------------------------------------------------


def _immutable(path: Path, mounts: list[Path]) -> Callable[[], None]:
    if shutil.which("chattr") is None:
        cannot_set_up("chattr is not installed")
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        cannot_set_up(f"chattr +i is not possible here (needs root): {made.stderr.strip()}")

    def undo() -> None:
        subprocess.run(["chattr", "-i", str(path)], check=True)

    return undo


def _read_only_bind(path: Path, mounts: list[Path]) -> Callable[[], None]:
    bound = subprocess.run(
        ["mount", "--bind", str(path), str(path)], capture_output=True, text=True, check=False
    )
    if bound.returncode != 0:
        cannot_set_up(f"cannot bind-mount the file (needs root): {bound.stderr.strip()}")
    mounts.append(path)
    remounted = subprocess.run(
        ["mount", "-o", "remount,bind,ro", str(path)], capture_output=True, text=True, check=False
    )
    if remounted.returncode != 0:
        cannot_set_up(f"cannot remount the bind read-only: {remounted.stderr.strip()}")

    def undo() -> None:
        subprocess.run(["umount", str(path)], check=True)
        mounts.remove(path)

    return undo


@pytest.mark.parametrize("how", [_immutable, _read_only_bind], ids=["chattr+i", "ro-bind-mount"])
def test_read_only_database_at_start_is_one_clear_line_and_untouched(
    tmp_path: Path,
    mounts: list[Path],
    peers: list[Peer],
    how: Callable[[Path, list[Path]], Callable[[], None]],
) -> None:
    data = profile_with_history(tmp_path, peers, "kept read-only")
    db = data / DB
    before = digest(db)
    undo = how(db, mounts)
    try:
        with pytest.raises(OSError, match=r"Operation not permitted|Read-only file system"):
            db.open("ab").close()  # root really cannot write it now
        result = run_cli(cli_args("Alice", data), stdin="0\n")
        assert digest(db) == before
    finally:
        undo()
    assert result.returncode != 0, "peer_chat started on a read-only history instead of refusing"
    assert_one_clear_line(result, DB, "read-only")
    assert digest(db) == before
    assert_history_kept(data, "kept read-only")


# -- a full disk during a write ---------------------------------------------------------------


def restarted(peers: list[Peer], peer: Peer, tmp: Path) -> Peer:
    """The same peer (folder, port) quit and started again.

    SQLite deletes the write-ahead log on a clean exit and the new run writes
    nothing until a message comes, so once the disk is full, that message's
    write needs new space: without the restart it could reuse the log's pages.
    """
    assert peer.quit() == 0
    return start(peers, peer.name, tmp, data_dir=peer.data_dir, port=peer.port)


def test_full_disk_at_the_receiver_keeps_the_message_pending_at_the_sender(
    tmp_path: Path, mounts: list[Path], peers: list[Peer]
) -> None:
    data = small_disk(mounts, tmp_path / "receiver-disk", "8m")
    receiver = start(peers, "Receiver", tmp_path, data_dir=data)
    sender = start(peers, "Sender", tmp_path)
    first_message(sender, receiver, "before the disk filled")
    receiver = restarted(peers, receiver, tmp_path)

    filler = fill(data)
    assert_held_back(sender, receiver, "while the disk is full", "database or disk is full")

    filler.unlink()
    assert_delivered_once_after(
        sender, receiver, "while the disk is full", "before the disk filled"
    )
    assert receiver.quit() == 0
    assert sender.quit() == 0


def test_full_disk_at_the_sender_refuses_to_send_what_it_cannot_store(
    tmp_path: Path, mounts: list[Path], peers: list[Peer]
) -> None:
    receiver = start(peers, "Receiver", tmp_path)
    data = small_disk(mounts, tmp_path / "sender-disk", "8m")
    sender = start(peers, "Sender", tmp_path, data_dir=data)
    first_message(sender, receiver, "before the disk filled")
    sender = restarted(peers, sender, tmp_path)

    filler = fill(data)
    sender.send_to("Receiver", "cannot be stored")
    sender.expect_text("cannot store it: ")
    sender.expect_text("database or disk is full")
    sender.expect_menu()
    filler.unlink()
    # Space again: the next message goes out, and the one that was refused never did.
    sender.send_to("Receiver", "after the space came back")
    sender.expect_text(f"Message sent to {receiver.addr}")
    receiver.expect_text(
        f"Received from {sender.addr} ({shown_as(sender)}): after the space came back"
    )
    receiver.expect_menu()
    assert "cannot be stored" not in receiver.history("Sender")
    assert "cannot be stored" not in screen(receiver)
    history = sender.history("Receiver")
    assert "cannot be stored" not in history  # nothing could be written, so nothing is claimed
    assert "[delivered]: before the disk filled" in history
    assert "[delivered]: after the space came back" in history
    assert sender.quit() == 0
    assert receiver.quit() == 0


def test_full_disk_puts_no_logging_error_on_the_terminal(
    tmp_path: Path, mounts: list[Path], peers: list[Peer]
) -> None:
    data = small_disk(mounts, tmp_path / "disk", "8m")
    peer = start(peers, "Receiver", tmp_path, data_dir=data)
    filler = fill(data)
    # Anyone on the network can make the peer log a line: here, connections of garbage,
    # enough lines to outgrow the last page of the log file.
    for _ in range(100):
        send_garbage(peer.port)
    peer.choose("5")  # a round trip through the menu: everything printed is on screen
    peer.expect_text("Your ID:")
    peer.expect_menu()
    shown = screen(peer)
    filler.unlink()
    assert "Logging error" not in shown and "Traceback" not in shown, shown[-500:]
    assert peer.quit() == 0
