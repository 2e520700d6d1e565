"""Real peer_chat processes with the legacy flags, against the emulated legacy programs.

Everything runs on loopback: peers listen on 127.0.0.1, discovery and the
original's beacons use the loopback broadcast address and a discovery port
chosen per test.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.legacy_emulators import (
    BeaconListener,
    LegacyListener,
    OriginalSender,
    PlainSender,
    send_original_beacon,
    send_raw,
)
from tests.support import (
    LOOPBACK_BROADCAST,
    Peer,
    free_tcp_port,
    free_udp_port,
    run_cli,
    shown_as,
    strip_ansi,
    wait_for_log,
)

pytestmark = pytest.mark.slow

HOST = "127.0.0.1"


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    for peer in started:
        peer.close()


@pytest.fixture
def listeners() -> Iterator[list[LegacyListener]]:
    made: list[LegacyListener] = []
    yield made
    for listener in made:
        listener.close()


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on (from /proc: its sockets in LISTEN state)."""
    inodes: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def send_legacy(peer: Peer, target: str, text: str, port: int | None = None) -> None:
    peer.choose("8")
    peer.answer("Enter legacy peer's IP (or L-number from option 2):", target)
    if port is not None:
        peer.answer("Enter legacy peer's port number:", str(port))
    peer.answer("Enter your message:", text)


def test_plain_programs_and_the_original_both_ways(
    tmp_path: Path, peers: list[Peer], listeners: list[LegacyListener]
) -> None:
    key = Fernet.generate_key()
    key_file = tmp_path / "secret.key"
    key_file.write_bytes(key)
    dport = free_udp_port()
    legacy_port = free_tcp_port()
    original_ears = BeaconListener(key, dport)
    try:
        alice = Peer(
            "Alice",
            tmp_path,
            dport,
            extra=[
                "--legacy-port",
                str(legacy_port),
                "--legacy-key",
                str(key_file),
                "--legacy-team",
                "TeamA",
            ],
        )
        peers.append(alice)
        # The original hears Alice announced at her legacy port.
        _, name, port = original_ears.next_beacon()
        assert (name, port) == ("Alice", legacy_port)
    finally:
        original_ears.close()
    alice.expect_text(f"Legacy port {legacy_port} open")

    # A plain one-shot program writes; the line says where it listens, the socket where it is.
    PlainSender("10.9.9.9:7000", "Team7").send(HOST, legacy_port, "hello Alice")
    alice.expect_text("Received from 127.0.0.1:7000 (Team7) [unencrypted]: hello Alice")

    # The original announces itself and writes with its token.
    original = LegacyListener(read_once=True)
    plain = LegacyListener()
    listeners += [original, plain]
    send_original_beacon(key, "Bob", original.port, LOOPBACK_BROADCAST, dport)
    alice.expect_text(
        f"Discovered legacy peer Bob at 127.0.0.1:{original.port} [unencrypted, unverified]"
    )
    OriginalSender(key, f"127.0.1.1:{original.port}").send(HOST, legacy_port, "hi from chat.py")
    alice.expect_text(
        f"Received from 127.0.0.1:{original.port} (CryptoCrafters) [unencrypted]: hi from chat.py"
    )

    alice.choose("2")
    alice.expect_text("No connected peers.")
    alice.expect_text("Legacy peers (unencrypted, unverified):")
    alice.expect_menu()
    table = strip_ansi(str(alice.child.before))
    rows = {line.split()[2]: line for line in table.splitlines() if re.match(r"L\d+ ", line)}
    assert "original (shared key)" in rows[f"127.0.0.1:{original.port}"]
    assert "Team7" in rows["127.0.0.1:7000"]
    number = next(line.split()[0] for line in table.splitlines() if "CryptoCrafters" in line)

    # Answers: the original's token to the original, plain text to a plain program.
    send_legacy(alice, number, "hello chat.py")
    alice.expect_text(f"Message sent to 127.0.0.1:{original.port} (unencrypted, not acknowledged)")
    (got,) = original.wait()
    assert (
        Fernet(key).decrypt(got.data) == f"{got.peer_ip}:{legacy_port} TeamA hello chat.py".encode()
    )
    send_legacy(alice, HOST, "hello plain", port=plain.port)
    alice.expect_text(f"Message sent to 127.0.0.1:{plain.port} (unencrypted, not acknowledged)")
    assert plain.wait()[0].data == f"{HOST}:{legacy_port} TeamA hello plain".encode()

    # Too long for the original's single read: refused here, never lost there.
    send_legacy(alice, number, "x" * 900)
    alice.expect_text(f"Message not sent to 127.0.0.1:{original.port}:")
    alice.expect_text("the original reads only 1024")

    OriginalSender(key, f"127.0.1.1:{original.port}").send(HOST, legacy_port, "exit")
    alice.expect_text(f"Legacy peer CryptoCrafters at 127.0.0.1:{original.port} left (said exit).")

    history = alice.history()
    assert "Team7 (127.0.0.1:7000) -> You [unencrypted]: hello Alice" in history
    assert "[unencrypted, sent, not acknowledged]: hello plain" in history
    assert "exit" not in history
    assert len(original.received) == 1
    assert alice.quit() == 0


