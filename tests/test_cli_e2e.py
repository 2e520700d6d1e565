"""Real peer_chat processes on loopback, driven through the menu as a person would."""

from __future__ import annotations

import contextlib
import hashlib
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from peerchat.policy.sanitize import CONTINUATION
from tests.support import (
    Peer,
    free_tcp_port,
    free_udp_port,
    name_and_id,
    peer_rows,
    run_cli,
    shown_as,
    strip_ansi,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def discovery_port() -> int:
    return free_udp_port()


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    for peer in started:
        peer.close()


def start(peers: list[Peer], name: str, tmp: Path, dport: int | None, **kw: object) -> Peer:
    peer = Peer(name, tmp, dport, **kw)  # type: ignore[arg-type]
    peers.append(peer)
    return peer


def wait_for_rows(peer: Peer, line: str, timeout: float = 20.0) -> None:
    """Wait until `line` is on `peer`'s screen, cut into rows marked as continuations."""
    deadline = time.monotonic() + timeout
    row_break = re.compile(r"\r*\n" + re.escape(CONTINUATION))
    while line not in row_break.sub("", strip_ansi(peer.screen())):
        if time.monotonic() > deadline:
            raise AssertionError(f"{line[:60]!r}... not shown in marked rows")
        with contextlib.suppress(pexpect.TIMEOUT):
            peer.child.expect("\n", timeout=0.5)


def test_two_peers_discover_chat_and_keep_history(
    tmp_path: Path, discovery_port: int, peers: list[Peer]
) -> None:
    alice = start(peers, "Alice", tmp_path, discovery_port)
    bob = start(peers, "Bob", tmp_path, discovery_port)
    alice.expect_text(f"Discovered peer Bob at {bob.addr}")
    bob.expect_text(f"Discovered peer Alice at {alice.addr}")

    # By IP and port, as the original asked for it.
    alice.send_to("127.0.0.1", "hello Bob", port=bob.port)
    alice.expect_text(f"Message sent to {bob.addr}")
    bob.expect_text(f"Received from {alice.addr} ({shown_as(alice)}): hello Bob")

    # By name: no port asked.
    bob.send_to("Alice", "hi Alice")
    bob.expect_text(f"Message sent to {alice.addr}")
    alice.expect_text(f"Received from {bob.addr} ({shown_as(bob)}): hi Alice")

    # A 10 KiB message and a script other than Latin arrive intact.
    big = "".join(f"{i:05d}-" for i in range(1700))[: 10 * 1024]
    alice.send_to("Bob", big)
    alice.expect_text(f"Message sent to {bob.addr}")
    bob.expect_text(f"Received from {alice.addr} ({shown_as(alice)}): ")
    # On a terminal a long line comes in rows of its width, each later one marked.
    wait_for_rows(bob, f"Received from {alice.addr} ({shown_as(alice)}): {big}")
    alice.send_to("Bob", "Привет, мир — こんにちは 🌍")
    bob.expect_text("Привет, мир — こんにちは 🌍")

    table = alice.peers_table()
    assert "Bob" in table and bob.addr in table
    assert "Alice" not in table.split("Connected Peers:")[-1].split("Name", 1)[-1]

    history = bob.history()
    assert history.index("hello Bob") < history.index("hi Alice") < history.index("Привет")
    assert "Alice -> You [received]: hello Bob" in history.replace(f" ({alice.addr})", "")
    assert f"You -> Alice ({alice.addr}) [delivered]: hi Alice" in history
    alice_history = alice.history("Bob")
    assert "[delivered]: hello Bob" in alice_history
    assert "[received]: hi Alice" in alice_history

    started = time.monotonic()
    assert alice.quit() == 0
    assert time.monotonic() - started < 4  # 2 s budget plus process start-up noise
    bob.expect_text("Alice at")
    bob.expect_text("is offline (left)")
    assert bob.quit() == 0


def test_exit_message_removes_sender(
    tmp_path: Path, discovery_port: int, peers: list[Peer]
) -> None:
    alice = start(peers, "Alice", tmp_path, discovery_port)
    bob = start(peers, "Bob", tmp_path, discovery_port)
    alice.expect_text("Discovered peer Bob")
    bob.expect_text("Discovered peer Alice")
    alice.send_to("Bob", "exit")
    bob.expect_text(f"Received from {alice.addr} ({shown_as(alice)}): exit")
    bob.expect_text("is offline (said exit)")
    bob.expect_menu()
    # As in the original, its next sign of life (a beacon every 0.5 s here) brings it back.
    deadline = time.monotonic() + 10
    while "Alice" not in bob.peers_table():
        assert time.monotonic() < deadline, "Alice was not listed again"


def test_connect_to_every_active_peer(
    tmp_path: Path, discovery_port: int, peers: list[Peer]
) -> None:
    alice = start(peers, "Alice", tmp_path, discovery_port)
    bob = start(peers, "Bob", tmp_path, discovery_port)
    carol = start(peers, "Carol", tmp_path, discovery_port)
    alice.expect_text("Discovered peer Bob")
    alice.expect_text("Discovered peer Carol")
    # Heard of by beacon only: a beacon's address is a claim anyone can make, so
    # option 4 with no address does not dial it on its own, and says so.
    alice.connect("", None)
    alice.expect_all(
        *(f"Failed to connect to {p.addr} - never reached at this address" for p in (bob, carol))
    )
    alice.expect_menu()
    for other in (bob, carol):  # reached once at the address the user typed ...
        alice.connect("127.0.0.1", other.port)
        alice.expect_text(f"Connected to {other.addr}")
    alice.connect("", None)  # ... option 4 with no address connects to every one
    found = {alice.expect([f"Connected to {bob.addr}", f"Connected to {carol.addr}"]) for _ in "ab"}
    assert found == {0, 1}
    for other in (bob, carol):
        table = other.peers_table()
        assert "Alice" in table


def test_connect_by_address_without_discovery(tmp_path: Path, peers: list[Peer]) -> None:
    alice = start(peers, "Alice", tmp_path, None)
    bob = start(peers, "Bob", tmp_path, None)
    assert alice.peers_table() == ""
    alice.connect("127.0.0.1", bob.port)
    alice.expect_text(f"Connected to {bob.addr}")
    bob.expect_text(f"Peer Alice connected from {alice.addr}")
    assert "Alice" in bob.peers_table()
    bob.send_to("Alice", "found you")
    alice.expect_text(f"Received from {bob.addr} ({shown_as(bob)}): found you")


def test_unreachable_address_is_not_reported_sent(tmp_path: Path, peers: list[Peer]) -> None:
    alice = start(peers, "Alice", tmp_path, None)
    closed = free_tcp_port()
    alice.send_to("127.0.0.1", "anyone?", port=closed)
    alice.expect_text(f"Failed to connect to 127.0.0.1:{closed} - connection refused")
    alice.expect_menu()
    assert "[failed" in alice.history()


def test_piped_stdin_conversation(tmp_path: Path, peers: list[Peer]) -> None:
    bob = start(peers, "Bob", tmp_path, None)
    script = f"1\n127.0.0.1\n{bob.port}\nscripted hello\n3\n\n"  # end of input quits
    result = run_cli(
        [
            "--name",
            "Alice",
            "--port",
            str(free_tcp_port()),
            "--data-dir",
            str(tmp_path / "A"),
            "--no-discovery",
        ],
        stdin=script,
    )
    assert result.returncode == 0, result.stderr
    assert "***** Menu *****" in result.stdout
    assert f"Message sent to {bob.addr}" in result.stdout
    assert "[delivered]: scripted hello" in result.stdout
    bob.expect_text(f"({name_and_id('Alice', tmp_path / 'A')}): scripted hello")


# -- wrong input: one clear line, a non-zero exit, no traceback -----------------


def _assert_clean_failure(result: object, *needles: str) -> None:
    assert isinstance(result, __import__("subprocess").CompletedProcess)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--name", "A", "--port", "abc"], "invalid port 'abc'"),
        (["--name", "A", "--port", "70000"], "invalid port 70000"),
        (["--name", "A", "--port", "0"], "invalid port 0"),
        (["--port", "5000"], "--name"),
        (["--name", "A"], "--port"),
        (["--name", "A", "--port", "5000", "--colour"], "unrecognized arguments: --colour"),
        (["--name", "A", "--port", "5000", "--broadcast", "nowhere"], "invalid IPv4 address"),
        (["--name", "A\x1b[2J", "--port", "5000"], "invalid name"),
        (["--name", "A", "--port", "5000", "--queue-limit", "0"], "invalid count '0'"),
        (["--name", "A", "--port", "5000", "--queue-days", "soon"], "invalid number of days"),
        (["--name", "A", "--port", "5000", "--peer-timeout", "nan"], "invalid duration nan"),
        # Never matched by abbreviation: a mistyped or future flag is not some other flag.
        (["--name", "A", "--port", "5000", "--peer-t", "5"], "unrecognized arguments: --peer-t"),
    ],
)
def test_wrong_flags(args: list[str], needle: str, tmp_path: Path) -> None:
    # --no-discovery: should a flag ever pass by mistake, nothing is broadcast off loopback.
    result = run_cli([*args, "--data-dir", str(tmp_path / "d"), "--no-discovery"])
    _assert_clean_failure(result, needle)
    assert result.returncode == 2


