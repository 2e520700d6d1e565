"""The transfer role: two peers' roles wired back to back through real SecureChannels.

No sockets and no event loop: `Pair.settle()` moves the sealed bytes from one
channel to the other and runs the work the roles handed off (hashing, saving)
until nothing moves. A cut drops whatever was in transit, as a dead TCP
connection would; a restart builds a new role on the same history and
downloads folder, as a new process would.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from crypto_utils import Identity, Sealer, fingerprint_of
from peerchat.events import (
    FileOffered,
    FileOutcome,
    FileProgress,
    FileTransferEnded,
    UiEvent,
)
from peerchat.net.file_store import inspect_source
from peerchat.net.transfers import Transfers, TransferSettings
from peerchat.policy.transfer import TransferOutcome
from peerchat.protocol.channel import Credentials, MessageReceived, Role, SecureChannel
from peerchat.protocol.transfer import (
    AbortCode,
    FileAbort,
    FileChunk,
    FileOffer,
    TransferMessage,
)
from storage import Direction, HistoryStore, TransferState

MIB = 1024 * 1024
CHUNK = 124 * 1024


@functools.cache
def identity(label: str) -> Identity:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return Identity(key, der, fingerprint_of(der))


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Side:
    """One peer: its history, its downloads folder, its role, and its end of the channel."""

    def __init__(self, label: str, tmp: Path, clock: Clock, **settings: Any) -> None:
        self.label = label
        self.home = tmp / label
        self.home.mkdir(parents=True, exist_ok=True)
        self.identity = identity(label)
        self.fp = self.identity.fingerprint
        self.credentials = Credentials.create(self.identity, label, 5000)
        self.sealer = Sealer.generate()
        self.store = HistoryStore.open(self.home / "history.db", self.sealer)
        self.clock = clock
        self.settings = settings
        self.events: list[UiEvent] = []
        self.jobs: deque[Callable[[], None]] = deque()
        self.channel: SecureChannel | None = None
        self.chunk_bytes_sent = 0
        self.unacked_peak = 0
        self.buffered = 0
        self.drop_chunks = False
        self.role = self._new_role()

    def _new_role(self) -> Transfers:
        settings = TransferSettings(downloads=self.home / "downloads", **self.settings)
        role = Transfers(
            self.store,
            settings,
            self._send,
            lambda fp: self.buffered,
            self.events.append,
            self._offload,
            self.clock,
        )
        role.load()
        return role

    def restart(self) -> None:
        """As if the process was killed and started again on the same profile."""
        self.role.close()
        self.channel = None
        self.jobs.clear()
        self.role = self._new_role()

    def _send(self, fp: str, messages: Any) -> bool:
        if self.channel is None:
            return False
        messages = list(messages)
        if self.drop_chunks:
            messages = [m for m in messages if not isinstance(m, FileChunk)]
        self.chunk_bytes_sent += sum(len(m.data) for m in messages if isinstance(m, FileChunk))
        self.channel.send_messages(messages)
        return True

    def _offload(self, work: Callable[[], Any], done: Callable[[Any], None]) -> None:
        def job() -> None:
            try:
                result = work()
            except Exception as exc:
                result = exc
            done(result)

        self.jobs.append(job)

    def downloads(self) -> list[str]:
        folder = self.home / "downloads"
        return sorted(os.listdir(folder)) if folder.exists() else []

    def ended(self) -> list[FileTransferEnded]:
        return [e for e in self.events if isinstance(e, FileTransferEnded)]

    def offered(self) -> list[FileOffered]:
        return [e for e in self.events if isinstance(e, FileOffered)]


class Pair:
    def __init__(self, a: Side, b: Side) -> None:
        self.a, self.b = a, b

    def connect(self) -> None:
        a, b = self.a, self.b
        a.channel = SecureChannel(Role.INITIATOR, a.credentials)
        b.channel = SecureChannel(Role.RESPONDER, b.credentials)
        b.channel.receive_data(a.channel.data_to_send())
        a.channel.receive_data(b.channel.data_to_send())
        b.channel.receive_data(a.channel.data_to_send())
        a.role.session_up(b.fp, b.label)
        b.role.session_up(a.fp, a.label)

    def cut(self) -> None:
        """The connection dies: what was in transit is lost."""
        for side, other in ((self.a, self.b), (self.b, self.a)):
            side.channel = None
            side.role.session_down(other.fp)

    def settle(self, until: Callable[[], bool] | None = None, max_rounds: int = 100_000) -> None:
        for _ in range(max_rounds):
            if until is not None and until():
                return
            moved = False
            for src, dst in ((self.a, self.b), (self.b, self.a)):
                if src.channel is None or dst.channel is None:
                    continue
                data = src.channel.data_to_send()
                if not data:
                    continue
                moved = True
                for event in dst.channel.receive_data(data):
                    assert isinstance(event, MessageReceived)
                    dst.role.handle(src.fp, event.message)  # type: ignore[arg-type]
            for side in (self.a, self.b):
                while side.jobs:
                    side.jobs.popleft()()
                    moved = True
            if not moved:
                return
        raise AssertionError("the pair never settled")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pair(tmp_path: Path, clock: Clock) -> Iterator[Pair]:
    a, b = Side("Alice", tmp_path, clock), Side("Bob", tmp_path, clock)
    yield Pair(a, b)
    for side in (a, b):
        side.role.close()
        side.store.close()


def make_file(folder: Path, name: str, size: int, seed: int = 1) -> Path:
    block = hashlib.sha256(seed.to_bytes(4, "big")).digest() * 2048  # 64 KiB, not all alike
    data = (block * (size // len(block) + 1))[:size]
    path = folder / name
    path.write_bytes(data)
    return path


def offer_and_accept(pair: Pair, path: Path) -> None:
    a, b = pair.a, pair.b
    result = a.role.offer(b.fp, b.label, inspect_source(path))
    assert result.outcome is FileOutcome.OFFERED
    pair.settle()
    (offer,) = b.role.offers()
    answer = b.role.answer(offer.key, accept=True)
    assert answer.outcome is FileOutcome.ACCEPTED, answer.detail


def partial_size(side: Side) -> int:
    folder = side.home / "downloads"
    parts = [p for p in folder.glob(".*.part")] if folder.exists() else []
    return sum(p.stat().st_size for p in parts)


# -- the happy path --------------------------------------------------------------------


def test_a_file_of_a_few_megabytes_arrives_identical(pair: Pair, tmp_path: Path) -> None:
    a, b = pair.a, pair.b
    source = make_file(tmp_path, "report.pdf", 4 * MIB + 12345)
    pair.connect()
    offer_and_accept(pair, source)
    (offered,) = b.offered()
    assert (offered.peer_name, offered.file_name, offered.size) == (
        "Alice",
        "report.pdf",
        4 * MIB + 12345,
    )
    pair.settle()
    assert b.downloads() == ["report.pdf"]
    assert (b.home / "downloads" / "report.pdf").read_bytes() == source.read_bytes()
    assert a.chunk_bytes_sent == source.stat().st_size
    (sent,) = a.ended()
    (received,) = b.ended()
    assert sent.outcome is received.outcome is TransferOutcome.COMPLETE
    assert received.saved_as == str(b.home / "downloads" / "report.pdf")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    for side, direction in ((a, Direction.OUT), (b, Direction.IN)):
        (row,) = side.store.transfers()
        assert (row.direction, row.state, row.sha256, row.size) == (
            direction,
            TransferState.COMPLETE,
            digest,
            source.stat().st_size,
        )
    assert not a.role.peers_with_work() and not b.role.peers_with_work()


def test_chunks_in_flight_stay_within_the_window(pair: Pair, tmp_path: Path) -> None:
    a, b = pair.a, pair.b
    source = make_file(tmp_path, "big.bin", 3 * MIB)
    pair.connect()
    offer_and_accept(pair, source)
    window = a.role.settings.window
    peak = 0

    def watch() -> bool:
        nonlocal peak
        outgoing = next(iter(a.role._out.get(b.fp, {}).values()), None)
        if outgoing is not None:
            peak = max(peak, outgoing.machine.in_flight)
        return False

    pair.settle(until=watch)
    assert b.downloads() == ["big.bin"]
    assert 0 < peak <= window


def test_no_chunk_goes_out_while_the_session_buffer_is_full(pair: Pair, tmp_path: Path) -> None:
    a, b = pair.a, pair.b
    source = make_file(tmp_path, "x.bin", MIB)
    pair.connect()
    a.buffered = 10 * MIB  # chat (or anything else) is waiting to be written: it goes first
    offer_and_accept(pair, source)
    pair.settle()
    assert a.chunk_bytes_sent == 0
    a.buffered = 0
    a.role.tick()  # the node's next pass, or the buffer draining, lets chunks out again
    pair.settle()
    assert b.downloads() == ["x.bin"]


def test_progress_lines_on_long_transfers(pair: Pair, tmp_path: Path, clock: Clock) -> None:
    a, b = pair.a, pair.b
    source = make_file(tmp_path, "long.bin", 2 * MIB)
    pair.connect()
    offer_and_accept(pair, source)
    half = source.stat().st_size // 2
    pair.settle(until=lambda: partial_size(b) >= half)
    clock.now += 4.0  # past the first line's delay
    a.role.tick()
    b.role.tick()
    progress = [e for e in a.events + b.events if isinstance(e, FileProgress)]
    assert {p.outgoing for p in progress} == {True, False}
    for line in progress:
        assert 0 < line.done < line.size
    pair.settle()
    assert b.downloads() == ["long.bin"]


# -- resume ----------------------------------------------------------------------------


def test_a_cut_session_resumes_from_what_was_received(pair: Pair, tmp_path: Path) -> None:
    a, b = pair.a, pair.b
    source = make_file(tmp_path, "video.mp4", 5 * MIB)
    size = source.stat().st_size
    pair.connect()
    offer_and_accept(pair, source)
    pair.settle(until=lambda: partial_size(b) >= size // 2)
    pair.cut()
    have = partial_size(b)
    assert size // 2 <= have < size
    assert a.role.peers_with_work() == [b.fp] and b.role.peers_with_work() == [a.fp]
    assert a.role.has_work(b.fp) and not a.role.has_work(a.fp)
    a.chunk_bytes_sent = 0
    pair.connect()
    pair.settle()
    assert (b.home / "downloads" / "video.mp4").read_bytes() == source.read_bytes()
    assert not a.role.has_work(b.fp) and not b.role.has_work(a.fp)
    assert a.chunk_bytes_sent == size - have  # not one byte twice
    assert [e.outcome for e in b.ended()] == [TransferOutcome.COMPLETE]


@pytest.mark.parametrize("who", ["receiver", "sender", "both"])
def test_a_restarted_peer_resumes_where_it_stopped(pair: Pair, tmp_path: Path, who: str) -> None:
    a, b = pair.a, pair.b
    source = make_file(tmp_path, "disk.img", 4 * MIB)
    size = source.stat().st_size
    pair.connect()
    offer_and_accept(pair, source)
    pair.settle(until=lambda: partial_size(b) >= size // 2)
    pair.cut()
    have = partial_size(b)
    if who in ("receiver", "both"):
        b.restart()
    if who in ("sender", "both"):
        a.restart()
    assert a.role.peers_with_work() == [b.fp] and b.role.peers_with_work() == [a.fp]
    a.chunk_bytes_sent = 0
    pair.connect()
    pair.settle()
    assert (b.home / "downloads" / "disk.img").read_bytes() == source.read_bytes()
    assert a.chunk_bytes_sent == size - have
    for side, direction in ((a, Direction.OUT), (b, Direction.IN)):
        (row,) = side.store.transfers()
        assert (row.direction, row.state) == (direction, TransferState.COMPLETE)


def test_a_partial_file_changed_on_disk_starts_over_and_still_completes(
    pair: Pair, tmp_path: Path
) -> None:
    a, b = pair.a, pair.b
    source = make_file(tmp_path, "notes.txt", 2 * MIB)
    pair.connect()
    offer_and_accept(pair, source)
    pair.settle(until=lambda: partial_size(b) >= MIB)
    pair.cut()
    b.restart()
    (part,) = (b.home / "downloads").glob(".*.part")
    with part.open("r+b") as damaged:
        damaged.write(b"XXXX")  # the first bytes are no longer the sender's
    a.chunk_bytes_sent = 0
    pair.connect()
    pair.settle()
    assert (b.home / "downloads" / "notes.txt").read_bytes() == source.read_bytes()
    assert a.chunk_bytes_sent == source.stat().st_size  # from the start


def test_an_offer_to_an_offline_peer_waits_and_goes_out_when_it_is_back(
    pair: Pair, tmp_path: Path
) -> None:
    a, b = pair.a, pair.b
    source = make_file(tmp_path, "later.zip", 300_000)
    result = a.role.offer(b.fp, b.label, inspect_source(source))
    assert result.outcome is FileOutcome.QUEUED
    assert a.role.peers_with_work() == [b.fp]
    a.restart()  # waiting offers survive a restart, as queued messages do
    pair.connect()
    pair.settle()
    (offer,) = b.role.offers()
    assert offer.file_name == "later.zip"
    b.role.answer(offer.key, accept=True)
    pair.settle()
    assert (b.home / "downloads" / "later.zip").read_bytes() == source.read_bytes()


def test_an_offer_not_answered_before_the_cut_is_offered_again_once(
    pair: Pair, tmp_path: Path
) -> None:
    a, b = pair.a, pair.b
    source = make_file(tmp_path, "again.bin", 1000)
    pair.connect()
    a.role.offer(b.fp, b.label, inspect_source(source))
    pair.settle()
    pair.cut()
    pair.connect()
    pair.settle()
    assert len(b.role.offers()) == 1
    assert len(b.offered()) == 1  # the user was told once
    key = b.role.offers()[0].key
    pair.cut()
    assert b.role.answer(key, accept=True).outcome is FileOutcome.ACCEPTED  # while away
    pair.connect()
    pair.settle()
    assert b.downloads() == ["again.bin"]


def test_a_stalled_sender_is_reported_and_the_partial_file_kept(
    pair: Pair, tmp_path: Path, clock: Clock
) -> None:
    a, b = pair.a, pair.b
    source = make_file(tmp_path, "slow.bin", 2 * MIB)
    pair.connect()
    offer_and_accept(pair, source)
    pair.settle(until=lambda: partial_size(b) >= MIB // 2)
    a.drop_chunks = True  # the sender goes quiet, its session stays up
    pair.settle()
    kept = partial_size(b)
    clock.now += 31.0
    b.role.tick()
    pair.settle()
    (stalled,) = b.ended()
    assert (stalled.outcome, stalled.kept) == (TransferOutcome.STALLED, kept)
    assert [e.outcome for e in a.ended()] == [TransferOutcome.STALLED]
    assert partial_size(b) == kept
    a.drop_chunks = False
    pair.cut()
    pair.connect()
    pair.settle()
    assert (b.home / "downloads" / "slow.bin").read_bytes() == source.read_bytes()


# -- answers ---------------------------------------------------------------------------


def test_decline_is_told_to_the_sender_and_nothing_is_written(pair: Pair, tmp_path: Path) -> None:
    a, b = pair.a, pair.b
    source = make_file(tmp_path, "unwanted.exe", 5000)
    pair.connect()
    a.role.offer(b.fp, b.label, inspect_source(source))
    pair.settle()
    (offer,) = b.role.offers()
    assert b.role.answer(offer.key, accept=False).outcome is FileOutcome.DECLINED
    pair.settle()
    assert [e.outcome for e in a.ended()] == [TransferOutcome.DECLINED]
    assert b.downloads() == []
    assert b.store.transfers()[0].state is TransferState.DECLINED
    assert a.store.transfers()[0].state is TransferState.DECLINED
    assert b.role.answer(offer.key, accept=True).outcome is FileOutcome.UNKNOWN


def test_a_decline_lost_in_a_cut_is_given_again(pair: Pair, tmp_path: Path) -> None:
    a, b = pair.a, pair.b
    source = make_file(tmp_path, "again.bin", 5000)
    pair.connect()
    a.role.offer(b.fp, b.label, inspect_source(source))
    pair.settle()
    pair.cut()
    (offer,) = b.role.offers()
    b.role.answer(offer.key, accept=False)  # said while the sender is away
    b.restart()
    pair.connect()
    pair.settle()
    assert [e.outcome for e in a.ended()] == [TransferOutcome.DECLINED]
    assert b.offered() == [b.offered()[0]]  # no second "offers" line


def test_a_file_over_the_size_limit_is_declined_at_once(tmp_path: Path, clock: Clock) -> None:
    a = Side("Alice", tmp_path, clock)
    b = Side("Bob", tmp_path, clock, max_file_size=1000)
    pair = Pair(a, b)
    pair.connect()
    a.role.offer(b.fp, b.label, inspect_source(make_file(tmp_path, "huge.iso", 1001)))
    pair.settle()
    assert b.role.offers() == []
    (told,) = b.ended()
    assert told.outcome is TransferOutcome.DECLINED
    assert told.reason == "over your limit of 1.0 kB (--max-file-size)"
    assert [e.outcome for e in a.ended()] == [TransferOutcome.DECLINED]
    # A peer that keeps offering huge files is refused every time, but told only thrice.
    for n in range(10):
        a.role.offer(b.fp, b.label, inspect_source(make_file(tmp_path, f"h{n}.iso", 2000)))
    pair.settle()
    assert len(b.ended()) == 3
    assert len(a.ended()) == 11


def test_not_enough_free_space_refuses_the_accept_and_keeps_the_offer(
    tmp_path: Path, clock: Clock
) -> None:
    a = Side("Alice", tmp_path, clock)
    b = Side("Bob", tmp_path, clock, free_space_reserve=2**62)  # no disk has that much
    pair = Pair(a, b)
    pair.connect()
    a.role.offer(b.fp, b.label, inspect_source(make_file(tmp_path, "f.bin", 100)))
    pair.settle()
    (offer,) = b.role.offers()
    refused = b.role.answer(offer.key, accept=True)
    assert refused.outcome is FileOutcome.NOT_SENT and "not enough free space" in refused.detail
    assert b.role.offers() == [offer]
    assert b.downloads() == []


def test_a_source_deleted_while_waiting_fails_clearly(pair: Pair, tmp_path: Path) -> None:
    a, b = pair.a, pair.b
    source = make_file(tmp_path, "gone.txt", 5000)
    a.role.offer(b.fp, b.label, inspect_source(source))
    pair.connect()
    pair.settle()
    source.unlink()
    (offer,) = b.role.offers()
    b.role.answer(offer.key, accept=True)
    pair.settle()
    (failed,) = a.ended()
    assert failed.outcome is TransferOutcome.FAILED and "no such file" in failed.reason
    (told,) = b.ended()
    assert told.outcome is TransferOutcome.FAILED and "cannot read" in told.reason
    assert b.downloads() == []


# -- a hostile sender, through the channel -----------------------------------------------


def mallory(pair: Pair) -> None:
    """Side a becomes a hostile sender: its own role no longer answers anything."""
    pair.a.role.handle = lambda fp, message: None  # type: ignore[method-assign]


def rogue_send(pair: Pair, *messages: TransferMessage) -> None:
    """Mallory (side a) puts messages on the wire by hand."""
    channel = pair.a.channel
    assert channel is not None
    channel.send_messages(list(messages))
    pair.settle()


def accept_all(side: Side) -> None:
    for offer in side.role.offers():
        side.role.answer(offer.key, accept=True)


def test_hostile_offers_never_write_outside_the_downloads_folder(
    pair: Pair, tmp_path: Path
) -> None:
    pair.connect()
    mallory(pair)
    b = pair.b
    names = [
        "../../../outside.txt",
        "/etc/cron.d/evil",
        "..",
        "sub/../../x",
        "\\..\\..\\win.ini",
        ".bashrc",
        "CON",
        "a\x00b",
        "\u202etxt.exe",
    ]
    before = {p for p in tmp_path.rglob("*") if "downloads" not in p.parts}
    for number, name in enumerate(names):
        data = f"payload {number}".encode()
        tid = f"{number + 1:032x}"
        rogue_send(pair, FileOffer(tid, len(data), hashlib.sha256(data).digest(), name))
        accept_all(b)
        pair.settle()
        rogue_send(pair, FileChunk(tid, 0, data))
    saved = b.downloads()
    assert len(saved) == len(names)
    assert all(not name.startswith(".") and "/" not in name for name in saved)
    after = {p for p in tmp_path.rglob("*") if "downloads" not in p.parts}
    assert after - before <= {p for p in after if p.name.startswith("history.db")}
    assert not (tmp_path / "outside.txt").exists()


def test_a_lying_size_ends_the_transfer_and_removes_the_partial_file(pair: Pair) -> None:
    pair.connect()
    mallory(pair)
    b = pair.b
    data = b"x" * 1000
    tid = "11" * 16
    rogue_send(pair, FileOffer(tid, 600, hashlib.sha256(data[:600]).digest(), "liar.txt"))
    accept_all(b)
    pair.settle()
    rogue_send(pair, FileChunk(tid, 0, data))  # 1000 bytes for an announced 600
    (failed,) = b.ended()
    assert failed.outcome is TransferOutcome.FAILED
    assert "past the announced size" in failed.reason
    assert b.downloads() == []
    assert b.store.transfers()[0].state is TransferState.FAILED


def test_extra_chunks_after_the_end_are_not_written(pair: Pair) -> None:
    pair.connect()
    mallory(pair)
    b = pair.b
    data = b"y" * 500
    tid = "22" * 16
    rogue_send(pair, FileOffer(tid, 500, hashlib.sha256(data).digest(), "exact.txt"))
    accept_all(b)
    pair.settle()
    rogue_send(pair, FileChunk(tid, 0, data), FileChunk(tid, 500, b"more"), FileChunk(tid, 0, b"z"))
    assert b.downloads() == ["exact.txt"]
    assert (b.home / "downloads" / "exact.txt").read_bytes() == data


def test_a_wrong_digest_ends_the_transfer_and_removes_the_partial_file(pair: Pair) -> None:
    pair.connect()
    mallory(pair)
    b = pair.b
    tid = "33" * 16
    rogue_send(pair, FileOffer(tid, 4, hashlib.sha256(b"good").digest(), "d.txt"))
    accept_all(b)
    pair.settle()
    rogue_send(pair, FileChunk(tid, 0, b"evil"))
    (failed,) = b.ended()
    assert failed.outcome is TransferOutcome.FAILED and "SHA-256" in failed.reason
    assert b.downloads() == []


def test_chunks_without_an_accept_are_not_written(pair: Pair) -> None:
    pair.connect()
    mallory(pair)
    b = pair.b
    tid = "44" * 16
    rogue_send(pair, FileOffer(tid, 4, hashlib.sha256(b"push").digest(), "push.txt"))
    rogue_send(pair, FileChunk(tid, 0, b"push"), FileChunk("55" * 16, 0, b"stray"))
    assert b.downloads() == []
    assert len(b.role.offers()) == 1


def test_an_offer_flood_is_bounded(pair: Pair) -> None:
    pair.connect()
    mallory(pair)
    b = pair.b
    digest = hashlib.sha256(b"").digest()
    rogue_send(pair, *(FileOffer(f"{n:032x}", 0, digest, f"f{n}") for n in range(500)))
    assert len(b.role.offers()) == b.role.settings.max_offers_per_peer
    assert len(b.offered()) == b.role.settings.max_offers_per_peer  # no flood of lines either
    assert b.downloads() == []
    assert b.store.transfers() == []  # undecided offers are not written anywhere


def test_unknown_transfers_are_answered_with_an_abort_once(pair: Pair) -> None:
    pair.connect()
    a, b = pair.a, pair.b
    seen: list[TransferMessage] = []
    original = a.role.handle

    def spy(fp: str, message: TransferMessage) -> None:
        seen.append(message)
        original(fp, message)

    a.role.handle = spy  # type: ignore[method-assign]
    rogue_send(pair, FileChunk("66" * 16, 0, b"a"), FileChunk("66" * 16, 1, b"b"))
    aborts = [m for m in seen if isinstance(m, FileAbort)]
    assert [(m.transfer_id, m.code) for m in aborts] == [("66" * 16, AbortCode.UNKNOWN_TRANSFER)]
    assert b.downloads() == []


def test_every_state_has_its_record_in_the_history() -> None:
    from peerchat.net.transfers import _RECORDED
    from peerchat.policy.transfer import ReceiveState, SendState

    assert set(_RECORDED) == set(SendState) | set(ReceiveState)
