"""A real peer under attack on loopback: it stays up, bounded, and keeps serving its friends.

Every test starts a victim and a friend as real peer_chat processes. The
attacker is the test itself, talking from 127.0.0.2 and 127.0.0.3 (the friend
talks from 127.0.0.1), with raw sockets, a SecureChannel of its own, or raw
Noise for handshakes the real channel would never send. Each test checks what
a user or an operator would check: the hostile connection is closed, the
victim's log names its address and why, nothing hostile reaches the screen,
the friend's messages still arrive, the active list is unchanged, and the
victim's memory stays bounded.
"""

from __future__ import annotations

import contextlib
import enum
import random
import re
import secrets
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Self

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from crypto_utils import Identity, KeyManager, short_id
from peerchat.limits import (
    FIRST_MESSAGE_TIMEOUT,
    FRAME_HEADER_SIZE,
    HANDSHAKE_FAILURE_BURST,
    HANDSHAKE_FAILURE_RATE,
    HANDSHAKE_TIMEOUT,
    MAX_CONNECTIONS_PER_ADDRESS,
    MAX_FRAME_SIZE,
    MAX_PENDING_PER_ADDRESS,
    PROTOCOL_VERSION,
)
from peerchat.protocol.beacon import encode_beacon
from peerchat.protocol.channel import (
    PROLOGUE,
    PROTOCOL_NAME,
    STATIC_KEY_CONTEXT,
    Credentials,
    HandshakeComplete,
    MessageReceived,
    PeerHello,
    Role,
    SecureChannel,
    encode_hello_payload,
)
from peerchat.protocol.framing import FrameDecoder, encode_frame
from peerchat.protocol.messages import Ack, Chat, Message, Ping, Pong, new_msg_id
from peerchat.protocol.noise import DHLEN, HandshakeState, public_bytes
from tests.support import (
    BeaconSniffer,
    Peer,
    free_tcp_port,
    free_udp_port,
    peer_rows,
    shown_as,
)

pytestmark = pytest.mark.slow

HOSTILE_SOURCE = "127.0.0.2"  # the attacker's address; the real peers talk from 127.0.0.1
OTHER_SOURCE = "127.0.0.3"  # a second attacking address
AT_ONCE = 2.0  # seconds: "closed at once" is well under the handshake deadline
MIB = 1024  # KiB per MiB (VmRSS is in KiB)
FLOOD_MEMORY_MIB = 3  # VmRSS growth allowed over the garbage flood; 0.46-0.53 MiB measured


# -- raw sockets, logs, memory ------------------------------------------------------------


def tcp_client(
    port: int, *, source: str | None = None, host: str = "127.0.0.1", timeout: float = 5.0
) -> socket.socket:
    """A connected TCP socket, bound to the loopback address `source` if given."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        if source is not None:
            sock.bind((source, 0))
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def await_close(sock: socket.socket, timeout: float) -> float | None:
    """Seconds until the other end closes `sock` (end of stream or reset); None if it stays open.

    Whatever arrives meanwhile is read and dropped; `timeout` bounds the whole wait.
    """
    start = time.monotonic()
    deadline = start + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return None
        except OSError:  # reset: the peer aborted the connection
            return time.monotonic() - start
        if not data:
            return time.monotonic() - start
    return None


def vm_rss_kib(pid: int) -> int:
    """Resident memory of a process in KiB, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS line for pid {pid}")


def log_file(data_dir: Path) -> str:
    """A peer's log (DATA_DIR/peer_chat.log) as it is on disk now.

    A peer writes its log line before it closes the connection, so once the
    test has seen the close, the line is there: no waiting needed.
    """
    path = data_dir / "peer_chat.log"
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


# -- a peer played by the test ----------------------------------------------------------


