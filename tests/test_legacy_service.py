"""The legacy bridge in one process, on loopback, against the emulated legacy programs.

The service runs in an event loop on a background thread, as in the program;
its news lands in a queue. Every emulated sender waits until the service has
closed its side of the connection, by which time the service has handled all
it read, so "nothing was shown" is checked after that point, not after a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography.fernet import Fernet

from crypto_utils import Sealer
from peerchat.events import (
    LegacyMessageArrived,
    LegacyOutcome,
    LegacyPeerDiscovered,
    LegacyPeerLeft,
    Problem,
    UiEvent,
)
from peerchat.legacy.admission import AdmissionLimits
from peerchat.legacy.original import LegacyKey
from peerchat.legacy.wire import ControlWord
from peerchat.net.legacy_service import LegacyConfig, LegacyService
from storage import DeliveryState, Direction, HistoryStore
from tests.legacy_emulators import (
    BeaconListener,
    BlockSender,
    LegacyListener,
    LinesSender,
    OriginalSender,
    PlainSender,
    parse_plain,
    probe,
    send_original_beacon,
    send_raw,
)
from tests.support import LOOPBACK_BROADCAST, free_tcp_port, free_udp_port

HOST = "127.0.0.1"
KEY = Fernet.generate_key()
E = TypeVar("E")


@dataclass
class Running:
    service: LegacyService
    store: HistoryStore
    events: queue.Queue[UiEvent]

    @property
    def port(self) -> int:
        return self.service.port

    def next(self, kind: type[E], timeout: float = 5.0) -> E:
        """The next piece of news, which must be of `kind`."""
        try:
            event = self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no {kind.__name__} within {timeout} s") from None
        assert isinstance(event, kind), event
        return event

    def quiet(self) -> None:
        assert self.events.empty(), self.events.get_nowait()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


@pytest.fixture
def start(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> Iterator[Any]:
    started: list[Running] = []

    def run(**overrides: Any) -> Running:
        settings: dict[str, Any] = {"port": free_tcp_port(), "team": "Alice", "name": "Alice"}
        settings.update(overrides)
        store = HistoryStore.open(tmp_path / f"history-{len(started)}.db", Sealer.generate())
        events: queue.Queue[UiEvent] = queue.Queue()
        service = LegacyService(LegacyConfig(**settings), store=store, emit=events.put)
        service.bind()
        service.attach(loop)
        running = Running(service, store, events)
        started.append(running)
        return running

    yield run
    for running in started:
        running.service.close()
        running.store.close()


@pytest.fixture
def listeners() -> Iterator[list[LegacyListener]]:
    made: list[LegacyListener] = []
    yield made
    for listener in made:
        listener.close()


# -- receiving ------------------------------------------------------------------------


def test_plain_message_is_shown_stored_and_listed(start: Any) -> None:
    alice = start()
    PlainSender("10.9.9.9:7000", "Team7", source="127.0.0.2").send(HOST, alice.port, "hello")
    event = alice.next(LegacyMessageArrived)
    # The connection's source address with the port the text names: 10.9.9.9 is a claim.
    assert event == LegacyMessageArrived("127.0.0.2", 7000, "Team7", "hello")
    (row,) = alice.store.history()
    assert (row.direction, row.legacy, row.peer_fp) == (Direction.IN, True, None)
    assert (row.peer_name, row.peer_host, row.peer_port, row.text) == (
        "Team7",
        "127.0.0.2",
        7000,
        "hello",
    )
    (peer,) = alice.service.peers()
    assert (peer.team, peer.host, peer.port, peer.speaks) == ("Team7", "127.0.0.2", 7000, "text")
    alice.quiet()


def test_angle_bracket_variant(start: Any) -> None:
    alice = start()
    PlainSender("127.0.0.1:7001", "Team Rocket", angle=True, newline=True).send(
        HOST, alice.port, "a <b> c"
    )
    assert alice.next(LegacyMessageArrived) == LegacyMessageArrived(
        HOST, 7001, "Team Rocket", "a <b> c"
    )
    assert alice.service.peers()[0].speaks == "<text> lines"


def test_several_lines_on_one_connection(start: Any) -> None:
    alice = start()
    LinesSender("127.0.0.1:7002", "Lines").send_all(HOST, alice.port, ["one", "two", "three"])
    assert [alice.next(LegacyMessageArrived).text for _ in range(3)] == ["one", "two", "three"]
    assert len(alice.store.history()) == 3
    alice.quiet()


def test_block_format_and_its_disconnect(start: Any) -> None:
    alice = start()
    carol = BlockSender("127.0.0.1:7003", "Carol")
    carol.send(HOST, alice.port, ["line one", "line two"])
    assert alice.next(LegacyMessageArrived) == LegacyMessageArrived(
        HOST, 7003, "Carol", "line one\nline two"
    )
    carol.leave(HOST, alice.port)
    assert alice.next(LegacyPeerLeft) == LegacyPeerLeft("Carol", HOST, 7003, "said DISCONNECT")
    assert alice.service.peers() == []
    alice.quiet()


@pytest.mark.parametrize("word", ["exit", "QUIT", "DISCONNECT"])
def test_leaving_words_remove_the_sender_and_are_not_chat(start: Any, word: str) -> None:
    alice = start()
    bob = PlainSender("127.0.0.1:7004", "Bob")
    bob.send(HOST, alice.port, "hi")
    alice.next(LegacyMessageArrived)
    bob.send(HOST, alice.port, word)
    left = alice.next(LegacyPeerLeft)
    assert (left.team, left.host, left.port) == ("Bob", HOST, 7004)
    assert alice.service.peers() == []
    assert [row.text for row in alice.store.history()] == ["hi"]
    alice.quiet()


@pytest.mark.parametrize("word", ["PING", "CONNECT_REQUEST"])
def test_announcing_words_list_the_sender_and_are_not_chat(start: Any, word: str) -> None:
    alice = start()
    PlainSender("127.0.0.1:7005", "Dave").send(HOST, alice.port, word)
    assert alice.next(LegacyPeerDiscovered) == LegacyPeerDiscovered("Dave", HOST, 7005)
    assert [(p.team, p.port) for p in alice.service.peers()] == [("Dave", 7005)]
    assert alice.store.history() == []
    # Heard again: still one entry, and no second announcement.
    PlainSender("127.0.0.1:7005", "Dave").send(HOST, alice.port, word)
    assert len(alice.service.peers()) == 1
    alice.quiet()


def test_bare_leaving_word_removes_the_only_entry_of_that_address(start: Any) -> None:
    alice = start()
    PlainSender("127.0.0.1:7006", "Erin", source="127.0.0.3").send(HOST, alice.port, "hi")
    alice.next(LegacyMessageArrived)
    send_raw(HOST, alice.port, b"exit\n", source="127.0.0.4")  # another address: nothing
    alice.quiet()
    send_raw(HOST, alice.port, b"DISCONNECT", source="127.0.0.3")
    assert alice.next(LegacyPeerLeft).port == 7006


def test_zero_byte_probes_are_silent(start: Any) -> None:
    alice = start()
    for _ in range(3):
        probe(HOST, alice.port)
    assert alice.service.listener.probes == 3
    assert alice.service.peers() == [] and alice.store.history() == []
    alice.quiet()


def test_malformed_input_is_dropped_with_one_notice(start: Any) -> None:
    alice = start()
    send_raw(HOST, alice.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    send_raw(HOST, alice.port, b"\x00\xff\xfe garbage")
    send_raw(HOST, alice.port, b"10.0.0.5:99999 T port out of range")
    notice = alice.next(Problem)
    assert "legacy input from 127.0.0.1 dropped" in notice.text
    alice.quiet()  # the next ones within the notice gap are counted, not shown
    assert alice.service.peers() == [] and alice.store.history() == []


def test_one_megabyte_message_is_cut_off_and_the_port_keeps_working(start: Any) -> None:
    alice = start()
    send_raw(HOST, alice.port, b"127.0.0.1:7007 Big " + b"x" * (1024 * 1024))
    assert "over" in alice.next(Problem).text
    assert alice.store.history() == [] and alice.service.peers() == []
    PlainSender("127.0.0.1:7007", "Big").send(HOST, alice.port, "small now")
    assert alice.next(LegacyMessageArrived).text == "small now"


def test_a_silent_connection_is_read_at_the_idle_deadline(start: Any) -> None:
    alice = start(idle_timeout=0.3)
    with socket.create_connection((HOST, alice.port)) as sock:
        sock.sendall(b"127.0.0.1:7008 Slow no newline and no close")
        started = time.monotonic()
        sock.settimeout(5.0)
        assert sock.recv(1) == b""  # the service closed it
        waited = time.monotonic() - started
    assert alice.next(LegacyMessageArrived).text == "no newline and no close"
    assert 0.25 <= waited < 3.0


def test_flood_from_one_source_is_refused_and_others_still_get_through(start: Any) -> None:
    limits = AdmissionLimits(connect_rate=1.0, connect_burst=5, message_rate=1.0, message_burst=5)
    alice = start(admission=limits)
    flooder = PlainSender("127.0.0.1:7009", "Flood", source="127.0.0.5")
    for n in range(60):
        flooder.send(HOST, alice.port, f"flood {n}")
    PlainSender("127.0.0.1:7010", "Fine", source="127.0.0.6").send(HOST, alice.port, "still here")
    shown: list[str] = []
    while True:
        event = alice.next(LegacyMessageArrived)
        if event.team == "Fine":
            break
        shown.append(event.text)
    assert 5 <= len(shown) <= 8  # the burst, and what the rate refills while flooding
    assert alice.service.listener.refused >= 50
    alice.quiet()


def test_many_lines_on_one_connection_are_cut_at_the_message_budget(start: Any) -> None:
    alice = start(admission=AdmissionLimits(message_rate=1.0, message_burst=5))
    LinesSender("127.0.0.1:7011", "Chatty").send_all(
        HOST, alice.port, [f"m{n}" for n in range(500)]
    )
    assert [alice.next(LegacyMessageArrived).text for _ in range(5)] == [f"m{n}" for n in range(5)]
    assert "too fast" in alice.next(Problem).text
    alice.quiet()


def test_connections_per_source_are_capped(start: Any) -> None:
    alice = start(admission=AdmissionLimits(max_per_address=3))
    held = [socket.create_connection((HOST, alice.port)) for _ in range(3)]
    try:
        # Every held connection counted (a byte each makes them visible to the loop first).
        for sock in held:
            sock.sendall(b"1")
        extra = socket.create_connection((HOST, alice.port))
        extra.settimeout(5.0)
        with contextlib.suppress(ConnectionResetError):
            assert extra.recv(1) == b""  # closed at once, unread
        extra.close()
        assert alice.service.listener.refused == 1
    finally:
        for sock in held:
            sock.close()


def test_the_originals_token_with_the_key(start: Any) -> None:
    alice = start(key=LegacyKey(KEY))
    OriginalSender(KEY, "127.0.1.1:5000").send(HOST, alice.port, "from the original")
    assert alice.next(LegacyMessageArrived) == LegacyMessageArrived(
        HOST, 5000, "CryptoCrafters", "from the original"
    )
    assert alice.service.peers()[0].speaks == "original (shared key)"
    OriginalSender(KEY, "127.0.1.1:5000").send(HOST, alice.port, "exit")
    assert alice.next(LegacyPeerLeft).reason == "said exit"


def test_the_originals_token_without_the_key_says_why_it_is_dropped(start: Any) -> None:
    alice = start()
    OriginalSender(KEY, "127.0.1.1:5000").send(HOST, alice.port, "unreadable here")
    assert "--legacy-key" in alice.next(Problem).text
    assert alice.store.history() == []


# -- sending --------------------------------------------------------------------------


def test_plain_send_names_the_socket_used_and_the_legacy_port(
    start: Any, listeners: list[LegacyListener]
) -> None:
    alice = start(team="Alices")
    bob = LegacyListener()
    listeners.append(bob)
    result = alice.service.send(HOST, bob.port, "hello Bob")
    assert result.outcome is LegacyOutcome.SENT
    (got,) = bob.wait()
    claimed, team, text = parse_plain(got.data)
    assert claimed == f"{got.peer_ip}:{alice.port}"
    assert (team, text) == ("Alices", "hello Bob")
    assert got.data == f"{got.peer_ip}:{alice.port} Alices hello Bob".encode()  # no newline
    (row,) = alice.store.history()
    assert (row.direction, row.legacy, row.state) == (Direction.OUT, True, DeliveryState.DELIVERED)


def test_answer_is_written_the_way_the_peer_writes(
    start: Any, listeners: list[LegacyListener]
) -> None:
    alice = start()
    carol = LegacyListener()
    listeners.append(carol)
    BlockSender(f"127.0.0.1:{carol.port}", "Carol").send(HOST, alice.port, ["hi"])
    alice.next(LegacyMessageArrived)
    assert alice.service.send(HOST, carol.port, "back").outcome is LegacyOutcome.SENT
    (got,) = carol.wait()
    assert got.data == f"<{got.peer_ip}:{alice.port}> @ Alice\nback\n<end>\n".encode()

    dave = LegacyListener()
    listeners.append(dave)
    LinesSender(f"127.0.0.1:{dave.port}", "Dave").send_all(HOST, alice.port, ["a"])
    alice.next(LegacyMessageArrived)
    alice.service.send(HOST, dave.port, "back")
    assert dave.wait()[0].data.endswith(b" Alice back\n")


def test_nothing_is_sent_that_the_user_did_not_send(
    start: Any, listeners: list[LegacyListener]
) -> None:
    alice = start()
    bob = LegacyListener()
    listeners.append(bob)
    # Messages and control words naming bob's address, and a probe: no reply, no probe back.
    for word in ["hello", "PING", "CONNECT_REQUEST", "exit"]:
        PlainSender(f"127.0.0.1:{bob.port}", "Bob").send(HOST, alice.port, word)
    probe(HOST, alice.port)
    alice.service.send(HOST, bob.port, "the only one")
    (first,) = bob.wait()
    assert first.data.endswith(b"the only one")
    assert len(bob.received) == 1


def test_the_original_gets_its_token_once_its_beacon_was_heard(
    start: Any, listeners: list[LegacyListener]
) -> None:
    dport = free_udp_port()
    alice = start(
        key=LegacyKey(KEY),
        beacons=True,
        discovery_port=dport,
        broadcast_targets=(LOOPBACK_BROADCAST,),
        beacon_interval=0.2,
    )
    original = LegacyListener(read_once=True)
    listeners.append(original)
    heard_by_original = BeaconListener(KEY, dport)
    try:
        # Our beacon, as the original reads it: our name and the legacy port.
        _, name, port = heard_by_original.next_beacon()
        assert (name, port) == ("Alice", alice.port)
        send_original_beacon(KEY, "Bob", original.port, LOOPBACK_BROADCAST, dport)
        # Our own beacon came back to us first, and was not listed.
        assert alice.next(LegacyPeerDiscovered) == LegacyPeerDiscovered("Bob", HOST, original.port)
    finally:
        heard_by_original.close()
    assert alice.service.send(HOST, original.port, "hi Bob").outcome is LegacyOutcome.SENT
    (got,) = original.wait()
    assert len(got.data) <= 1024
    plaintext = Fernet(KEY).decrypt(got.data).decode()
    assert plaintext == f"{got.peer_ip}:{alice.port} Alice hi Bob"

    too_long = alice.service.send(HOST, original.port, "x" * 800)
    assert too_long.outcome is LegacyOutcome.REFUSED and "1024" in too_long.detail
    alice.service.send(HOST, original.port, "short again")
    assert len(original.wait(2)) == 2  # the refused one never connected
    assert Fernet(KEY).decrypt(original.received[1].data).endswith(b"short again")


def test_unreachable_peer_is_failed_and_kept_as_failed(start: Any) -> None:
    alice = start()
    result = alice.service.send(HOST, free_tcp_port(), "anyone?")
    assert (result.outcome, result.detail) == (LegacyOutcome.FAILED, "connection refused")
    (row,) = alice.store.history()
    assert (row.state, row.detail, row.legacy) == (
        DeliveryState.FAILED,
        "connection refused",
        True,
    )


def test_a_peer_that_never_closes_does_not_hold_the_sender(start: Any) -> None:
    alice = start(send_linger=0.2)
    with socket.socket() as mute:
        mute.bind((HOST, 0))
        mute.listen()
        started = time.monotonic()
        result = alice.service.send(HOST, mute.getsockname()[1], "anyone?")
        took = time.monotonic() - started
        conn, _ = mute.accept()
        with conn:
            conn.settimeout(5.0)
            data = conn.recv(1024)
    assert result.outcome is LegacyOutcome.SENT
    assert data.endswith(b" Alice anyone?")
    assert took < 3.0


def test_own_legacy_port_is_refused(start: Any) -> None:
    alice = start()
    result = alice.service.send(HOST, alice.port, "me?")
    assert result.outcome is LegacyOutcome.REFUSED
    alice.quiet()


def test_close_releases_the_port(start: Any) -> None:
    alice = start()
    alice.service.close()
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("0.0.0.0", alice.port))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((HOST, alice.port), timeout=2).close()


def test_word_enum_is_what_the_issue_lists() -> None:
    assert {w.value for w in ControlWord} == {
        "exit",
        "quit",
        "DISCONNECT",
        "PING",
        "CONNECT_REQUEST",
    }


def test_a_silent_legacy_peer_is_taken_off_the_list_when_its_time_is_up(start: Any) -> None:
    alice = start(peer_ttl=0.3)
    PlainSender("10.9.9.9:7000", "Team7", source="127.0.0.2").send(HOST, alice.port, "hello")
    alice.next(LegacyMessageArrived)
    # The service arms a timer at the entry's expiry: nothing else has to happen.
    left = alice.next(LegacyPeerLeft, timeout=5.0)
    assert (left.team, left.host, left.port, left.reason) == (
        "Team7",
        "127.0.0.2",
        7000,
        "timed out",
    )
    assert alice.service.peers() == []