def test_tcp_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_cli(
            [
                "--name",
                "A",
                "--port",
                str(port),
                "--data-dir",
                str(tmp_path / "d"),
                "--no-discovery",
            ]
        )
    _assert_clean_failure(result, f"Port {port} is already in use")


def test_discovery_port_in_use(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("", 0))  # no SO_REUSEPORT: nobody may share it
        dport = holder.getsockname()[1]
        result = run_cli(
            [
                "--name",
                "A",
                "--port",
                str(free_tcp_port()),
                "--data-dir",
                str(tmp_path / "d"),
                "--broadcast",
                "127.255.255.255",
                "--discovery-port",
                str(dport),
            ]
        )
    _assert_clean_failure(result, f"Discovery port {dport}")


def test_data_dir_not_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run_cli(
        ["--name", "A", "--port", "5000", "--data-dir", str(blocker / "profile"), "--no-discovery"]
    )
    _assert_clean_failure(result, "Data folder", "not writable")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("filename", ["private.pem", "secret.key", "chat_history.db"])
def test_corrupt_file_is_reported_and_left_alone(tmp_path: Path, filename: str) -> None:
    data = tmp_path / "d"
    args = [
        "--name",
        "A",
        "--port",
        str(free_tcp_port()),
        "--data-dir",
        str(data),
        "--no-discovery",
    ]
    first = run_cli(args, stdin="0\n")
    assert first.returncode == 0, first.stderr
    target = data / filename
    target.write_bytes(b"\x00garbage, not what peer_chat wrote\xff" * 50)
    before = _digest(target)
    result = run_cli(args, stdin="0\n")
    _assert_clean_failure(result, filename)
    assert _digest(target) == before