class SecureClient:
    """A peer played by the test itself: the real protocol through channel.SecureChannel.

    It completes the handshake as initiator in the constructor; afterwards the
    test sends messages, raw bytes, or sealed frames it has tampered with.
    """

    def __init__(
        self,
        credentials: Credentials,
        port: int,
        *,
        source: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.sock = tcp_client(port, source=source, timeout=timeout)
        local = self.sock.getsockname()
        self.address = f"{local[0]}:{local[1]}"  # as the victim's log names it
        self.channel = SecureChannel(Role.INITIATOR, credentials)
        self.inbox: list[Message] = []
        try:
            self.peer = self._handshake(time.monotonic() + timeout)
        except BaseException:
            self.sock.close()
            raise

    def _handshake(self, deadline: float) -> PeerHello:
        self._flush()
        while True:
            data = self._recv(deadline)
            if not data:
                raise ConnectionError("the peer closed the connection during the handshake")
            hello: PeerHello | None = None
            for event in self.channel.receive_data(data):
                if isinstance(event, HandshakeComplete):
                    hello = event.peer
                else:
                    self.inbox.append(event.message)
            self._flush()
            if hello is not None:
                return hello

    def _recv(self, deadline: float) -> bytes:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("nothing from the peer in time")
        self.sock.settimeout(left)
        return self.sock.recv(65536)

    def _flush(self) -> None:
        data = self.channel.data_to_send()
        if data:
            self.sock.sendall(data)

    def send(self, *messages: Message) -> None:
        self.channel.send_messages(messages)
        self._flush()

    def sealed(self, message: Message) -> bytes:
        """The frame `message` goes out as, for the test to tamper with or replay."""
        self.channel.send_message(message)
        return self.channel.data_to_send()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def expect(self, wanted: Callable[[Message], bool], timeout: float = 10.0) -> Message:
        """The first message (kept or new) for which `wanted` is true; pings are answered."""
        deadline = time.monotonic() + timeout
        while True:
            for index, message in enumerate(self.inbox):
                if wanted(message):
                    del self.inbox[index]
                    return message
            data = self._recv(deadline)
            if not data:
                raise ConnectionError(f"the peer closed the connection; got {self.inbox}")
            for event in self.channel.receive_data(data):
                if isinstance(event, MessageReceived):
                    if isinstance(event.message, Ping):
                        self.send(Pong(event.message.nonce))
                    else:
                        self.inbox.append(event.message)

    def expect_ack(self, msg_id: str, timeout: float = 10.0) -> None:
        self.expect(lambda m: isinstance(m, Ack) and msg_id in m.msg_ids, timeout)

    def close(self) -> None:
        self.sock.close()


def rogue_handshake(
    port: int, identity: Identity, *, name: str, version: int = PROTOCOL_VERSION
) -> socket.socket:
    """Raw Noise XX as initiator with a hello of our choosing (a real identity signs it).

    Returns the socket once handshake message 3 is sent; the victim judges it then.
    """
    static = X25519PrivateKey.generate()
    hs = HandshakeState(PROTOCOL_NAME, initiator=True, prologue=PROLOGUE, s=static)
    sock = tcp_client(port, timeout=5.0)
    sock.sendall(encode_frame(hs.write_message(b"")))
    decoder = FrameDecoder()
    frames: list[bytes] = []
    deadline = time.monotonic() + 5.0
    while not frames:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = sock.recv(65536)
        assert data, "the victim closed before answering handshake message 1"
        frames = decoder.feed(data)
    hs.read_message(frames[0])  # the victim's own hello: not needed
    payload = encode_hello_payload(
        name=name,
        listen_port=7000,
        identity_der=identity.public_der,
        signature=identity.sign(STATIC_KEY_CONTEXT + public_bytes(static)),
        version=version,
    )
    sock.sendall(encode_frame(hs.write_message(payload)))
    return sock


# -- the scene: a victim, its friend, and what the victim logged -----------------------


@dataclass
class Scene:
    victim: Peer
    friend: Peer
    said: int = 0

    def friend_says(self, text: str) -> None:
        """The friend sends `text` through the menu; it must arrive on the victim's screen."""
        self.said += 1
        self.friend.send_to("127.0.0.1", text, port=self.victim.port)
        self.friend.expect_text(f"Message sent to {self.victim.addr}")
        self.victim.expect_text(
            f"Received from {self.friend.addr} ({shown_as(self.friend)}): {text}"
        )
        assert self.victim.child.isalive()

    def log(self) -> str:
        return log_file(self.victim.data_dir)

    def closings(self) -> dict[str, str]:
        """address -> reason of every 'closing connection' line in the victim's log."""
        return dict(_CLOSING.findall(self.log()))

    def screen_mark(self) -> int:
        """Where the victim's screen log ends now (see screen_since)."""
        self.victim.log.flush()
        return Path(self.victim.log.name).stat().st_size

    def screen_since(self, mark: int) -> str:
        """Everything the victim's terminal received since `mark`, escape bytes and all."""
        self.victim.log.flush()
        with open(self.victim.log.name, "rb") as screen:
            screen.seek(mark)
            return screen.read().decode("utf-8", errors="replace")

    def rss_kib(self) -> int:
        return vm_rss_kib(self.victim.child.pid)


_CLOSING = re.compile(r"closing connection (\d+\.\d+\.\d+\.\d+:\d+): (.*)")


@pytest.fixture(scope="module")
def mallory_id(tmp_path_factory: pytest.TempPathFactory) -> Identity:
    return KeyManager(tmp_path_factory.mktemp("mallory")).load_or_create_identity()


@pytest.fixture(scope="module")
def mallory(mallory_id: Identity) -> Credentials:
    return Credentials.create(mallory_id, "Mallory", free_tcp_port())


@pytest.fixture
def discovery_port() -> int:
    return free_udp_port()


@pytest.fixture
def scene(tmp_path: Path, discovery_port: int) -> Iterator[Scene]:
    # -v: the victim logs rejected beacons (at debug level, throttled).
    victim = Peer("Victim", tmp_path, discovery_port, peer_timeout=10.0, extra=["-v"])
    try:
        friend = Peer("Friend", tmp_path, discovery_port, peer_timeout=10.0)
    except BaseException:
        victim.close()
        raise
    try:
        yield Scene(victim, friend)
        assert victim.child.isalive(), "the victim died"
    finally:
        friend.close()
        victim.close()


# -- bounded attackers ------------------------------------------------------------------


class Background:
    """start / running / stop of an attacker whose `run()` goes on in a thread until stopped.

    A subclass (a dataclass) has `max_seconds`, `errors`, `_stop` and `_thread`
    fields, and says what its thread is called, how long past `max_seconds`
    stop() waits for it, and what it is called in the failure message.
    """

    thread_name: ClassVar[str]
    stop_grace: ClassVar[float]
    what: ClassVar[str]
    max_seconds: float
    errors: list[BaseException]
    _stop: threading.Event
    _thread: threading.Thread | None

    def run(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        self._thread = threading.Thread(target=self.run, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.max_seconds + self.stop_grace)
        assert not self.running, f"the {self.what} did not stop"
        if self.errors:
            raise self.errors[0]


def await_closes(
    socks: list[socket.socket],
    timeout: float,
    *,
    since: float | None = None,
    received: list[int] | None = None,
) -> dict[int, float]:
    """index -> seconds (from `since`, default now) until the victim closed that socket.

    Only sockets closed within `timeout` are listed; what arrives meanwhile is dropped,
    after adding its size to `received[index]` if given.
    """
    start = time.monotonic()
    origin = start if since is None else since
    closed: dict[int, float] = {}
    with selectors.DefaultSelector() as selector:
        for index, sock in enumerate(socks):
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, index)
        while len(closed) < len(socks) and (left := start + timeout - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                index = key.data
                assert isinstance(index, int)
                sock = socks[index]
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""  # reset
                if not data:
                    closed[index] = time.monotonic() - origin
                    selector.unregister(sock)
                elif received is not None:
                    received[index] += len(data)
    return closed


class Attack(enum.Enum):
    GARBAGE = "random bytes"
    HELLO_THEN_JUNK = "a valid first handshake message, then random bytes"
    HELLO_THEN_CLOSE = "a valid first handshake message, then the end of the stream"


EXPECTED_REASON = {  # how the victim's log says why it closed the connection
    Attack.GARBAGE: "protocol error",
    Attack.HELLO_THEN_JUNK: "protocol error",
    Attack.HELLO_THEN_CLOSE: "stream ended early",
}


def first_handshake_message() -> bytes:
    """A valid handshake message 1 (36 bytes: a length and a fresh ephemeral key): the victim
    answers it with a key exchange and its message 2, which carries its identity."""
    hs = HandshakeState(
        PROTOCOL_NAME, initiator=True, prologue=PROLOGUE, s=X25519PrivateKey.generate()
    )
    return encode_frame(hs.write_message(b""))


@dataclass(frozen=True)
class FloodResult:
    address: str  # ours, as the victim's log names it
    attack: Attack
    closed_after: float | None  # seconds until the victim closed it; None: it did not
    received: int  # bytes the victim sent back (its handshake message 2, if it got that far)


@dataclass
class GarbageFlood(Background):
    """Connections from `source`, in batches, in a thread: each sends random bytes, or a
    valid handshake message 1 and then random bytes or the end of its stream.

    It makes at least `minimum` connections and goes on until stopped, never
    more than `maximum` and never longer than `max_seconds`. For every
    connection it records our address, what it sent, how long the victim took
    to close it, and how many bytes the victim sent back.

    With `spread`, each batch comes from an address of its own (127.1.x.y,
    counting from `spread`), so every connection meets the parser and the key
    exchange, not the cool-down that one address's failed handshakes earn it.
    """

    thread_name = "garbage-flood"
    stop_grace = 10.0
    what = "flood"

    port: int
    minimum: int
    maximum: int
    source: str = HOSTILE_SOURCE
    batch: int = 32
    max_seconds: float = 90.0
    seed: int = 1
    spread: int | None = None
    results: list[FloodResult] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def run(self) -> None:
        rng = random.Random(self.seed)
        deadline = time.monotonic() + self.max_seconds
        try:
            while (
                (len(self.results) < self.minimum or not self._stop.is_set())
                and len(self.results) < self.maximum
                and time.monotonic() < deadline
            ):
                count = min(self.batch, self.maximum - len(self.results))
                source = self.source
                if self.spread is not None:
                    n = self.spread + len(self.results) // self.batch
                    source = f"127.1.{n // 250}.{n % 250 + 1}"
                socks = [tcp_client(self.port, source=source) for _ in range(count)]
                attacks = [rng.choice(list(Attack)) for _ in socks]
                for sock, attack in zip(socks, attacks, strict=True):
                    # At least a length prefix's worth, so no connection is merely slow.
                    garbage = rng.randbytes(rng.randrange(4, 512))
                    with contextlib.suppress(OSError):  # a reset already: a close too
                        if attack is Attack.GARBAGE:
                            sock.sendall(garbage)
                        else:
                            sock.sendall(first_handshake_message())
                        if attack is Attack.HELLO_THEN_JUNK:
                            sock.sendall(garbage)
                        elif attack is Attack.HELLO_THEN_CLOSE:
                            sock.shutdown(socket.SHUT_WR)
                received = [0] * len(socks)
                closed = await_closes(socks, HANDSHAKE_TIMEOUT + 3.0, received=received)
                for index, (sock, attack) in enumerate(zip(socks, attacks, strict=True)):
                    ip, port = sock.getsockname()
                    self.results.append(
                        FloodResult(f"{ip}:{port}", attack, closed.get(index), received[index])
                    )
                    sock.close()
        except BaseException as exc:
            self.errors.append(exc)


def junk_credentials() -> Credentials:
    """An identity no key backs: random bytes where the key and its signature go."""
    return Credentials(
        name="Junk",
        listen_port=7000,
        identity_der=secrets.token_bytes(300),
        static_private=X25519PrivateKey.generate(),
        static_signature=secrets.token_bytes(256),
    )


@dataclass
class JunkHandshakeFlood(Background):
    """Handshakes whose identity is junk, `in_flight` at a time from `source`, in threads.

    Each connection sends a valid handshake message 1. If the victim answers
    with message 2 (it did its key exchange), message 3 follows with the junk
    identity, which the victim must refuse; that connection counts as
    `answered`. A connection closed before a byte came back counts as
    `refused`: the victim turned it away before any key exchange.
    """

    thread_name = "junk-handshakes"
    stop_grace = 15.0
    what = "junk handshake flood"

    port: int
    source: str = HOSTILE_SOURCE
    in_flight: int = 16
    max_seconds: float = 60.0
    answered: int = 0
    refused: int = 0
    seconds: float = 0.0
    errors: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _progress: threading.Condition = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._progress = threading.Condition(self._lock)

    def run(self) -> None:
        start = time.monotonic()
        workers = [
            threading.Thread(target=self._worker, args=(start + self.max_seconds,), daemon=True)
            for _ in range(self.in_flight)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        self.seconds = time.monotonic() - start

    def wait_refused(self, count: int, timeout: float) -> bool:
        """Until `count` connections were refused (False if not within `timeout`)."""
        with self._progress:
            return self._progress.wait_for(lambda: self.refused >= count, timeout)

    def _worker(self, deadline: float) -> None:
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                answered = self._one()
                with self._progress:
                    if answered:
                        self.answered += 1
                    else:
                        self.refused += 1
                    self._progress.notify_all()
        except BaseException as exc:
            self.errors.append(exc)

    def _one(self) -> bool:
        """One junk handshake; whether the victim answered its first message."""
        channel = SecureChannel(Role.INITIATOR, junk_credentials())
        with tcp_client(self.port, source=self.source) as sock:
            sock.sendall(channel.data_to_send())
            try:
                data = sock.recv(65536)
            except OSError:  # reset
                data = b""
            if not data:
                return False
            with contextlib.suppress(OSError):
                channel.receive_data(data)  # message 2: the victim's real identity
                sock.sendall(channel.data_to_send())  # message 3: junk
            assert await_close(sock, HANDSHAKE_TIMEOUT + 3.0) is not None, "junk was kept"
            return True


def assert_closed_and_logged(
    scene: Scene,
    address: str,
    seconds: float | None,
    reason: str,
    *,
    within: float = AT_ONCE,
    case: str = "",
) -> None:
    """The victim closed `address` within `within` seconds and logged it with `reason`."""
    what = f"{case}: {address}" if case else address
    assert seconds is not None, f"{what} was not closed"
    assert seconds < within, f"{what} took {seconds:.2f} s to be closed"
    closings = scene.closings()
    assert address in closings, f"no log line closing {what}"
    assert reason in closings[address], f"{what}: {closings[address]}"


# -- connections that never become a session --------------------------------------------


def test_garbage_flood_is_closed_logged_and_memory_stays_bounded(scene: Scene) -> None:
    """Random bytes cost the victim a length check; a valid first handshake message costs it
    a key exchange and its message 2. Either way each connection is closed at once, with
    a line in the log, and the memory the flood leaves behind is small. (A batch per
    address: one address alone would soon be refused before its first byte, as
    test_an_address_whose_handshakes_keep_failing_is_refused_before_any_key_exchange shows.)"""
    scene.friend_says("before the flood")
    warm = GarbageFlood(scene.victim.port, minimum=200, maximum=200, seed=7, spread=0).start()
    warm.stop()
    before = scene.rss_kib()
    log_mark = len(scene.log())

    # At least 2,000 connections, and on until the friend's message is through.
    flood = GarbageFlood(
        scene.victim.port, minimum=2000, maximum=20_000, seed=8, spread=100
    ).start()
    scene.friend_says("during the flood")
    assert flood.running, "the flood ended before the message arrived: not measured during it"
    flood.stop()
    after = scene.rss_kib()

    results = flood.results
    assert len(results) >= 2000
    slow = [r for r in results if r.closed_after is None or r.closed_after >= AT_ONCE]
    assert not slow, f"{len(slow)} connections not closed at once, e.g. {slow[:3]}"
    # One line per connection, with the reason its attack earns; ports are reused, so
    # count (address, reason) pairs logged since the flood began.
    logged = Counter(
        (address, reason.split(":")[0])
        for address, reason in _CLOSING.findall(scene.log()[log_mark:])
    )
    expected = Counter((r.address, EXPECTED_REASON[r.attack]) for r in results)
    missing, extra = expected - logged, logged - expected
    assert not missing, f"{sum(missing.values())} closings not logged so, e.g. {list(missing)[:3]}"
    assert not extra, f"{sum(extra.values())} unexpected closings, e.g. {list(extra)[:3]}"
    # The key exchange really was done: a first message alone gets a message 2 back. (With
    # junk right behind it, the victim drops its unsent message 2 when the junk fails.)
    alone = [r for r in results if r.attack is Attack.HELLO_THEN_CLOSE]
    unanswered = [r for r in alone if r.received <= FRAME_HEADER_SIZE + 2 * DHLEN]
    assert not unanswered, f"{len(unanswered)} first messages got no message 2: {unanswered[:3]}"
    growth = (after - before) / MIB
    print(f"VmRSS grew by {growth:.2f} MiB over {len(results)} connections")
    assert growth < FLOOD_MEMORY_MIB, (
        f"VmRSS grew by {growth:.1f} MiB over {len(results)} connections"
    )
    scene.friend_says("after the flood")


def test_an_address_whose_handshakes_keep_failing_is_refused_before_any_key_exchange(
    scene: Scene, mallory: Credentials, mallory_id: Identity
) -> None:
    """Junk identities from one address cost the victim a key exchange each, until the
    address has spent its failures; then its connections are refused before a byte is
    read, while a peer from another address still completes a handshake and a message."""
    flood = JunkHandshakeFlood(scene.victim.port).start()
    try:
        assert flood.wait_refused(4 * flood.in_flight, timeout=30.0), (
            f"none refused early: {flood.answered} junk handshakes answered, {flood.refused} not"
        )
        # During the flood: a new peer from another address, and the friend's session.
        other = SecureClient(mallory, scene.victim.port, source=OTHER_SOURCE, timeout=5.0)
        chat = Chat(new_msg_id(time.time()), time.time(), "through the junk flood")
        other.send(chat)
        other.expect_ack(chat.msg_id, timeout=5.0)
        other.close()
        scene.victim.expect_text(f"(Mallory, ID {short_id(mallory_id.fingerprint)}): {chat.text}")
        scene.friend_says("during the junk handshake flood")
        assert flood.running, "the flood ended before the peers were served: not measured"
    finally:
        flood.stop()
    # Beyond the address's burst, the handshakes already in flight when it ran out and
    # what its bucket refilled meanwhile, none got as far as a key exchange.
    bound = HANDSHAKE_FAILURE_BURST + flood.in_flight + HANDSHAKE_FAILURE_RATE * flood.seconds
    assert flood.answered <= bound, f"{flood.answered} junk handshakes answered ({bound:.0f})"
    assert f"refusing connections from {HOSTILE_SOURCE}" in scene.log()
    scene.friend_says("after the junk handshake flood")


def test_slowloris_is_dropped_at_the_handshake_deadline(scene: Scene) -> None:
    # A plausible handshake message 1 (length 32, then the key), one byte a second.
    trickle = (32).to_bytes(4, "big") + bytes(range(32))
    clients = [tcp_client(scene.victim.port, source=HOSTILE_SOURCE) for _ in range(4)]
    names = ["{}:{}".format(*c.getsockname()) for c in clients]
    opened = time.monotonic()
    closed_after: dict[int, float] = {}

    def drip() -> None:
        for byte in trickle[:12]:  # bounded: the deadline falls at the 5th byte
            still_open = [i for i in range(len(clients)) if i not in closed_after]
            if not still_open:
                return
            for index in still_open:
                try:
                    clients[index].send(bytes([byte]))
                except OSError:
                    closed_after[index] = time.monotonic() - opened
            # The one-second pace is itself a bounded wait for the close we expect.
            waiting = [i for i in still_open if i not in closed_after]
            closes = await_closes([clients[i] for i in waiting], 1.0, since=opened)
            for position, seconds in closes.items():
                closed_after[waiting[position]] = seconds

    dripping = threading.Thread(target=drip, name="slowloris", daemon=True)
    dripping.start()
    scene.friend_says("while the slow clients drip")
    assert dripping.is_alive(), "the slow clients were gone before the friend's message"
    dripping.join(20)
    assert not dripping.is_alive()
    for client in clients:
        client.close()
    assert sorted(closed_after) == list(range(len(clients))), f"closed: {closed_after}"
    for index, name in enumerate(names):
        seconds = closed_after[index]
        assert seconds >= HANDSHAKE_TIMEOUT - 0.5, f"{name} dropped early, after {seconds:.2f} s"
        assert_closed_and_logged(
            scene, name, seconds, "handshake took too long", within=HANDSHAKE_TIMEOUT + 2.0
        )
    scene.friend_says("after the slow clients")


def test_idle_connections_from_one_address_hold_only_its_share_of_pending_slots(
    scene: Scene, mallory: Credentials
) -> None:
    limit = MAX_CONNECTIONS_PER_ADDRESS
    extra = 16
    share = MAX_PENDING_PER_ADDRESS
    socks = [tcp_client(scene.victim.port, source=HOSTILE_SOURCE) for _ in range(limit + extra)]
    names = ["{}:{}".format(*s.getsockname()) for s in socks]
    try:
        # Nobody is refused: each new idle connection beyond the address's share of
        # pending handshakes pushes out the oldest one from that address, at once.
        quick = await_closes(socks, AT_ONCE - FIRST_MESSAGE_TIMEOUT)
        assert sorted(quick) == list(range(limit + extra - share)), sorted(quick)
        closings = scene.closings()
        for name in names[: limit + extra - share]:
            assert "dropped for a newer connection" in closings.get(name, ""), name

        # Meanwhile peers from other addresses are served: the friend (127.0.0.1) ...
        scene.friend_says(f"while {HOSTILE_SOURCE} holds idle connections")
        # ... and a peer of our own from 127.0.0.3.
        other = SecureClient(mallory, scene.victim.port, source=OTHER_SOURCE)
        assert other.peer.name == "Victim"
        other.close()

        # The ones still held sent nothing: dropped at the first-message deadline, logged.
        held = socks[limit + extra - share :]
        late = await_closes(held, FIRST_MESSAGE_TIMEOUT + AT_ONCE)
        assert len(late) == share, f"{share - len(late)} held connections never closed"
        closings = scene.closings()
        for name in names[limit + extra - share :]:
            assert "no handshake started in time" in closings.get(name, ""), name
    finally:
        for sock in socks:
            sock.close()
    # The count was given back: 127.0.0.2 may connect again.
    again = SecureClient(mallory, scene.victim.port, source=HOSTILE_SOURCE)
    assert again.peer.name == "Victim"
    again.close()
    scene.friend_says("after the connection flood")


def test_oversized_and_zero_length_prefixes_are_refused_before_buffering(
    scene: Scene, mallory: Credentials
) -> None:
    before = scene.rss_kib()
    # Only the 4-byte prefix is sent: a victim that waited for the body would not close.
    common = {
        "all ones": b"\xff\xff\xff\xff",
        "one over the frame limit": (MAX_FRAME_SIZE + 1).to_bytes(4, "big"),
        "zero": b"\x00\x00\x00\x00",
    }
    before_handshake = {**common, "64 KiB, over the handshake limit": (65536).to_bytes(4, "big")}
    for case, header in before_handshake.items():
        with tcp_client(scene.victim.port, source=HOSTILE_SOURCE) as sock:
            name = "{}:{}".format(*sock.getsockname())
            sock.sendall(header)
            seconds = await_close(sock, AT_ONCE + 1)
        assert_closed_and_logged(scene, name, seconds, "frame length", case=case)
    for case, header in common.items():
        client = SecureClient(mallory, scene.victim.port)
        try:
            client.send_raw(header)
            seconds = await_close(client.sock, AT_ONCE + 1)
        finally:
            client.close()
        assert_closed_and_logged(
            scene, client.address, seconds, "frame length", case=f"after handshake, {case}"
        )
    assert scene.rss_kib() - before < 10 * MIB
    scene.friend_says("after the oversized frames")


# -- hostile bytes inside an authenticated session -----------------------------------------


def test_random_bytes_after_a_valid_handshake_close_only_that_session(
    scene: Scene, mallory: Credentials
) -> None:
    rng = random.Random(3)
    cases = {
        # A plausible frame whose body is noise: authentication fails.
        "noise in a frame": (200).to_bytes(4, "big") + rng.randbytes(200),
        # Pure noise: most likely an impossible length.
        "pure noise": rng.randbytes(300),
    }
    assert int.from_bytes(cases["pure noise"][:4], "big") > MAX_FRAME_SIZE  # not a slow frame
    for case, data in cases.items():
        client = SecureClient(mallory, scene.victim.port)
        hello = Chat(new_msg_id(time.time()), time.time(), f"legit before {case}")
        client.send(hello)
        client.expect_ack(hello.msg_id)
        client.send_raw(data)
        seconds = await_close(client.sock, AT_ONCE + 1)
        client.close()
        assert_closed_and_logged(scene, client.address, seconds, "protocol error", case=case)
    scene.friend_says("after the noise")


def test_bad_tag_and_replayed_frames_are_refused(scene: Scene, mallory: Credentials) -> None:
    mark = scene.screen_mark()
    # One bit flipped in the tag.
    client = SecureClient(mallory, scene.victim.port)
    frame = bytearray(client.sealed(Chat(new_msg_id(time.time()), time.time(), "tampered secret")))
    frame[-1] ^= 0x01
    client.send_raw(bytes(frame))
    seconds = await_close(client.sock, AT_ONCE + 1)
    client.close()
    assert_closed_and_logged(scene, client.address, seconds, "message authentication failed")

    # A valid frame sent twice: the copy carries a used nonce.
    client = SecureClient(mallory, scene.victim.port)
    once = Chat(new_msg_id(time.time()), time.time(), "said once only")
    frame = bytearray(client.sealed(once))
    client.send_raw(bytes(frame))
    client.expect_ack(once.msg_id)
    client.send_raw(bytes(frame))
    seconds = await_close(client.sock, AT_ONCE + 1)
    client.close()
    assert_closed_and_logged(scene, client.address, seconds, "message authentication failed")

    scene.friend_says("after the tampering")
    screen = scene.screen_since(mark)
    assert "tampered secret" not in screen
    assert screen.count("said once only") == 1
    history = scene.victim.history()
    assert "tampered secret" not in history
    assert history.count("said once only") == 1


@pytest.mark.parametrize(
    ("name", "version", "reason"),
    [
        ("Mallory", PROTOCOL_VERSION + 1, f"unsupported protocol version {PROTOCOL_VERSION + 1}"),
        ("Mallory", 0, "unsupported protocol version 0"),
        ("Evil\x1b[2J\x1b]0;pwned\x07", PROTOCOL_VERSION, "bad peer name"),
        ("Evil\nPeer Bank connected", PROTOCOL_VERSION, "bad peer name"),
        ("Evil\u202eredro", PROTOCOL_VERSION, "bad peer name"),
    ],
    ids=["newer-version", "version-0", "escape-in-name", "newline-in-name", "bidi-in-name"],
)
def test_handshake_with_wrong_version_or_hostile_name_is_refused(
    scene: Scene, mallory_id: Identity, name: str, version: int, reason: str
) -> None:
    mark = scene.screen_mark()
    sock = rogue_handshake(scene.victim.port, mallory_id, name=name, version=version)
    address = "{}:{}".format(*sock.getsockname())
    with sock:
        seconds = await_close(sock, AT_ONCE + 1)
    assert_closed_and_logged(scene, address, seconds, reason)
    scene.friend_says("after the rogue handshake")
    screen = scene.screen_since(mark)
    for trace in ("Evil", "pwned", "Mallory", ":7000"):  # 7000: the rogue's listen port
        assert trace not in screen, f"{trace!r} reached the victim's screen"
    assert "Evil" not in scene.victim.peers_table()


class RogueListener:
    """A listener the victim dials: it answers handshake message 1 with `reply(msg1)`.

    One connection, in a thread; it records whether the victim closed it.
    """

    def __init__(self, reply: Callable[[bytes], bytes]) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.reply = reply
        self.closed_after: float | None = None
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, name="rogue", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            self.server.settimeout(15.0)
            conn, _ = self.server.accept()
            with conn:
                conn.settimeout(5.0)
                decoder = FrameDecoder()
                frames: list[bytes] = []
                while not frames:
                    data = conn.recv(65536)
                    assert data, "the victim hung up before handshake message 1"
                    frames = decoder.feed(data)
                conn.sendall(self.reply(frames[0]))
                self.closed_after = await_close(conn, AT_ONCE)
        except BaseException as exc:
            self.errors.append(exc)

    def join(self) -> None:
        self._thread.join(20.0)
        self.server.close()
        assert not self._thread.is_alive()
        if self.errors:
            raise self.errors[0]


def _garbage_reply(_: bytes) -> bytes:
    return random.Random(5).randbytes(300)


def _hostile_name_reply(identity: Identity) -> Callable[[bytes], bytes]:
    def reply(message_1: bytes) -> bytes:
        static = X25519PrivateKey.generate()
        hs = HandshakeState(PROTOCOL_NAME, initiator=False, prologue=PROLOGUE, s=static)
        hs.read_message(message_1)
        payload = encode_hello_payload(
            name="Evil\x1b]0;pwned\x07",
            listen_port=7000,
            identity_der=identity.public_der,
            signature=identity.sign(STATIC_KEY_CONTEXT + public_bytes(static)),
        )
        return encode_frame(hs.write_message(payload))

    return reply


@pytest.mark.parametrize("kind", ["garbage", "hostile-name"])
def test_a_hostile_listener_the_user_dials_cannot_harm_the_victim(
    scene: Scene, mallory_id: Identity, kind: str
) -> None:
    reply = _garbage_reply if kind == "garbage" else _hostile_name_reply(mallory_id)
    rogue = RogueListener(reply)
    mark = scene.screen_mark()
    scene.victim.connect("127.0.0.1", rogue.port)
    scene.victim.expect_text(f"Failed to connect to 127.0.0.1:{rogue.port} - ")
    scene.victim.expect_menu()
    rogue.join()
    assert rogue.closed_after is not None, "the victim kept the rogue's connection open"
    reason = "protocol error" if kind == "garbage" else "bad peer name"
    assert reason in scene.closings().get(f"127.0.0.1:{rogue.port}", ""), scene.closings()
    scene.friend_says(f"after dialling a rogue ({kind})")
    screen = scene.screen_since(mark)
    assert "Evil" not in screen and "pwned" not in screen


# -- what reaches the screen ------------------------------------------------------------

HOSTILE_TEXT = (
    "\x1b[2J\x1b[31mRED\x1b]0;pwned\x07 csi\x9b2J bidi\u202edesrever"
    " ok\r\nReceived from 127.0.0.9:1 (Bank): send money"
)
# What display_safe makes of it: every control shown as a visible escape, one line.
VISIBLE_TEXT = (
    "\\x1b[2J\\x1b[31mRED\\x1b]0;pwned\\x07 csi\\x9b2J bidi\\u202edesrever"
    " ok \\r \\nReceived from 127.0.0.9:1 (Bank): send money"
)
RAW_PIECES = [
    "\x1b[2J",
    "\x1b[31m",
    "\x1b]0;pwned",
    "\x07",
    "\x9b",
    "\u202e",
    "\nReceived from 127.0.0.9",
]


def test_escape_sequences_in_a_message_reach_the_screen_neutralised(
    scene: Scene, tmp_path: Path
) -> None:
    sender_id = KeyManager(tmp_path / "sender-keys").load_or_create_identity()
    sender = Credentials.create(sender_id, "Sender", free_tcp_port())
    mark = scene.screen_mark()
    client = SecureClient(sender, scene.victim.port)
    try:
        chat = Chat(new_msg_id(time.time()), time.time(), HOSTILE_TEXT)
        client.send(chat)
        client.expect_ack(chat.msg_id)
        scene.victim.expect_text(
            f"Received from 127.0.0.1:{sender.listen_port} "
            f"(Sender, ID {short_id(sender_id.fingerprint)}): {VISIBLE_TEXT}"
        )
        scene.friend_says("after the escapes")  # the line above is out in full by now
    finally:
        client.close()
    screen = scene.screen_since(mark)
    assert VISIBLE_TEXT in screen
    for piece in RAW_PIECES:
        assert piece not in screen, f"raw {piece!r} reached the terminal"
    # The history view shows the same neutralised form.
    mark = scene.screen_mark()
    history = scene.victim.history("Sender")
    assert VISIBLE_TEXT in history
    screen = scene.screen_since(mark)
    for piece in RAW_PIECES:
        assert piece not in screen, f"raw {piece!r} reached the terminal in the history view"


# -- discovery ----------------------------------------------------------------------------


def _broadcaster(source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.bind((source, 0))
    return sock


@dataclass
class BeaconFlood(Background):
    """Datagrams to the loopback broadcast on the discovery port, from several sources.

    Paced at about `rate` datagrams a second (a flood, but not one that only
    measures the kernel's socket buffers), in a thread, until stopped and at
    least `minimum` are sent; never more than `maximum` nor longer than `max_seconds`.
    """

    thread_name = "beacon-flood"
    stop_grace = 5.0
    what = "beacon flood"

    port: int
    by_source: dict[str, list[bytes]]
    rate: float = 4000.0
    minimum: int = 4000  # sent even if stopped earlier
    maximum: int = 400_000
    max_seconds: float = 60.0
    sent: int = 0
    errors: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def run(self) -> None:
        socks = {source: _broadcaster(source) for source in self.by_source}
        start = time.monotonic()
        try:
            while (
                (self.sent < self.minimum or not self._stop.is_set())
                and self.sent < self.maximum
                and time.monotonic() - start < self.max_seconds
            ):
                for source, datagrams in self.by_source.items():
                    for data in datagrams:  # interleaved, so every kind gets judged
                        socks[source].sendto(data, ("127.255.255.255", self.port))
                        self.sent += 1
                ahead = self.sent / self.rate - (time.monotonic() - start)
                if ahead > 0 and not self._stop.is_set():
                    self._stop.wait(ahead)  # pacing, not waiting for an outcome
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            for sock in socks.values():
                sock.close()


def test_forged_and_replayed_beacons_leave_the_active_list_alone(
    scene: Scene, mallory_id: Identity, discovery_port: int
) -> None:
    victim, friend = scene.victim, scene.friend
    victim.expect_text(f"Discovered peer Friend at {friend.addr}")
    listed = [(r.name, r.address, r.short_id) for r in peer_rows(victim.peers_table())]
    assert [row[:2] for row in listed] == [("Friend", friend.addr)]

    sniffer = BeaconSniffer(discovery_port)
    try:
        sniffer.drain()
        older, _ = sniffer.next_beacon("Friend")
        newer, last = sniffer.next_beacon("Friend")
        ghost = bytearray(encode_beacon(mallory_id, "Ghost", 4242, bytes(16), 0, time.time()))
        ghost[-1] ^= 0x01  # right format, wrong signature
        # The friend's beacon, pointed at another port, numbered past any replay check.
        moved = bytearray(newer)
        moved[10:12] = (4242).to_bytes(2, "big")
        moved[36:44] = (last.seq + 1000).to_bytes(8, "big")
        flood = BeaconFlood(
            discovery_port,
            {HOSTILE_SOURCE: [bytes(ghost), bytes(moved)], OTHER_SOURCE: [older, newer]},
        )
        mark = scene.screen_mark()
        flood.start()
        try:
            scene.friend_says("during the beacon flood")
            # The friend's own beacons keep coming through the flood: await two new ones.
            seq, deadline = last.seq, time.monotonic() + 10.0
            while seq < last.seq + 2 and time.monotonic() < deadline:
                _, beacon = sniffer.next_beacon("Friend", timeout=deadline - time.monotonic())
                seq = max(seq, beacon.seq)
            assert seq >= last.seq + 2, "the friend's beacons stopped during the flood"
            during = [(r.name, r.address, r.short_id) for r in peer_rows(victim.peers_table())]
            assert flood.running
        finally:
            flood.stop()
    finally:
        sniffer.close()
    assert flood.sent >= flood.minimum, f"only {flood.sent} beacons sent: not a flood"
    assert during == listed
    after = [(r.name, r.address, r.short_id) for r in peer_rows(victim.peers_table())]
    assert after == listed
    screen = scene.screen_since(mark)
    assert "Discovered peer" not in screen and "Ghost" not in screen
    log = scene.log()
    assert f"beacon from {HOSTILE_SOURCE} rejected: bad signature" in log
    assert f"beacon from {OTHER_SOURCE} rejected: replay" in log
    # Rejections are logged, but not one line per datagram.
    assert log.count("beacon from") < 100
    scene.friend_says("after the beacon flood")
