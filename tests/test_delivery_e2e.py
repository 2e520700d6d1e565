"""Reliable delivery between real peer_chat processes: queued, acknowledged, exactly once.

The receiver may be away, or killed (SIGKILL) while messages are on the way;
the sender may quit or be killed with a non-empty queue. In every case each
message ends up in the receiver's history exactly once, in the order it was
sent, and the sender's history shows it delivered.

Where a test needs "some but not all arrived" to be certain rather than
likely, the receiver listens on 127.0.0.2 behind a relay on 127.0.0.1 (the
address every peer sees it at) that passes only the first N frames of a
connection and drops the rest, as a network that loses them would, or goes
silent altogether.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from crypto_utils import KeyManager
from storage import DeliveryState, Direction, HistoryStore, StoredMessage
from tests.support import (
    ROOT,
    Peer,
    child_env,
    free_tcp_port,
    free_udp_port,
    peer_args,
    shown_as,
    strip_ansi,
)

pytestmark = pytest.mark.slow

BEACON_INTERVAL = 0.3
PEER_TIMEOUT = 3.0
RECEIVER_HOST = "127.0.0.2"  # where a receiver behind the relay really listens
WAIT = 30.0  # upper bound of any single wait; the happy path takes well under a second

# What option 1 answers, one line per message (menu.describe_send).
SENT = "Message sent to "
QUEUED = ": message queued for delivery."
UNACKNOWLEDGED = "sent but not acknowledged yet"
# Nothing in these scenarios may produce any of these.
WRONG = (
    "Failed to connect",
    "Message refused by",
    "WARNING",
    "Unknown peer",
    "Invalid choice",
    "Problem:",
    "expired undelivered",
    " not sent: ",
    "Traceback",
)
DELIVERED_QUEUED = re.compile(r"Delivered (\d+) queued message\(s\) to Bob ")


def texts(first: int, last: int) -> list[str]:
    return [f"m{i:04d}" for i in range(first, last + 1)]


def send_lines(messages: Sequence[str]) -> str:
    """Option 1 to Bob (by name) once per message, as typed on piped standard input."""
    return "".join(f"1\nBob\n{text}\n" for text in messages)


def received_line(sender: PipedPeer, text: str) -> str:
    return f"({shown_as(sender)}): {text}\n"


# -- a peer on piped standard input ---------------------------------------------------


class PipedPeer:
    """peer_chat.py with piped stdin/stdout; its output is collected as it comes.

    A thread reads the output at once, so the peer never blocks on a full
    pipe, and every wait is on that output (an event), bounded by a deadline.
    """

    def __init__(
        self,
        name: str,
        tmp: Path,
        discovery_port: int,
        *,
        port: int | None = None,
        data_dir: Path | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.port = port or free_tcp_port()
        self.data_dir = data_dir or tmp / name
        args = peer_args(
            name,
            self.port,
            self.data_dir,
            discovery_port,
            beacon_interval=BEACON_INTERVAL,
            peer_timeout=PEER_TIMEOUT,
            extra=extra,
        )
        self._log_path = tmp / f"{name}-{self.port}-{time.monotonic_ns()}.out.log"
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
            env=child_env(),
        )
        self._text = ""
        self._eof = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name=f"read-{name}", daemon=True)
        self._reader.start()
        self.expect(f"Server listening on port {self.port}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            with self._changed:
                self._text += decoder.decode(chunk, final=not chunk)
                self._eof = not chunk
                self._changed.notify_all()
            if not chunk:
                return

    @property
    def output(self) -> str:
        with self._changed:
            return self._text

    def wait_until(self, what: str, condition: Callable[[str], bool], timeout: float = WAIT) -> str:
        """Wait until the output satisfies `condition`; on failure show its tail."""
        with self._changed:
            if not self._changed.wait_for(
                lambda: condition(self._text) or self._eof or _wrong(self._text) is not None,
                timeout,
            ):
                pytest.fail(
                    f"{self.name}: timed out waiting for {what}; output ends:\n{self._tail()}"
                )
            if condition(self._text):
                return self._text
            bad = _wrong(self._text)
            if bad is not None:
                pytest.fail(
                    f"{self.name} printed {bad!r} while waiting for {what}:\n{self._tail()}"
                )
            pytest.fail(
                f"{self.name} exited while waiting for {what}; output ends:\n{self._tail()}"
            )

    def expect(self, text: str, timeout: float = WAIT) -> None:
        self.wait_until(repr(text), lambda out: text in out, timeout)

    def _tail(self) -> str:
        return self._text[-3000:]

    def write(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def kill(self) -> None:
        """SIGKILL: no goodbye, no flush, no clean close of the database."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(10)
        self._save_log()

    def quit(self) -> int:
        """Option 0, as a user quits; returns the exit status."""
        self.write("0\n")
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        status = self.proc.wait(15)
        self._reader.join(10)
        self._save_log()
        return status

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._save_log()

    def _save_log(self) -> None:
        with contextlib.suppress(OSError):
            self._log_path.write_text(self.output, encoding="utf-8")