def test_quit_with_ctrl_d_and_ctrl_c(tmp_path: Path, peers: list[Peer]) -> None:
    alice = start(peers, "Alice", tmp_path, None)
    alice.child.sendcontrol("d")
    alice.child.expect(pexpect.EOF, timeout=5)
    alice.child.close()
    assert alice.child.exitstatus == 0
    bob = start(peers, "Bob", tmp_path, None)
    bob.child.sendcontrol("c")
    bob.child.expect(pexpect.EOF, timeout=5)
    bob.child.close()
    assert bob.child.exitstatus == 0
    assert "Traceback" not in strip_ansi(str(bob.child.before))


def test_changed_key_is_refused_until_retrusted(tmp_path: Path, peers: list[Peer]) -> None:
    alice = start(peers, "Alice", tmp_path, None)
    bob = start(peers, "Bob", tmp_path, None)
    bob.send_to("127.0.0.1", "first contact", port=alice.port)
    alice.expect_text(f"Received from {bob.addr} ({shown_as(bob)}): first contact")
    bob.quit()

    # Someone else now runs as "Bob" at the same address, with a new key.
    impostor = start(peers, "Bob", tmp_path, None, port=bob.port, data_dir=tmp_path / "Bob-new")
    impostor.send_to("127.0.0.1", "trust me", port=alice.port)
    alice.expect_text("WARNING: the key of peer Bob at")
    alice.expect_text("has changed (was ")
    impostor.expect_text("Message refused by")
    alice.expect_menu()
    history = alice.history()
    assert "trust me" not in history
    assert "first contact" in history

    alice.choose("6")
    alice.expect_text("Peers whose key changed:")
    alice.answer("Peer to verify (number, name, or c<number> to re-trust):", "c1")
    alice.answer("Type yes to trust the new key:", "yes")
    # Held back until now, the queued message arrives once the key is trusted
    # (possibly while the menu is still confirming).
    alice.expect_all(
        "New key of Bob accepted.",
        f"Received from {impostor.addr} ({shown_as(impostor)}): trust me",
    )


