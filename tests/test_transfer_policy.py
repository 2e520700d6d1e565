"""The transfer state machines on their own: a sender and a receiver wired back to back.

The driver below is the smallest owner there can be: the source is a bytes
object, the partial file a bytearray, and messages go straight from one
machine to the other. It does what the actions say, in order, and nothing else.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pytest

from peerchat.policy.progress import ProgressMeter
from peerchat.policy.transfer import (
    _RECEIVE_TRANSITIONS,
    _SEND_TRANSITIONS,
    Action,
    CheckPrefix,
    DiscardPartial,
    HashPartial,
    ReceiveState,
    ReceivingTransfer,
    Report,
    ResetPartial,
    Send,
    SendingTransfer,
    SendState,
    TransferOutcome,
    VerifyAndSave,
    WriteChunk,
    sends,
)
from peerchat.protocol.transfer import (
    EMPTY_DIGEST,
    AbortCode,
    FileAbort,
    FileAccept,
    FileAck,
    FileChunk,
    FileComplete,
    FileDecline,
    FileOffer,
    FileRestart,
    TransferMessage,
)

TID = "ab" * 16
CHUNK = 1000


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@dataclass
class Wire:
    """A sender and a receiver, their files, and what each was told to report."""

    source: bytes
    sender: SendingTransfer = field(init=False)
    receiver: ReceivingTransfer | None = None
    partial: bytearray = field(default_factory=bytearray)
    partial_exists: bool = False
    saved: bytes | None = None
    sent_chunk_bytes: int = 0
    reports: list[tuple[str, Report]] = field(default_factory=list)
    now: float = 1000.0
    lie_about_prefix: bool = False

    def __post_init__(self) -> None:
        self.sender = SendingTransfer(
            TID, "report.pdf", len(self.source), sha(self.source), self.now, chunk_bytes=CHUNK
        )

    # -- the sender's owner

    def to_receiver(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self.deliver_to_receiver(action.message)
            elif isinstance(action, CheckPrefix):
                own = sha(self.source[: action.offset])
                self.to_receiver(self.sender.prefix_checked(action, own == action.digest, self.now))
            elif isinstance(action, Report):
                self.reports.append(("sender", action))

    def deliver_to_receiver(self, message: TransferMessage) -> None:
        if isinstance(message, FileOffer):
            if self.receiver is None:
                self.receiver = ReceivingTransfer(
                    message, self.now, online=True, ack_every=2 * CHUNK
                )
            else:
                self.to_sender(self.receiver.offered_again())
        elif isinstance(message, FileChunk):
            assert self.receiver is not None
            self.to_sender(self.receiver.on_chunk(message, self.now))
        elif isinstance(message, FileRestart):
            assert self.receiver is not None
            self.to_sender(self.receiver.on_restart(self.now))
        elif isinstance(message, FileAbort):
            assert self.receiver is not None
            self.to_sender(self.receiver.on_abort(message.code, message.detail))

    # -- the receiver's owner

    def to_sender(self, actions: list[Action]) -> None:
        receiver = self.receiver
        assert receiver is not None
        for action in actions:
            if isinstance(action, Send):
                self.deliver_to_sender(action.message)
            elif isinstance(action, HashPartial):
                self.partial_exists = True
                digest = sha(bytes(self.partial))
                if self.lie_about_prefix:
                    digest = sha(b"something else")
                self.to_sender(receiver.prefix_ready(len(self.partial), digest, self.now))
            elif isinstance(action, WriteChunk):
                assert action.offset == len(self.partial)
                self.partial += action.data
            elif isinstance(action, ResetPartial):
                self.partial.clear()
                self.lie_about_prefix = False
            elif isinstance(action, VerifyAndSave):
                ok = sha(bytes(self.partial)) == receiver.sha256
                if ok:
                    self.saved = bytes(self.partial)
                self.to_sender(receiver.verified(ok))
            elif isinstance(action, DiscardPartial):
                self.partial.clear()
                self.partial_exists = False
            elif isinstance(action, Report):
                self.reports.append(("receiver", action))

    def deliver_to_sender(self, message: TransferMessage) -> None:
        s = self.sender
        if isinstance(message, FileAccept):
            self.to_receiver(s.on_accept(message, self.now))
        elif isinstance(message, FileAck):
            self.to_receiver(s.on_ack(message.received, self.now))
        elif isinstance(message, FileComplete):
            self.to_receiver(s.on_complete())
        elif isinstance(message, FileDecline):
            self.to_receiver(s.on_decline(message.reason))
        elif isinstance(message, FileAbort):
            self.to_receiver(s.on_abort(message.code, message.detail))

    # -- driving

    def session_up(self) -> None:
        self.to_receiver(self.sender.session_up(self.now))
        if self.receiver is not None:
            self.to_sender(self.receiver.session_up())

    def session_down(self) -> None:
        self.sender.session_down()
        if self.receiver is not None:
            self.receiver.session_down()

    def pump(self, max_chunks: int | None = None, window: int = 8 * CHUNK) -> int:
        """Send chunks as the window allows; returns how many were sent."""
        sent = 0
        while self.sender.wants_to_send and (max_chunks is None or sent < max_chunks):
            budget = window - self.sender.in_flight
            if budget <= 0:
                break
            for read in self.sender.take_chunks(min(budget, CHUNK)):
                data = self.source[read.offset : read.offset + read.length]
                self.sent_chunk_bytes += len(data)
                self.deliver_to_receiver(FileChunk(TID, read.offset, data))
                sent += 1
        return sent

    def outcomes(self, side: str) -> list[TransferOutcome]:
        return [r.outcome for who, r in self.reports if who == side]


def state_of(sender: SendingTransfer) -> SendState:
    """The state now (a function call, so that an earlier assert does not fix its type)."""
    return sender.state


def started(size: int = 10 * CHUNK + 123) -> Wire:
    wire = Wire(bytes(range(256)) * (size // 256) + bytes(size % 256))
    wire.session_up()
    receiver = wire.receiver
    assert receiver is not None and receiver.state is ReceiveState.OFFERED
    wire.to_sender(receiver.accept(wire.now))
    return wire


def test_happy_path_moves_every_byte_and_both_sides_say_complete() -> None:
    wire = started()
    assert wire.sender.state is SendState.SENDING
    wire.pump()
    assert wire.saved == wire.source
    assert state_of(wire.sender) is SendState.COMPLETE
    assert wire.receiver is not None and wire.receiver.state is ReceiveState.COMPLETE
    assert wire.outcomes("sender") == [TransferOutcome.COMPLETE]
    assert wire.outcomes("receiver") == [TransferOutcome.COMPLETE]
    assert wire.sent_chunk_bytes == len(wire.source)


def test_nothing_is_written_before_the_receiver_accepts() -> None:
    wire = Wire(b"x" * 5000)
    wire.session_up()
    assert wire.receiver is not None
    # A hostile sender pushes chunks before any answer: none is written.
    wire.deliver_to_receiver(FileChunk(TID, 0, b"x" * 100))
    assert wire.partial == bytearray() and not wire.partial_exists
    assert wire.receiver.state is ReceiveState.OFFERED


def test_an_empty_file_completes_without_any_chunk() -> None:
    wire = started(size=0)
    assert wire.saved == b""
    assert wire.sender.state is SendState.COMPLETE


def test_resume_after_a_cut_continues_from_the_verified_offset() -> None:
    wire = started()
    wire.pump(max_chunks=4)
    have = len(wire.partial)
    assert have == 4 * CHUNK
    wire.session_down()
    assert wire.sender.state is SendState.WAITING
    assert wire.receiver is not None and wire.receiver.state is ReceiveState.ACCEPTED
    wire.sent_chunk_bytes = 0
    wire.session_up()  # the sender offers again, the receiver accepts from what it has
    assert state_of(wire.sender) is SendState.SENDING
    assert wire.sender.next_offset == have
    wire.pump()
    assert wire.saved == wire.source
    assert wire.sent_chunk_bytes == len(wire.source) - have  # it did not start over


def test_resume_with_a_prefix_that_differs_starts_over_and_still_completes() -> None:
    wire = started()
    wire.pump(max_chunks=3)
    wire.session_down()
    wire.lie_about_prefix = True  # the partial file is not what the sender sent
    wire.sent_chunk_bytes = 0
    wire.session_up()
    assert wire.sender.restarts == 1
    assert wire.receiver is not None and wire.receiver.restarts == 1
    wire.pump()
    assert wire.saved == wire.source
    assert wire.sent_chunk_bytes == len(wire.source)  # from the start


def test_a_prefix_that_keeps_differing_ends_the_transfer() -> None:
    wire = started()
    wire.pump(max_chunks=3)
    for _ in range(3):
        wire.session_down()
        wire.partial[:] = b"garbage!" * 100
        wire.session_up()
        wire.pump(max_chunks=1)
    assert wire.sender.state is SendState.FAILED
    assert wire.receiver is not None and wire.receiver.state is ReceiveState.FAILED
    assert not wire.partial_exists


def test_a_repeated_accept_after_the_check_is_ignored() -> None:
    wire = started()
    wire.pump(max_chunks=2)
    assert wire.sender.on_accept(FileAccept(TID, 0, EMPTY_DIGEST), wire.now) == []
    assert wire.sender.state is SendState.SENDING


def test_decline_ends_both_sides_and_writes_nothing() -> None:
    wire = Wire(b"x" * 5000)
    wire.session_up()
    assert wire.receiver is not None
    wire.to_sender(wire.receiver.decline("declined"))
    assert wire.sender.state is SendState.DECLINED
    assert wire.outcomes("sender") == [TransferOutcome.DECLINED]
    assert not wire.partial_exists


def test_a_decline_made_offline_reaches_the_sender_when_asked_again() -> None:
    receiver = ReceivingTransfer(FileOffer(TID, 10, sha(b"0123456789"), "x"), 0.0, online=False)
    assert receiver.decline("declined") == []  # nobody to tell now: the owner records it
    assert receiver.state is ReceiveState.DECLINED


def test_a_chunk_past_the_announced_size_fails_and_removes_the_partial_file() -> None:
    wire = started(size=3 * CHUNK)
    wire.pump(max_chunks=2)
    receiver = wire.receiver
    assert receiver is not None
    # A lying sender: its last chunk is longer than the size it announced.
    actions = receiver.on_chunk(FileChunk(TID, 2 * CHUNK, b"y" * (CHUNK + 1)), wire.now)
    assert receiver.state is ReceiveState.FAILED
    assert any(isinstance(a, DiscardPartial) for a in actions)
    (abort,) = sends(actions)
    assert isinstance(abort, FileAbort) and abort.code is AbortCode.CHUNK_OUT_OF_BOUNDS
    assert not any(isinstance(a, WriteChunk) for a in actions)
    (report,) = [a for a in actions if isinstance(a, Report)]
    assert "past the announced size" in report.reason


def test_an_extra_chunk_after_the_whole_file_changes_nothing() -> None:
    wire = started(size=2 * CHUNK)
    receiver = wire.receiver
    assert receiver is not None
    wire.sender.take_chunks(10**9)  # keep the sender out of it: chunks are sent by hand
    wire.to_sender(receiver.on_chunk(FileChunk(TID, 0, wire.source[:CHUNK]), wire.now))
    last = receiver.on_chunk(FileChunk(TID, CHUNK, wire.source[CHUNK:]), wire.now)
    assert any(isinstance(a, VerifyAndSave) for a in last)
    extra = receiver.on_chunk(FileChunk(TID, 2 * CHUNK, b"more"), wire.now)
    assert extra == []


def test_a_chunk_out_of_place_fails() -> None:
    wire = started()
    receiver = wire.receiver
    assert receiver is not None
    actions = receiver.on_chunk(FileChunk(TID, CHUNK, b"z" * CHUNK), wire.now)  # skips the first
    assert receiver.state is ReceiveState.FAILED
    assert "expected 0" in next(a for a in actions if isinstance(a, Report)).reason


def test_a_wrong_digest_fails_and_removes_the_partial_file() -> None:
    source = b"a" * 2500
    wire = Wire(source)
    wire.session_up()
    assert wire.receiver is not None
    # The offer claims another digest than the bytes that will be sent.
    wire.sender.sha256 = wire.receiver.sha256 = sha(b"not this")
    wire.to_sender(wire.receiver.accept(wire.now))
    wire.pump()
    assert wire.saved is None
    assert not wire.partial_exists
    assert wire.receiver.state is ReceiveState.FAILED
    assert wire.sender.state is SendState.FAILED
    assert wire.outcomes("receiver") == [TransferOutcome.FAILED]
    assert "SHA-256" in wire.reports[0][1].reason


def test_a_stalled_sender_keeps_the_partial_file_and_resumes_later() -> None:
    wire = started()
    wire.pump(max_chunks=3)
    receiver = wire.receiver
    assert receiver is not None
    assert receiver.tick(wire.now + 29.0) == []
    actions = receiver.tick(wire.now + 31.0)
    assert receiver.state is ReceiveState.ACCEPTED
    assert not any(isinstance(a, DiscardPartial) for a in actions)
    assert [a.outcome for a in actions if isinstance(a, Report)] == [TransferOutcome.STALLED]
    (abort,) = sends(actions)
    assert isinstance(abort, FileAbort) and abort.code is AbortCode.STALLED
    wire.deliver_to_sender(abort)
    assert wire.sender.state is SendState.WAITING  # not over: offered again next session
    assert len(wire.partial) == 3 * CHUNK
    wire.session_down()
    wire.session_up()
    wire.pump()
    assert wire.saved == wire.source


def test_acknowledgements_may_only_cover_what_was_sent() -> None:
    wire = started()
    wire.sender.take_chunks(2 * CHUNK)
    actions = wire.sender.on_ack(5 * CHUNK, wire.now)
    assert wire.sender.state is SendState.FAILED
    (abort,) = sends(actions)
    assert isinstance(abort, FileAbort) and abort.code is AbortCode.PROTOCOL_VIOLATION


@pytest.mark.parametrize(
    "accept",
    [FileAccept(TID, 10**9, EMPTY_DIGEST), FileAccept(TID, 0, sha(b"x"))],
    ids=["past-the-end", "empty-prefix-with-a-digest"],
)
def test_an_impossible_accept_is_a_protocol_violation(accept: FileAccept) -> None:
    sender = SendingTransfer(TID, "x", 100, sha(b"x" * 100), 0.0)
    sender.session_up(0.0)
    actions = sender.on_accept(accept, 0.0)
    assert sender.state is SendState.FAILED
    assert isinstance(sends(actions)[0], FileAbort)


def test_waiting_offers_expire_like_queued_messages() -> None:
    sender = SendingTransfer(TID, "x", 1, sha(b"x"), touched_at=0.0)
    assert sender.expire(100.0, max_age=100.0) == []
    actions = sender.expire(100.5, max_age=100.0)
    assert sender.state is SendState.FAILED
    assert sends(actions) == []  # nobody to tell: it never reached the peer
    receiver = ReceivingTransfer(FileOffer(TID, 1, sha(b"x"), "x"), 0.0, accepted=True)
    actions = receiver.expire(200.0, max_age=100.0)
    assert receiver.state is ReceiveState.FAILED
    assert any(isinstance(a, DiscardPartial) for a in actions)


def test_the_source_going_away_ends_the_transfer_and_says_why() -> None:
    wire = started()
    wire.pump(max_chunks=1)
    actions = wire.sender.source_failed("report.pdf: no such file")
    (abort,) = sends(actions)
    assert isinstance(abort, FileAbort) and abort.code is AbortCode.SOURCE_UNREADABLE
    wire.deliver_to_receiver(abort)
    assert wire.receiver is not None and wire.receiver.state is ReceiveState.FAILED
    assert not wire.partial_exists


def test_an_abort_after_the_last_byte_does_not_undo_a_good_file() -> None:
    receiver = ReceivingTransfer(FileOffer(TID, 3, sha(b"abc"), "x"), 0.0, online=True)
    receiver.accept(0.0)
    receiver.prefix_ready(0, EMPTY_DIGEST, 0.0)
    receiver.on_chunk(FileChunk(TID, 0, b"abc"), 0.0)
    assert receiver.state is ReceiveState.VERIFYING
    assert receiver.on_abort(AbortCode.SOURCE_UNREADABLE, "") == []
    assert [type(m) for m in sends(receiver.verified(True))] == [FileComplete]


def test_acks_come_every_few_chunks_and_at_the_end() -> None:
    receiver = ReceivingTransfer(
        FileOffer(TID, 5 * CHUNK, sha(b""), "x"), 0.0, online=True, ack_every=2 * CHUNK
    )
    receiver.accept(0.0)
    receiver.prefix_ready(0, EMPTY_DIGEST, 0.0)
    acked = []
    for i in range(5):
        for message in sends(receiver.on_chunk(FileChunk(TID, i * CHUNK, bytes(CHUNK)), 0.0)):
            assert isinstance(message, FileAck)
            acked.append(message.received)
    assert acked == [2 * CHUNK, 4 * CHUNK, 5 * CHUNK]


def test_every_transition_in_the_tables_names_known_states() -> None:
    assert set(_SEND_TRANSITIONS) == set(SendState)
    assert set(_RECEIVE_TRANSITIONS) == set(ReceiveState)
    for final in (SendState.COMPLETE, SendState.DECLINED, SendState.FAILED):
        assert _SEND_TRANSITIONS[final] == frozenset()
    for state in (ReceiveState.COMPLETE, ReceiveState.DECLINED, ReceiveState.FAILED):
        assert _RECEIVE_TRANSITIONS[state] == frozenset()


# -- progress ------------------------------------------------------------------------


def test_progress_percent_rate_and_time_left() -> None:
    meter = ProgressMeter(1000, 0, now=0.0, first_after=3.0, every=5.0)
    meter.update(100, 1.0)
    meter.update(300, 2.0)
    report = meter.report()
    assert report.percent == pytest.approx(30.0)
    assert report.rate == pytest.approx(150.0)
    assert report.seconds_left == pytest.approx(700 / 150)


def test_progress_rate_follows_the_last_seconds_only() -> None:
    meter = ProgressMeter(10_000, 0, now=0.0)
    meter.update(5000, 1.0)  # a fast start
    for second in range(2, 20):
        meter.update(5000 + (second - 1) * 10, float(second))  # then 10 bytes/s
    assert meter.report().rate == pytest.approx(10.0)


def test_progress_of_a_resumed_transfer_counts_only_new_bytes() -> None:
    meter = ProgressMeter(1000, 600, now=0.0)
    meter.update(700, 1.0)
    report = meter.report()
    assert report.percent == pytest.approx(70.0)
    assert report.rate == pytest.approx(100.0)


def test_progress_lines_are_throttled() -> None:
    meter = ProgressMeter(1000, 0, now=0.0, first_after=3.0, every=5.0)
    times = [t / 10 for t in range(0, 200)]
    due = []
    for t in times:
        meter.update(int(t * 10), t)
        if meter.line_due(t):
            due.append(t)
    assert due == [3.0, 8.0, 13.0, 18.0]
    meter.update(1000, 30.0)
    assert not meter.line_due(40.0)  # done: the end is said once, not as progress


def test_progress_without_a_rate_yet() -> None:
    report = ProgressMeter(0, 0, now=5.0).report()
    assert report.percent == 100.0
    assert report.rate is None and report.seconds_left is None