def _wrong(output: str) -> str | None:
    return next((needle for needle in WRONG if needle in output), None)


def answers(output: str) -> int:
    """How many option-1 requests the sender has answered so far."""
    return output.count(SENT) + output.count(QUEUED) + output.count(UNACKNOWLEDGED)


def delivered_later(output: str) -> int:
    """Messages the sender reported delivered after option 1 had answered for them."""
    return sum(int(n) for n in DELIVERED_QUEUED.findall(output))


# -- a relay that can lose frames --------------------------------------------------------


class FrameGate:
    """A loopback TCP relay, 127.0.0.1:port -> RECEIVER_HOST:port, that can drop frames.

    peer_chat frames are a 4-byte big-endian length and a body. Each new
    connection passes at most the `up` first frames from the client (handshake
    messages 1 and 3, then one frame per chat message) and the `down` first from
    the server (handshake message 2, then acknowledgements); None is no limit.
    Later frames are read and dropped, the connection staying open. `cut()`
    turns every connection open at that moment into a black hole both ways, as
    a network that goes silent would. When the receiver is down the client's
    connection is reset, as a refused one would be.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", free_tcp_port()))
        self.port = int(self._listener.getsockname()[1])
        self._limits: tuple[int | None, int | None] = (None, None)
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = threading.Event()
        threading.Thread(target=self._accept, name="frame-gate", daemon=True).start()

    def gate(self, up: int | None, down: int | None) -> None:
        """Limits for the connections accepted from now on."""
        with self._lock:
            self._limits = (up, down)

    def cut(self) -> None:
        """From now on the connections open now pass nothing, either way; new ones are spared."""
        with self._lock:
            self._cut.set()
            self._cut = threading.Event()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            _shut(sock)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                up, down, cut = *self._limits, self._cut
            threading.Thread(target=self._relay, args=(client, up, down, cut), daemon=True).start()

    def _relay(
        self, client: socket.socket, up: int | None, down: int | None, cut: threading.Event
    ) -> None:
        try:
            server = socket.create_connection((RECEIVER_HOST, self.port), timeout=5)
        except OSError:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()  # with linger 0: a reset
            return
        server.settimeout(None)
        with self._lock:
            self._open.update((client, server))
        back = threading.Thread(target=self._pass, args=(server, client, down, cut), daemon=True)
        back.start()
        self._pass(client, server, up, cut)
        back.join()
        with self._lock:
            self._open.difference_update((client, server))
        client.close()
        server.close()

    @staticmethod
    def _pass(
        src: socket.socket, dst: socket.socket, limit: int | None, cut: threading.Event
    ) -> None:
        pending = b""
        passed = 0
        try:
            while chunk := src.recv(65536):
                pending += chunk
                out = bytearray()
                while len(pending) >= 4:
                    end = 4 + int.from_bytes(pending[:4], "big")
                    if len(pending) < end:
                        break
                    if (limit is None or passed < limit) and not cut.is_set():
                        out += pending[:end]
                        passed += 1
                    pending = pending[end:]
                if out:
                    dst.sendall(out)
        except OSError:
            pass
        finally:
            _shut(src)
            _shut(dst)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


# -- reading a peer's history after it has stopped ---------------------------------------


@contextlib.contextmanager
def open_history(data_dir: Path) -> Iterator[HistoryStore]:
    """The peer's own database, opened with the project's store and the peer's own key."""
    sealer = KeyManager(data_dir).load_or_create_sealer()
    with HistoryStore.open(data_dir / "chat_history.db", sealer) as store:
        yield store