def test_a_verified_peer_is_listed_as_verified_at_once(tmp_path: Path, peers: list[Peer]) -> None:
    alice = start(peers, "Alice", tmp_path, None)
    bob = start(peers, "Bob", tmp_path, None)
    alice.connect("127.0.0.1", bob.port)
    alice.expect_text(f"Connected to {bob.addr} (Bob)")
    alice.expect_menu()
    assert [(r.name, r.verified) for r in peer_rows(alice.peers_table())] == [("Bob", False)]

    alice.choose("6")
    alice.answer("Peer to verify (number, name, or c<number> to re-trust):", "1")
    alice.answer("Do they match? Type yes to mark verified:", "yes")
    alice.expect_text("Bob is now verified.")
    alice.expect_menu()
    # The same session, no reconnect: the listing shows what the user just did.
    assert [(r.name, r.verified) for r in peer_rows(alice.peers_table())] == [("Bob", True)]


def test_incoming_line_keeps_what_the_user_is_typing(tmp_path: Path, peers: list[Peer]) -> None:
    alice = start(peers, "Alice", tmp_path, None)
    bob = start(peers, "Bob", tmp_path, None)
    bob.connect("127.0.0.1", alice.port)
    bob.expect_text(f"Connected to {alice.addr}")
    alice.choose("1")
    alice.expect_text("Enter recipient's IP:")
    alice.child.send("127.0.")  # half typed, no Enter yet
    bob.send_to("Alice", "interrupting")
    alice.expect_text(f"Received from {bob.addr} ({shown_as(bob)}): interrupting")
    alice.child.send("0.1\r")  # the rest of the line: the whole address must arrive
    alice.answer("Enter recipient's port number:", str(bob.port))
    alice.answer("Enter your message:", "typed around it")
    alice.expect_text(f"Message sent to {bob.addr}")
    bob.expect_text(f"Received from {alice.addr} ({shown_as(alice)}): typed around it")


def test_passphrase_from_environment_or_file(tmp_path: Path) -> None:
    data = tmp_path / "d"
    args = ["--name", "A", "--port", str(free_tcp_port()), "--data-dir", str(data)]
    args.append("--no-discovery")
    created = run_cli(args, stdin="5\n0\n", env={"PEER_CHAT_PASSPHRASE": "correct horse"})
    assert created.returncode == 0, created.stderr
    assert b"ENCRYPTED PRIVATE KEY" in (data / "private.pem").read_bytes()
    assert b"correct horse" not in (data / "private.pem").read_bytes()

    missing = run_cli(args, stdin="0\n")
    _assert_clean_failure(missing, "private.pem", "passphrase")

    wrong = tmp_path / "wrong.txt"
    wrong.write_text("battery staple\n")
    refused = run_cli([*args, "--passphrase-file", str(wrong)], stdin="0\n")
    _assert_clean_failure(refused, "wrong passphrase")

    right = tmp_path / "right.txt"
    right.write_text("correct horse\n")
    again = run_cli([*args, "--passphrase-file", str(right)], stdin="5\n0\n")
    assert again.returncode == 0, again.stderr
    first_id = re.search(r"Your ID: (\w{8})", created.stdout)
    second_id = re.search(r"Your ID: (\w{8})", again.stdout)
    assert first_id and second_id
    assert first_id.group(1) == second_id.group(1)  # the same identity both times
