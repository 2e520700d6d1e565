"""File transfer between real peer_chat processes, driven through options 11 and 12.

A transfer on loopback is too fast to cut "at about half" by timing alone,
so the tests freeze the other side with SIGSTOP once the partial file holds
half the bytes, kill the side under test with SIGKILL, and let the frozen
side go on (SIGCONT) before the killed one is started again on the same
profile. "It did not start over" is checked two ways: the partial file never
shrinks below what it held at the kill (a restart from zero empties it first),
and the restarted receiver writes about the missing half, not the whole file
(/proc/PID/io, write bytes).
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Peer, free_udp_port, shown_as, strip_ansi

pytestmark = pytest.mark.slow

SIZE = 100 * 1024 * 1024  # "100 MB": 100 MiB, shown as 105 MB
SHOWN_SIZE = "105 MB"
WAIT = 120.0


@pytest.fixture
def discovery_port() -> int:
    return free_udp_port()


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    for peer in started:
        peer.close()


def start(peers: list[Peer], name: str, tmp: Path, dport: int | None, **kw: object) -> Peer:
    peer = Peer(name, tmp, dport, **kw)  # type: ignore[arg-type]
    peers.append(peer)
    return peer


def make_file(path: Path, size: int = SIZE) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as out:
        written = 0
        while written < size:
            block = os.urandom(min(1024 * 1024, size - written))
            digest.update(block)
            written += out.write(block)
    return digest.hexdigest()


def digest_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def send_file(sender: Peer, to: str, path: Path) -> None:
    sender.choose("11")
    sender.answer("Enter recipient's IP:", to)
    sender.answer("Enter the file's path:", str(path))


def answer_first_offer(receiver: Peer, name: str, sender: str, accept: bool = True) -> None:
    receiver.choose("12")
    receiver.expect_text("Incoming file offers:")
    receiver.answer("Offer to answer (number, empty to go back):", "1")
    receiver.answer(f"Accept or decline {name} from {sender}? (a/d):", "a" if accept else "d")


def partial_files(peer: Peer) -> list[Path]:
    return list((peer.data_dir / "downloads").glob(".*.part"))


def partial_size(peer: Peer) -> int:
    return sum(p.stat().st_size for p in partial_files(peer))


def wait_partial(peer: Peer, at_least: int, timeout: float = WAIT) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        size = partial_size(peer)
        if size >= at_least:
            return size
        time.sleep(0.005)  # a file grows without an event to await
    raise AssertionError(f"{peer.name}'s partial file never reached {at_least} bytes")


def watch_never_below(peer: Peer, floor: int, until_saved: Path, timeout: float = WAIT) -> None:
    """Until the file is saved, the partial file (when it exists) never holds less than floor."""
    deadline = time.monotonic() + timeout
    while not until_saved.exists():
        parts = partial_files(peer)
        for part in parts:
            try:
                size = part.stat().st_size
            except FileNotFoundError:
                continue  # renamed into place just now
            assert size >= floor, f"the partial file went back to {size} bytes: it started over"
        assert time.monotonic() < deadline, "the file was never saved"
        time.sleep(0.002)


def written_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/io", encoding="ascii") as io:
        for line in io:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    raise AssertionError("no wchar")


def alice_and_bob(peers: list[Peer], tmp: Path, dport: int) -> tuple[Peer, Peer]:
    alice = start(peers, "Alice", tmp, dport)
    bob = start(peers, "Bob", tmp, dport)
    alice.expect_text(f"Discovered peer Bob at {bob.addr}")
    bob.expect_text(f"Discovered peer Alice at {alice.addr}")
    return alice, bob


def test_a_100_mb_file_arrives_identical(
    tmp_path: Path, discovery_port: int, peers: list[Peer]
) -> None:
    alice, bob = alice_and_bob(peers, tmp_path, discovery_port)
    source = tmp_path / "big.bin"
    digest = make_file(source)
    send_file(alice, "Bob", source)
    alice.expect_text("Offered big.bin to Bob: it is sent once Bob accepts.")
    bob.expect_text(f"Alice offers big.bin ({SHOWN_SIZE}): option 12 to accept or decline.")
    assert list((bob.data_dir / "downloads").iterdir()) == []  # nothing before the answer
    answer_first_offer(bob, "big.bin", "Alice")
    saved = bob.data_dir / "downloads" / "big.bin"
    bob.expect_text(f"Received big.bin from Alice ({SHOWN_SIZE}): saved as {saved}", WAIT)
    alice.expect_text(f"Sent big.bin to Bob ({SHOWN_SIZE}).", WAIT)
    assert digest_of(saved) == digest
    assert partial_files(bob) == []


def test_receiver_killed_at_half_resumes_where_it_stopped(
    tmp_path: Path, discovery_port: int, peers: list[Peer]
) -> None:
    alice, bob = alice_and_bob(peers, tmp_path, discovery_port)
    source = tmp_path / "big.bin"
    digest = make_file(source)
    send_file(alice, "Bob", source)
    bob.expect_text("Alice offers big.bin")
    answer_first_offer(bob, "big.bin", "Alice")
    wait_partial(bob, SIZE // 2)
    os.kill(alice.child.pid, signal.SIGSTOP)  # nothing more arrives while Bob dies
    try:
        have = partial_size(bob)
        bob.kill()
    finally:
        os.kill(alice.child.pid, signal.SIGCONT)
    assert SIZE // 2 <= have < SIZE
    bob = start(peers, "Bob", tmp_path, discovery_port, port=bob.port, data_dir=bob.data_dir)
    saved = bob.data_dir / "downloads" / "big.bin"
    watch_never_below(bob, have, saved)
    bob.expect_text(f"Received big.bin from Alice ({SHOWN_SIZE}): saved as {saved}", WAIT)
    assert digest_of(saved) == digest
    assert written_bytes(bob.child.pid) < SIZE - have + 16 * 1024 * 1024  # only what was missing
    alice.expect_text("Sent big.bin to Bob", WAIT)


def test_sender_killed_at_half_resumes_where_it_stopped(
    tmp_path: Path, discovery_port: int, peers: list[Peer]
) -> None:
    alice, bob = alice_and_bob(peers, tmp_path, discovery_port)
    source = tmp_path / "big.bin"
    digest = make_file(source)
    send_file(alice, "Bob", source)
    bob.expect_text("Alice offers big.bin")
    answer_first_offer(bob, "big.bin", "Alice")
    wait_partial(bob, SIZE // 2)
    os.kill(bob.child.pid, signal.SIGSTOP)  # Bob keeps what he has while Alice dies
    try:
        alice.kill()
        have = partial_size(bob)
    finally:
        os.kill(bob.child.pid, signal.SIGCONT)
    assert SIZE // 2 <= have < SIZE
    alice = start(
        peers, "Alice", tmp_path, discovery_port, port=alice.port, data_dir=alice.data_dir
    )
    saved = bob.data_dir / "downloads" / "big.bin"
    watch_never_below(bob, have, saved)
    bob.expect_text(f"Received big.bin from Alice ({SHOWN_SIZE}): saved as {saved}", WAIT)
    alice.expect_text(f"Sent big.bin to Bob ({SHOWN_SIZE}).", WAIT)
    assert digest_of(saved) == digest


def test_decline(tmp_path: Path, discovery_port: int, peers: list[Peer]) -> None:
    alice, bob = alice_and_bob(peers, tmp_path, discovery_port)
    source = tmp_path / "unwanted.exe"
    make_file(source, 10_000)
    send_file(alice, "Bob", source)
    bob.expect_text("Alice offers unwanted.exe (10 kB): option 12 to accept or decline.")
    answer_first_offer(bob, "unwanted.exe", "Alice", accept=False)
    bob.expect_text("Declined unwanted.exe from Alice.")
    alice.expect_text("Bob declined unwanted.exe.")
    assert list((bob.data_dir / "downloads").iterdir()) == []
    bob.choose("12")
    bob.expect_text("No file offers waiting.")


def test_an_offer_to_an_offline_peer_is_delivered_when_it_returns(
    tmp_path: Path, discovery_port: int, peers: list[Peer]
) -> None:
    alice, bob = alice_and_bob(peers, tmp_path, discovery_port)
    alice.send_to("Bob", "hello")  # a session: Bob's key is now known (pinned) to Alice
    alice.expect_text(f"Message sent to {bob.addr}")
    bob.quit()
    alice.expect_text(f"Peer Bob at {bob.addr} is offline")
    source = tmp_path / "later.zip"
    digest = make_file(source, 3_000_000)
    send_file(alice, "Bob", source)
    alice.expect_text("Bob is not connected: the offer of later.zip waits")
    alice.quit()  # the offer waits on disk too
    alice = start(
        peers, "Alice", tmp_path, discovery_port, port=alice.port, data_dir=alice.data_dir
    )
    bob = start(peers, "Bob", tmp_path, discovery_port, port=bob.port, data_dir=bob.data_dir)
    bob.expect_text("Alice offers later.zip (3.0 MB): option 12 to accept or decline.", WAIT)
    answer_first_offer(bob, "later.zip", "Alice")
    saved = bob.data_dir / "downloads" / "later.zip"
    bob.expect_text(f"saved as {saved}", WAIT)
    assert digest_of(saved) == digest


def test_chat_flows_during_a_transfer(
    tmp_path: Path, discovery_port: int, peers: list[Peer]
) -> None:
    alice, bob = alice_and_bob(peers, tmp_path, discovery_port)
    source = tmp_path / "huge.bin"
    size = 1024 * 1024 * 1024  # long enough to talk over
    make_file(source, size)
    send_file(alice, "Bob", source)
    bob.expect_text("Alice offers huge.bin")
    answer_first_offer(bob, "huge.bin", "Alice")
    wait_partial(bob, size // 20)
    alice.send_to("Bob", "still here 0")
    alice.expect_text(f"Message sent to {bob.addr}")  # acknowledged within the 5 s wait
    during = partial_size(bob)
    assert 0 < during < size, "the transfer ended before the chat message was acknowledged"
    for number in range(1, 5):
        alice.send_to("Bob", f"still here {number}")
        alice.expect_text(f"Message sent to {bob.addr}")
    for number in range(5):
        bob.expect_text(f"Received from {alice.addr} ({shown_as(alice)}): still here {number}")
    bob.expect_text("Received huge.bin from Alice", WAIT)
    history = strip_ansi(bob.history("Alice"))
    assert "still here 4" in history