def history_of(data_dir: Path, direction: Direction) -> list[StoredMessage]:
    with open_history(data_dir) as store:
        return [m for m in store.history(limit=100_000) if m.direction is direction]


def wait_for_pending(data_dir: Path, count: int, timeout: float = WAIT) -> None:
    """Poll a running peer's database (state, not screen) until `count` messages are pending."""
    deadline = time.monotonic() + timeout
    with open_history(data_dir) as store:
        while (left := len(store.pending_messages())) != count:
            if time.monotonic() > deadline:
                pytest.fail(f"{left} messages pending in {data_dir}, expected {count}")
            time.sleep(0.02)


def assert_sender_delivered_all(data_dir: Path, expected: list[str]) -> None:
    sent = history_of(data_dir, Direction.OUT)
    assert [m.text for m in sent] == expected
    states = {state: sum(m.state is state for m in sent) for state in DeliveryState}
    assert states[DeliveryState.PENDING] == 0
    assert states[DeliveryState.FAILED] == 0
    assert states[DeliveryState.DELIVERED] == len(expected)


def assert_received_once_in_order(data_dir: Path, expected: list[str]) -> None:
    received = [m.text for m in history_of(data_dir, Direction.IN)]
    duplicates = sorted({t for t in received if received.count(t) > 1})
    missing = sorted(set(expected) - set(received))
    assert not duplicates, f"received more than once: {duplicates[:20]}"
    assert not missing, f"never received: {missing[:20]}"
    assert received == expected, "received out of order"


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture
def discovery_port() -> int:
    return free_udp_port()


@pytest.fixture
def cleanup() -> Iterator[list[Peer | PipedPeer | FrameGate]]:
    things: list[Peer | PipedPeer | FrameGate] = []
    yield things
    for thing in reversed(things):
        thing.close()


def peer(
    cleanup: list[Peer | PipedPeer | FrameGate], name: str, tmp: Path, dport: int | None, **kw: Any
) -> Peer:
    kw.setdefault("port", free_tcp_port())
    started = Peer(
        name, tmp, dport, beacon_interval=BEACON_INTERVAL, peer_timeout=PEER_TIMEOUT, **kw
    )
    cleanup.append(started)
    return started


def piped(
    cleanup: list[Peer | PipedPeer | FrameGate], name: str, tmp: Path, dport: int, **kw: Any
) -> PipedPeer:
    started = PipedPeer(name, tmp, dport, **kw)
    cleanup.append(started)
    return started


def bob_behind(
    cleanup: list[Peer | PipedPeer | FrameGate], tmp: Path, dport: int, gate: FrameGate
) -> PipedPeer:
    """Bob (again), his data in tmp/Bob, listening on RECEIVER_HOST at the relay's port."""
    return piped(
        cleanup,
        "Bob",
        tmp,
        dport,
        data_dir=tmp / "Bob",
        port=gate.port,
        extra=["--bind", RECEIVER_HOST],
    )


def gated_pair(
    cleanup: list[Peer | PipedPeer | FrameGate], tmp: Path, dport: int
) -> tuple[FrameGate, PipedPeer, PipedPeer]:
    """A relay, Bob behind it, and Alice once she has discovered Bob at the relay."""
    gate = FrameGate()
    cleanup.append(gate)
    bob = bob_behind(cleanup, tmp, dport, gate)
    alice = piped(cleanup, "Alice", tmp, dport)
    alice.expect(f"Discovered peer Bob at 127.0.0.1:{gate.port}")
    return gate, alice, bob


