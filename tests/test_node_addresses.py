"""A peer is its key: real nodes over loopback, and what an address, a name or a beacon may do.

Every node runs in this process, listens on a loopback address and, where
discovery is on, beacons to the loopback broadcast address on a port chosen
per test. Impostors are played by the test: a second key with its own
handshake (through the real channel), and beacons it signs and sends itself.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from crypto_utils import Identity, KeyManager
from peerchat.events import (
    KeyChanged,
    MessageArrived,
    Outcome,
    PeerConnected,
    PeerDiscovered,
    PeerOffline,
    PeerRenamed,
    Problem,
    UiEvent,
)
from peerchat.limits import BEACON_VERIFY_RATE, MAX_CONNECTIONS_PER_ADDRESS
from peerchat.net.node import NodeConfig
from peerchat.protocol.beacon import INSTANCE_SIZE, encode_beacon
from peerchat.protocol.channel import Credentials
from peerchat.protocol.messages import Chat
from storage import DeliveryState
from tests.support import (
    LOOPBACK_BROADCAST,
    RunningNode,
    free_tcp_port,
    free_udp_port,
    open_profile,
    start_node,
)
from tests.test_hostile_e2e import SecureClient

WAIT = 15.0


class Running(RunningNode):
    identity: Identity

    def wait_for(self, wanted: Callable[[UiEvent], bool], timeout: float = WAIT) -> UiEvent:
        with self.changed:
            assert self.changed.wait_for(lambda: any(wanted(e) for e in self.events), timeout), (
                f"not seen; events: {self.events}"
            )
            return next(e for e in self.events if wanted(e))

    def wait_for_text(self, text: str, timeout: float = WAIT) -> MessageArrived:
        event = self.wait_for(lambda e: isinstance(e, MessageArrived) and e.text == text, timeout)
        assert isinstance(event, MessageArrived)
        return event

    def received(self) -> list[str]:
        with self.changed:
            return [e.text for e in self.events if isinstance(e, MessageArrived)]

    def seen(self, kind: type[UiEvent]) -> list[UiEvent]:
        with self.changed:
            return [e for e in self.events if isinstance(e, kind)]

    @property
    def fingerprint(self) -> str:
        return self.identity.fingerprint


class Nodes:
    """Nodes started for one test, closed at its end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.running: list[Running] = []
        self.discovery_port = free_udp_port()

    def start(
        self,
        name: str,
        *,
        port: int | None = None,
        bind: str = "127.0.0.1",
        discovery: bool = False,
        data: str | None = None,
        quota_messages_per_hour: int = NodeConfig.quota_messages_per_hour,
    ) -> Running:
        folder = self.tmp / (data or name)
        identity, store = open_profile(folder)
        config = NodeConfig(
            name=name,
            port=port or free_tcp_port(),
            data_dir=folder,
            bind=bind,
            discovery=discovery,
            broadcast=LOOPBACK_BROADCAST,
            discovery_port=self.discovery_port,
            beacon_interval=0.5,
            peer_timeout=3.0,
            quota_messages_per_hour=quota_messages_per_hour,
        )
        node = start_node(config, identity, store, Running)
        node.identity = identity
        self.running.append(node)
        return node

    def stop(self, node: Running) -> None:
        node.close()
        self.running.remove(node)

    def close(self) -> None:
        for node in reversed(self.running):
            with contextlib.suppress(Exception):
                node.close()


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    started = Nodes(tmp_path)
    yield started
    started.close()


@pytest.fixture(scope="module")
def mallory_id(tmp_path_factory: pytest.TempPathFactory) -> Identity:
    return KeyManager(tmp_path_factory.mktemp("mallory")).load_or_create_identity()