def test_without_legacy_flags_nothing_more_listens_and_nothing_is_shown(
    tmp_path: Path, peers: list[Peer]
) -> None:
    alice = Peer("Alice", tmp_path, None)
    peers.append(alice)
    assert listening_ports(alice.child.pid) == {alice.port}
    # A legacy program that writes to the secure port is dropped there, as before.
    PlainSender("127.0.0.1:7000", "Team7").send(HOST, alice.port, "hello?")
    wait_for_log(alice.data_dir / "peer_chat.log", "closing connection 127.0.0.1")
    assert "hello?" not in alice.history()
    assert "Received from" not in strip_ansi(alice.screen())

    legacy_port = free_tcp_port()
    bob = Peer("Bob", tmp_path, None, extra=["--legacy-port", str(legacy_port)])
    peers.append(bob)
    assert listening_ports(bob.child.pid) == {bob.port, legacy_port}
    # With a legacy port, the secure port still never takes legacy text.
    PlainSender("127.0.0.1:7000", "Team7").send(HOST, bob.port, "wrong port")
    wait_for_log(bob.data_dir / "peer_chat.log", "closing connection 127.0.0.1")
    assert "wrong port" not in bob.history()


def test_a_legacy_flood_does_not_stop_keyed_chat(tmp_path: Path, peers: list[Peer]) -> None:
    dport = free_udp_port()
    legacy_port = free_tcp_port()
    alice = Peer("Alice", tmp_path, dport, extra=["--legacy-port", str(legacy_port)])
    bob = Peer("Bob", tmp_path, dport)
    peers += [alice, bob]
    bob.expect_text(f"Discovered peer Alice at {alice.addr}")

    stop = threading.Event()

    def flood() -> None:
        sender = PlainSender("127.0.0.1:7100", "Flood", source="127.0.0.9")
        big = b"127.0.0.1:7101 Big " + b"x" * (1024 * 1024)
        while not stop.is_set():
            for n in range(50):
                sender.send(HOST, legacy_port, f"flood {n}")
            send_raw(HOST, legacy_port, big, source="127.0.0.10")

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        for n in range(5):
            bob.send_to("Alice", f"keyed {n}")
            bob.expect_text(f"Message sent to {alice.addr}")
            alice.expect_all(f"Received from {bob.addr} ({shown_as(bob)}): keyed {n}")
    finally:
        stop.set()
        flooder.join(30)
    shown = strip_ansi(alice.screen()).count("(Flood) [unencrypted]: flood")
    assert 1 <= shown <= 40  # the flooder's burst and rate, not its 50 a round
    PlainSender("127.0.0.1:7200", "Calm", source="127.0.0.11").send(HOST, legacy_port, "after")
    alice.expect_text("Received from 127.0.0.11:7200 (Calm) [unencrypted]: after")
    assert alice.quit() == 0


@pytest.mark.parametrize(
    ("extra", "needle", "code"),
    [
        (["--legacy-key", "k"], "--legacy-key and --legacy-team need --legacy-port", 2),
        (["--legacy-team", "T"], "--legacy-key and --legacy-team need --legacy-port", 2),
        (["--legacy-port", "0"], "invalid port 0", 2),
        (["--legacy-port", "SAME"], "--legacy-port must differ from --port", 2),
        (["--legacy-port", "FREE", "--legacy-team", "two words"], "no spaces", 2),
        (["--legacy-port", "FREE", "--legacy-key", "MISSING"], "Cannot read legacy key", 1),
        (["--legacy-port", "FREE", "--legacy-key", "GARBAGE"], "is not a Fernet key", 1),
        (["--legacy-port", "BUSY"], "is already in use", 1),
    ],
)
def test_wrong_legacy_flags(tmp_path: Path, extra: list[str], needle: str, code: int) -> None:
    port = free_tcp_port()
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key\n")
    holder = None
    if "BUSY" in extra:
        holder = socket.socket()
        holder.bind(("0.0.0.0", 0))
        holder.listen()
    values = {
        "SAME": str(port),
        "FREE": str(free_tcp_port()),
        "MISSING": str(tmp_path / "missing.key"),
        "GARBAGE": str(garbage),
        "BUSY": str(holder.getsockname()[1]) if holder else "",
    }
    args = ["--name", "A", "--port", str(port), "--data-dir", str(tmp_path / "A"), "--no-discovery"]
    try:
        result = run_cli([*args, *(values.get(a, a) for a in extra)], stdin="0\n")
    finally:
        if holder is not None:
            holder.close()
    assert result.returncode == code, result.stderr
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_own_secret_key_is_refused_as_legacy_key(tmp_path: Path) -> None:
    data = tmp_path / "A"
    base = [
        "--name",
        "A",
        "--port",
        str(free_tcp_port()),
        "--data-dir",
        str(data),
        "--no-discovery",
    ]
    assert run_cli(base, stdin="0\n").returncode == 0
    own = data / "secret.key"
    result = run_cli(
        [*base, "--legacy-port", str(free_tcp_port()), "--legacy-key", str(own)], stdin="0\n"
    )
    assert result.returncode == 2
    assert "this profile's own secret.key" in result.stderr