def meet_then_leave(alice: PipedPeer, bob: PipedPeer) -> None:
    """An earlier session: Alice meets Bob ("hello" arrives), then Bob quits."""
    alice.write(send_lines(["hello"]))
    bob.expect(received_line(alice, "hello"))
    assert bob.quit() == 0
    alice.expect("is offline (left)")


def sum_delivered(peer: Peer, total: int) -> None:
    """Wait until the "Delivered N queued message(s) to Bob" lines add up to `total`.

    Counted over everything the peer showed, including what it printed before
    its first menu (a restarted sender may deliver that fast).
    """
    while (shown := delivered_later(strip_ansi(peer.screen()))) < total:
        peer.expect_text("queued message(s) to Bob", timeout=WAIT)
    assert shown == total


# -- the tests ------------------------------------------------------------------------


def test_messages_queued_while_receiver_is_away_arrive_once_in_order(
    tmp_path: Path, discovery_port: int, cleanup: list[Peer | PipedPeer | FrameGate]
) -> None:
    alice = peer(cleanup, "Alice", tmp_path, discovery_port)
    bob = peer(cleanup, "Bob", tmp_path, discovery_port)
    # An earlier session: Alice meets Bob and remembers his key and address.
    alice.expect_text(f"Discovered peer Bob at {bob.addr}")
    alice.send_to("Bob", "hello")
    alice.expect_text(f"Message sent to {bob.addr}")
    bob.expect_text(f"Received from {alice.addr} ({shown_as(alice)}): hello")
    assert bob.quit() == 0
    alice.expect_text(f"Bob at {bob.addr} is offline (left)")

    messages = ["first of three", "second of three", "third of three"]
    for text in messages:
        alice.send_to("Bob", text)
        alice.expect_text(f"Bob ({bob.addr}) is not reachable")
        alice.expect_text("message queued for delivery.")
    alice.expect_menu()

    bob = peer(cleanup, "Bob", tmp_path, discovery_port, port=bob.port, data_dir=bob.data_dir)
    for text in messages:  # expect_text moves forward: these must come in this order
        bob.expect_text(f"Received from {alice.addr} ({shown_as(alice)}): {text}")
    sum_delivered(alice, 3)

    bob_history = bob.history("Alice")
    for text in messages:
        assert bob_history.count(f"[received]: {text}") == 1, bob_history
    positions = [bob_history.index(f"[received]: {text}") for text in messages]
    assert positions == sorted(positions)
    alice_history = alice.history("Bob")
    for text in messages:
        assert alice_history.count(f"[delivered]: {text}") == 1, alice_history
    assert "[pending]" not in alice_history
    assert "[failed" not in alice_history
    assert bob.quit() == 0
    assert alice.quit() == 0
    assert_received_once_in_order(bob.data_dir, ["hello", *messages])
    assert_sender_delivered_all(alice.data_dir, ["hello", *messages])


def test_sender_restarted_with_a_queue_delivers_it(
    tmp_path: Path, cleanup: list[Peer | PipedPeer | FrameGate]
) -> None:
    # No discovery at all: after the restart only Alice's stored queue and
    # Bob's stored address can bring the messages over.
    alice = peer(cleanup, "Alice", tmp_path, None)
    bob = peer(cleanup, "Bob", tmp_path, None)
    alice.connect("127.0.0.1", bob.port)
    alice.expect_text(f"Connected to {bob.addr} (Bob)")
    bob.expect_text(f"Peer Alice connected from {alice.addr}")
    assert bob.quit() == 0
    alice.expect_text(f"Bob at {bob.addr} is offline (left)")

    messages = ["kept 1", "kept 2", "kept 3"]
    for text in messages:
        alice.send_to("Bob", text)
        alice.expect_text("message queued for delivery.")
    alice.expect_menu()
    assert "[pending]: kept 3" in alice.history("Bob")
    assert alice.quit() == 0

    bob = peer(cleanup, "Bob", tmp_path, None, port=bob.port, data_dir=bob.data_dir)
    alice = peer(cleanup, "Alice", tmp_path, None, port=alice.port, data_dir=alice.data_dir)
    for text in messages:
        bob.expect_text(f"Received from {alice.addr} ({shown_as(alice)}): {text}")
    sum_delivered(alice, 3)
    alice_history = alice.history("Bob")
    assert [f"[delivered]: {t}" in alice_history for t in messages] == [True] * 3
    assert bob.quit() == 0
    assert alice.quit() == 0
    assert_received_once_in_order(bob.data_dir, messages)
    assert_sender_delivered_all(alice.data_dir, messages)