def beacon_from(identity: Identity, name: str, tcp_port: int, discovery_port: int) -> None:
    """A valid beacon signed by `identity`, from 127.0.0.1, claiming `tcp_port`."""
    data = encode_beacon(
        identity, name, tcp_port, secrets.token_bytes(INSTANCE_SIZE), 0, time.time()
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.sendto(data, (LOOPBACK_BROADCAST, discovery_port))


def listed(node: Running, fp: str) -> tuple[str, int] | None:
    for peer in node.node.active_peers():
        if peer.fingerprint == fp:
            return peer.host, peer.port
    return None


def wait_listed(node: Running, fp: str, where: tuple[str, int] | None = None) -> None:
    deadline = time.monotonic() + WAIT
    while (at := listed(node, fp)) is None or (where is not None and at != where):
        assert time.monotonic() < deadline, f"{fp[:8]} not listed at {where}: {at}"
        time.sleep(0.02)  # the list has no event of its own to await


class Listener:
    """A TCP port the test holds, to see whether (and when) a node dials it."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port or 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])

    def dialled(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        try:
            conn, _ = self.sock.accept()
        except TimeoutError:
            return False
        conn.close()
        return True

    def close(self) -> None:
        self.sock.close()


class Forwarder:
    """A port forward on loopback: connections to 127.0.0.1:port go on to `target`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = Listener()
        self.port = self.listener.port
        self.accepted = 0
        self._closed = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.listener.sock.settimeout(None)
        while not self._closed:
            try:
                client, _ = self.listener.sock.accept()
            except OSError:
                return
            self.accepted += 1
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self.listener.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    source.settimeout(None)
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


# -- an address resolves to a key only through a handshake there ----------------------------


def test_typing_alices_address_never_delivers_to_a_key_that_only_claims_it(
    nodes: Nodes, mallory_id: Identity
) -> None:
    bob = nodes.start("Bob", discovery=True)
    alice = nodes.start("Alice")
    # Mallory, from Alice's host, says in its hello that it listens on Alice's port ...
    claims_alice = Credentials.create(mallory_id, "Mallory", alice.port)
    mallory = SecureClient(claims_alice, bob.port)
    try:
        wait_listed(bob, mallory_id.fingerprint, ("127.0.0.1", alice.port))
        # ... and its beacon says so too.
        beacon_from(mallory_id, "Mallory", alice.port, nodes.discovery_port)
        result = bob.node.send_to_address("127.0.0.1", alice.port, "for Alice only")
        assert result.outcome is Outcome.DELIVERED, result
        assert result.fingerprint == alice.fingerprint
        assert (result.name, result.host, result.port) == ("Alice", "127.0.0.1", alice.port)
        alice.wait_for_text("for Alice only")
        with pytest.raises((TimeoutError, ConnectionError)):
            mallory.expect(lambda m: isinstance(m, Chat), timeout=0.5)
    finally:
        mallory.close()


def test_another_key_answering_at_a_known_address_is_named_and_gets_nothing(
    nodes: Nodes,
) -> None:
    bob = nodes.start("Bob")
    alice = nodes.start("Alice")
    first = bob.node.send_to_address("127.0.0.1", alice.port, "hello Alice")
    assert first.outcome is Outcome.DELIVERED
    port = alice.port
    nodes.stop(alice)
    mallory = nodes.start("Mallory", port=port)  # someone else now answers there
    result = bob.node.send_to_address("127.0.0.1", port, "meant for Alice")
    assert result.outcome is Outcome.OTHER_KEY, result
    assert (result.name, result.fingerprint) == ("Mallory", mallory.fingerprint)
    assert result.expected_name == "Alice"
    assert result.expected_fingerprint == alice.fingerprint
    # The address still belongs to Alice: typed again, it is refused again.
    again = bob.node.send_to_address("127.0.0.1", port, "still meant for Alice")
    assert again.outcome is Outcome.OTHER_KEY, again
    # Told, on the wire, to nobody: the history of Mallory holds nothing from Bob.
    assert [r.text for r in mallory.store.history(limit=10)] == []
    assert "meant for Alice" not in mallory.received()
    assert "still meant for Alice" not in mallory.received()


def test_a_port_forward_is_named_as_typed_and_retried_first(nodes: Nodes) -> None:
    bob = nodes.start("Bob", bind="127.0.0.2")
    forward = Forwarder(("127.0.0.2", bob.port))
    alice = nodes.start("Alice")
    try:
        sent = alice.node.send_to_address("127.0.0.1", forward.port, "through the forward")
        assert sent.outcome is Outcome.DELIVERED, sent
        assert (sent.host, sent.port) == ("127.0.0.1", forward.port)  # as typed, not Bob's 29586
        assert (sent.name, sent.fingerprint) == ("Bob", bob.fingerprint)
        bob_port = bob.port
        nodes.stop(bob)
        queued = alice.node.send_to_peer(bob.fingerprint, "while Bob is away")
        assert queued.outcome is Outcome.QUEUED, queued
        before = forward.accepted
        bob = nodes.start("Bob", bind="127.0.0.2", port=bob_port)
        # Only the forward reaches Bob: the queued message comes through it.
        bob.wait_for_text("while Bob is away", timeout=30)
        assert forward.accepted > before
    finally:
        forward.close()


# -- nothing dialled that a handshake did not confirm ----------------------------------------


def test_connect_all_and_the_retry_dial_only_confirmed_addresses(
    nodes: Nodes, mallory_id: Identity
) -> None:
    bob = nodes.start("Bob", discovery=True)
    alice = nodes.start("Alice")
    assert bob.node.send_to_address("127.0.0.1", alice.port, "hi").outcome is Outcome.DELIVERED
    alice_port = alice.port
    alice_id = alice.identity
    nodes.stop(alice)
    queued = bob.node.send_to_peer(alice_id.fingerprint, "queued for Alice")
    assert queued.outcome is Outcome.QUEUED
    elsewhere = Listener()  # any service on the LAN a beacon could point at
    where_alice_was = Listener(port=alice_port)
    try:
        # A replayed-then-redirected beacon of Alice's, and Mallory's own, both pointing there.
        beacon_from(alice_id, "Alice", elsewhere.port, nodes.discovery_port)
        beacon_from(mallory_id, "Mallory", elsewhere.port, nodes.discovery_port)
        wait_listed(bob, mallory_id.fingerprint, ("127.0.0.1", elsewhere.port))
        results = bob.node.connect_all()
        assert len(results) == 2
        mallory_row = next(r for r in results if r.name == "Mallory")
        assert not mallory_row.ok and "never reached" in mallory_row.detail
        alice_row = next(r for r in results if r is not mallory_row)
        assert (alice_row.host, alice_row.port) == ("127.0.0.1", alice_port)
        # The retry for the queued message goes where Alice last answered ...
        assert where_alice_was.dialled(timeout=WAIT)
        # ... and nobody was sent to the address the beacons named.
        assert not elsewhere.dialled(timeout=0.2)
    finally:
        elsewhere.close()
        where_alice_was.close()


# -- a beacon never blocks a pinned key; a handshake conflict clears -----------------------------


def test_a_forged_beacon_under_a_pinned_name_blocks_nothing(
    nodes: Nodes, mallory_id: Identity
) -> None:
    bob = nodes.start("Bob", discovery=True)
    alice = nodes.start("Alice")
    assert bob.node.send_to_address("127.0.0.1", alice.port, "hi").outcome is Outcome.DELIVERED
    port = alice.port
    nodes.stop(alice)
    beacon_from(mallory_id, "Alice", port + 1, nodes.discovery_port)
    stranger = Identity.generate(2048)
    beacon_from(stranger, "Zed", port + 2, nodes.discovery_port)  # sent after: seen after
    bob.wait_for(lambda e: isinstance(e, PeerDiscovered) and e.name == "Zed")
    assert bob.node.key_conflicts() == []
    assert bob.seen(KeyChanged) == []
    alice = nodes.start("Alice", port=port)
    result = bob.node.send_to_peer(alice.fingerprint, "still to Alice")
    assert result.outcome is not Outcome.KEY_CHANGED, result
    alice.wait_for_text("still to Alice")


def test_a_handshake_conflict_refuses_the_new_key_and_clears_when_the_pinned_one_returns(
    nodes: Nodes,
) -> None:
    bob = nodes.start("Bob")
    alice = nodes.start("Alice")
    assert bob.node.send_to_address("127.0.0.1", alice.port, "hi").outcome is Outcome.DELIVERED
    impostor = nodes.start("Alice", data="Impostor")
    refused = impostor.node.send_to_address("127.0.0.1", bob.port, "I am Alice")
    assert refused.outcome is not Outcome.DELIVERED
    (conflict,) = bob.node.key_conflicts()
    assert conflict.presented_fingerprint == impostor.fingerprint
    # The pinned key is not blocked, and proving itself settles the conflict.
    nodes.stop(alice)
    alice = nodes.start("Alice", port=alice.port)
    result = bob.node.send_to_address("127.0.0.1", alice.port, "to the real Alice")
    assert result.outcome is Outcome.DELIVERED
    assert bob.node.key_conflicts() == []


# -- verified is per name; a rename is said --------------------------------------------------------


def test_a_verified_key_under_a_new_name_is_not_listed_verified_and_the_rename_is_said(
    nodes: Nodes,
) -> None:
    bob = nodes.start("Bob")
    alice = nodes.start("Alice")
    assert bob.node.connect("127.0.0.1", alice.port).ok
    bob.node.verify(alice.fingerprint)
    assert [p.verified for p in bob.node.active_peers()] == [True]
    port = alice.port
    nodes.stop(alice)
    carol = nodes.start("Carol", port=port, data="Alice")  # the same key, another name
    assert bob.node.connect("127.0.0.1", carol.port).ok
    (peer,) = bob.node.active_peers()
    assert (peer.name, peer.fingerprint, peer.verified) == ("Carol", carol.fingerprint, False)
    renamed = bob.wait_for(lambda e: isinstance(e, PeerRenamed))
    assert isinstance(renamed, PeerRenamed)
    assert (renamed.old_name, renamed.name, renamed.was_verified) == ("Alice", "Carol", True)


# -- "exit" removes the sender until its next sign of life ----------------------------------------


def test_a_peer_that_sent_exit_is_listed_again_at_its_next_beacon(nodes: Nodes) -> None:
    bob = nodes.start("Bob", discovery=True)
    alice = nodes.start("Alice", discovery=True)
    wait_listed(bob, alice.fingerprint)
    assert alice.node.send_to_peer(bob.fingerprint, "exit").outcome is Outcome.DELIVERED
    bob.wait_for_text("exit")
    bob.wait_for(lambda e: isinstance(e, PeerOffline))
    wait_listed(bob, alice.fingerprint)  # its next beacon (every 0.5 s) brings it back


# -- option 4 tells the other side ------------------------------------------------------------


def test_option_4_is_told_to_the_other_side_even_when_already_listed(nodes: Nodes) -> None:
    bob = nodes.start("Bob")
    alice = nodes.start("Alice")
    assert alice.node.connect("127.0.0.1", bob.port).ok
    bob.wait_for(lambda e: isinstance(e, PeerConnected))
    assert len(bob.seen(PeerConnected)) == 1  # once for the first connect, not twice
    assert bob.node.connect("127.0.0.1", alice.port).ok  # already listed on both sides
    alice.wait_for(lambda e: isinstance(e, PeerConnected) and e.name == "Bob")
    assert alice.node.connect("127.0.0.1", bob.port).ok  # and again
    with bob.changed:
        assert bob.changed.wait_for(lambda: len(bob.seen(PeerConnected)) == 2, WAIT)


# -- idle connections cannot hold every pending-handshake slot ----------------------------------


def test_idle_connections_from_four_addresses_leave_room_for_a_peer(nodes: Nodes) -> None:
    victim = nodes.start("Victim")
    friend = nodes.start("Friend")
    idle: list[socket.socket] = []
    try:
        # Idle TCP connections, no byte sent, up to the per-address limit from each address.
        for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"):
            for _ in range(MAX_CONNECTIONS_PER_ADDRESS):
                sock = socket.socket()
                sock.bind((source, 0))
                sock.connect(("127.0.0.1", victim.port))
                idle.append(sock)
        started = time.monotonic()
        result = friend.node.send_to_address("127.0.0.1", victim.port, "through the flood")
        assert result.outcome is Outcome.DELIVERED, result
        victim.wait_for_text("through the flood", timeout=2.0)
        assert time.monotonic() - started < 2.0
    finally:
        for sock in idle:
            sock.close()


# -- a stranger cannot fill the disk ---------------------------------------------------------------


def test_messages_over_a_peers_quota_are_neither_stored_nor_acknowledged_and_it_is_told(
    nodes: Nodes,
) -> None:
    bob = nodes.start("Bob", quota_messages_per_hour=5)
    alice = nodes.start("Alice")
    assert alice.node.connect("127.0.0.1", bob.port).ok
    texts = [f"note {i}" for i in range(8)]
    ids = alice.node.submit(bob.fingerprint, texts)
    told = alice.wait_for(lambda e: isinstance(e, Problem) and "refuses more" in e.text)
    assert isinstance(told, Problem) and "over quota" in told.text
    bob.wait_for(lambda e: isinstance(e, Problem) and "over its quota" in e.text)
    stored = [r.text for r in bob.store.history(limit=100)]
    assert stored == texts[:5]
    assert alice.node.wait_delivered(ids[:5], timeout=5)
    states = {r.text: r.state for r in alice.store.history(limit=100)}
    assert [states[t] for t in texts[5:]] == [DeliveryState.PENDING] * 3  # kept, not lost
    refused = alice.node.send_to_peer(bob.fingerprint, "one more")
    assert refused.outcome in {Outcome.REFUSED, Outcome.QUEUED, Outcome.PENDING}, refused
    assert "one more" not in [r.text for r in bob.store.history(limit=100)]


# -- junk carrying a friend's key cannot make it go offline --------------------------------------


def test_a_friend_stays_listed_under_junk_beacons_carrying_its_key_from_its_address(
    nodes: Nodes,
) -> None:
    victim = nodes.start("Victim", discovery=True)
    friend = nodes.start("Friend", discovery=True)
    wait_listed(victim, friend.fingerprint)
    # The friend's key, from the friend's address (all of loopback is 127.0.0.1 here),
    # with a broken signature, ten times a second more than one address may be checked.
    junk = bytearray(
        encode_beacon(
            friend.identity,
            "Friend",
            friend.port,
            secrets.token_bytes(INSTANCE_SIZE),
            10**6,
            time.time() + 20,
        )
    )
    junk[-1] ^= 0x01
    rate = 10 * BEACON_VERIFY_RATE
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.bind(("127.0.0.1", 0))
        end = time.monotonic() + 8.0  # well past the 3 s peer timeout
        while time.monotonic() < end:
            sock.sendto(bytes(junk), (LOOPBACK_BROADCAST, nodes.discovery_port))
            time.sleep(1 / rate)  # the flood's own pace
    assert victim.seen(PeerOffline) == []
    assert listed(victim, friend.fingerprint) is not None