def test_burst_survives_receiver_killed_three_times(
    tmp_path: Path, discovery_port: int, cleanup: list[Peer | PipedPeer | FrameGate]
) -> None:
    gate, alice, bob = gated_pair(cleanup, tmp_path, discovery_port)
    bob_dir = bob.data_dir

    # Kill 1, during a live burst: 100 of these 300 get through, m0101 is on its
    # way when Bob dies, the other 199 are typed while he is gone.
    gate.gate(up=2 + 100, down=None)
    alice.write(send_lines(texts(1, 300)))
    bob.expect(received_line(alice, "m0100"))
    bob.kill()
    alice.wait_until("300 answers", lambda out: answers(out) == 300)
    with open_history(alice.data_dir) as store:
        pending = [m.text for m in store.pending_messages()]
    # What Bob acknowledged is delivered; the rest waits, in order.
    assert pending == texts(101, 300)

    # Kill 2, in the middle of the backlog: Bob stores exactly 50 messages and
    # his acknowledgements are lost, so Alice must send those 50 again to the
    # next Bob, who has them already.
    gate.gate(up=2 + 50, down=1)
    bob = bob_behind(cleanup, tmp_path, discovery_port, gate)
    bob.expect(received_line(alice, pending[49]))
    bob.kill()
    assert received_line(alice, pending[50]) not in bob.output

    # Kill 3, during a live burst again, with the backlog still in flight.
    gate.gate(up=None, down=None)
    bob = bob_behind(cleanup, tmp_path, discovery_port, gate)
    alice.write(send_lines(texts(301, 700)))
    bob.expect(received_line(alice, "m0500"))
    bob.kill()

    bob = bob_behind(cleanup, tmp_path, discovery_port, gate)
    alice.write(send_lines(texts(701, 1000)))
    bob.expect(received_line(alice, "m1000"))
    out = alice.wait_until(
        "every message acknowledged",
        lambda out: answers(out) == 1000 and out.count(SENT) + delivered_later(out) >= 1000,
    )
    assert out.count(SENT) + delivered_later(out) == 1000
    assert alice.quit() == 0
    assert bob.quit() == 0

    assert_received_once_in_order(bob_dir, texts(1, 1000))
    assert_sender_delivered_all(alice.data_dir, texts(1, 1000))


@pytest.mark.parametrize("acks_reach_sender", [False, True], ids=["acks-lost", "acks-received"])
def test_sender_killed_mid_delivery_resumes_from_its_database(
    tmp_path: Path,
    discovery_port: int,
    cleanup: list[Peer | PipedPeer | FrameGate],
    acks_reach_sender: bool,
) -> None:
    gate, alice, bob = gated_pair(cleanup, tmp_path, discovery_port)
    bob_dir = bob.data_dir
    meet_then_leave(alice, bob)

    everything = texts(1, 1000)
    alice.write(send_lines(everything))
    alice.wait_until("1000 queued", lambda out: out.count(QUEUED) == 1000)
    assert answers(alice.output) == 1 + 1000

    # Bob comes back; exactly 100 messages get through before Alice dies, their
    # acknowledgements recorded by Alice or lost on the way.
    gate.gate(up=2 + 100, down=None if acks_reach_sender else 1)
    bob = bob_behind(cleanup, tmp_path, discovery_port, gate)
    bob.expect(received_line(alice, "m0100"))
    if acks_reach_sender:
        wait_for_pending(alice.data_dir, 900)
    alice.kill()
    assert bob.output.count(f"({shown_as(alice)}): m") == 100

    with open_history(alice.data_dir) as store:
        pending = [m.text for m in store.pending_messages()]
    assert pending == everything[(100 if acks_reach_sender else 0) :]
    gate.gate(up=None, down=None)

    # Alice starts again and is given nothing to do: her queue is in her database.
    alice = piped(cleanup, "Alice", tmp_path, discovery_port, port=alice.port)
    bob.expect(received_line(alice, "m1000"))
    alice.wait_until(f"{len(pending)} delivered", lambda out: delivered_later(out) >= len(pending))
    assert delivered_later(alice.output) == len(pending)
    assert alice.quit() == 0
    assert bob.quit() == 0

    assert_received_once_in_order(bob_dir, ["hello", *everything])
    assert_sender_delivered_all(alice.data_dir, ["hello", *everything])


def test_queues_both_ways_meet_once_in_order(
    tmp_path: Path, discovery_port: int, cleanup: list[Peer | PipedPeer | FrameGate]
) -> None:
    """Each queued for the other while it was away; when both are up, both start connecting."""
    alice = piped(cleanup, "Alice", tmp_path, discovery_port)
    bob = piped(cleanup, "Bob", tmp_path, discovery_port)
    alice.expect("Discovered peer Bob")
    meet_then_leave(alice, bob)
    to_bob = [f"a{n:03d}" for n in range(1, 301)]
    alice.write(send_lines(to_bob))
    alice.wait_until("300 queued", lambda out: out.count(QUEUED) == 300)
    assert alice.quit() == 0

    bob = piped(cleanup, "Bob", tmp_path, discovery_port, port=bob.port)
    to_alice = [f"b{n:03d}" for n in range(1, 301)]
    bob.write("".join(f"1\nAlice\n{text}\n" for text in to_alice))
    bob.wait_until("300 queued", lambda out: out.count(QUEUED) == 300)
    alice = piped(cleanup, "Alice", tmp_path, discovery_port, port=alice.port)
    alice.expect(f"({shown_as(bob)}): b300\n")
    bob.expect(received_line(alice, "a300"))
    alice.wait_until("300 delivered", lambda out: delivered_later(out) >= 300)
    bob.wait_until(
        "300 delivered",
        lambda out: (
            sum(int(n) for n in re.findall(r"Delivered (\d+) queued .* to Alice ", out)) >= 300
        ),
    )
    assert alice.quit() == 0
    assert bob.quit() == 0
    assert_received_once_in_order(bob.data_dir, ["hello", *to_bob])
    assert_received_once_in_order(alice.data_dir, to_alice)
    assert_sender_delivered_all(alice.data_dir, ["hello", *to_bob])
    assert_sender_delivered_all(bob.data_dir, to_alice)


def test_a_network_gone_silent_mid_delivery_is_noticed_and_the_rest_resent(
    tmp_path: Path, discovery_port: int, cleanup: list[Peer | PipedPeer | FrameGate]
) -> None:
    """No reset, no goodbye: the connection just stops passing anything, both ways."""
    gate, alice, bob = gated_pair(cleanup, tmp_path, discovery_port)
    bob_dir = bob.data_dir
    meet_then_leave(alice, bob)
    everything = texts(1, 600)
    alice.write(send_lines(everything))
    alice.wait_until("600 queued", lambda out: out.count(QUEUED) == 600)

    gate.gate(up=2 + 100, down=None)
    bob = bob_behind(cleanup, tmp_path, discovery_port, gate)
    bob.expect(received_line(alice, "m0100"))
    gate.cut()
    gate.gate(up=None, down=None)
    bob.expect(received_line(alice, "m0600"))  # after the silence is noticed: peer timeout, 3 s
    alice.wait_until("600 delivered", lambda out: delivered_later(out) >= 600)
    assert delivered_later(alice.output) == 600
    assert alice.quit() == 0
    assert bob.quit() == 0
    assert_received_once_in_order(bob_dir, ["hello", *everything])
    assert_sender_delivered_all(alice.data_dir, ["hello", *everything])
