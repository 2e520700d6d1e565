"""Each step of the transfer state machines, with the exact actions it asks for.

The back-to-back tests in test_transfer_policy.py check that a file arrives; these
check every message word for word (its transfer id, offset, code and detail), every
report the user gets, the times the machines keep, and each bound at its exact value,
since an owner carries out the actions as they are.
"""

from __future__ import annotations

import hashlib

import pytest

from peerchat.events import TransferOutcome
from peerchat.policy.transfer import (
    CheckPrefix,
    DiscardPartial,
    HashPartial,
    ReadChunk,
    ReceiveState,
    ReceivingTransfer,
    Report,
    ResetPartial,
    Send,
    SendingTransfer,
    SendState,
    VerifyAndSave,
    WriteChunk,
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
)

TID = "cd" * 16
DIGEST = hashlib.sha256(b"0123456789").digest()
PREFIX = hashlib.sha256(b"0123").digest()
OFFER = FileOffer(TID, 10, DIGEST, "notes.txt")

Failed = TransferOutcome.FAILED


def sender(*, chunk_bytes: int = 4, max_restarts: int = 2) -> SendingTransfer:
    return SendingTransfer(
        TID, "notes.txt", 10, DIGEST, 1.0, chunk_bytes=chunk_bytes, max_restarts=max_restarts
    )


def sending(*, chunk_bytes: int = 4) -> SendingTransfer:
    transfer = sender(chunk_bytes=chunk_bytes)
    transfer.session_up(2.0)
    assert transfer.on_accept(FileAccept(TID, 0, EMPTY_DIGEST), 3.0) == []
    return transfer


def receiving(*, max_restarts: int = 2, stall_timeout: float = 30.0) -> ReceivingTransfer:
    transfer = ReceivingTransfer(
        OFFER, 1.0, online=True, ack_every=4, stall_timeout=stall_timeout, max_restarts=max_restarts
    )
    assert transfer.accept(2.0) == [HashPartial()]
    transfer.prefix_ready(0, EMPTY_DIGEST, 3.0)
    assert transfer.state is ReceiveState.RECEIVING
    return transfer


# -- the sender ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "sha256", "chunk_bytes"), [(-1, DIGEST, 4), (10, DIGEST[:31], 4), (10, DIGEST, 0)]
)
def test_a_sender_refuses_a_negative_size_a_short_digest_or_no_chunk_size(
    size: int, sha256: bytes, chunk_bytes: int
) -> None:
    with pytest.raises(
        ValueError, match=r"^a transfer needs a size >= 0, a SHA-256 and a chunk size >= 1$"
    ):
        SendingTransfer(TID, "notes.txt", size, sha256, 0.0, chunk_bytes=chunk_bytes)


def test_a_new_sender_waits_offers_its_file_and_sends_one_byte_chunks_if_told() -> None:
    transfer = sender(chunk_bytes=1)
    assert (transfer.transfer_id, transfer.name, transfer.state) == (
        TID,
        "notes.txt",
        SendState.WAITING,
    )
    assert (transfer.next_offset, transfer.acked, transfer.touched_at) == (0, 0, 1.0)
    assert transfer.offer() == OFFER
    assert transfer.session_up(5.0) == [Send(OFFER)]
    assert transfer.touched_at == 5.0
    assert transfer.on_accept(FileAccept(TID, 0, EMPTY_DIGEST), 6.0) == []
    assert transfer.touched_at == 6.0
    assert transfer.take_chunks(1) == [ReadChunk(0, 1)]


def test_chunks_cover_the_file_up_to_its_size_within_the_budget() -> None:
    transfer = sending()
    assert transfer.take_chunks(1) == [ReadChunk(0, 4)]  # at least one chunk
    assert transfer.take_chunks(100) == [ReadChunk(4, 4), ReadChunk(8, 2)]
    assert transfer.take_chunks(100) == []


def test_an_accept_past_the_end_is_a_violation_said_word_for_word() -> None:
    transfer = sender()
    transfer.session_up(2.0)
    assert transfer.on_accept(FileAccept(TID, 11, PREFIX), 3.0) == [
        Send(FileAbort(TID, AbortCode.PROTOCOL_VIOLATION, "it accepted from 11, past the end")),
        Report(
            Failed,
            "the other side broke the transfer protocol (it accepted from 11, past the end)",
            AbortCode.PROTOCOL_VIOLATION,
        ),
    ]


def test_an_accept_from_zero_with_a_digest_is_a_violation_said_word_for_word() -> None:
    transfer = sender()
    transfer.session_up(2.0)
    detail = "it accepted from 0 with a digest of something"
    assert transfer.on_accept(FileAccept(TID, 0, PREFIX), 3.0) == [
        Send(FileAbort(TID, AbortCode.PROTOCOL_VIOLATION, detail)),
        Report(
            Failed,
            f"the other side broke the transfer protocol ({detail})",
            AbortCode.PROTOCOL_VIOLATION,
        ),
    ]


def test_an_accept_from_one_byte_checks_that_byte_first() -> None:
    transfer = sender()
    transfer.session_up(2.0)
    one = hashlib.sha256(b"0").digest()
    assert transfer.on_accept(FileAccept(TID, 1, one), 3.0) == [CheckPrefix(1, one)]
    assert transfer.state is SendState.CHECKING


def test_a_check_that_is_not_the_one_under_way_changes_nothing() -> None:
    transfer = sender()
    transfer.session_up(2.0)
    transfer.on_accept(FileAccept(TID, 4, PREFIX), 3.0)
    assert transfer.prefix_checked(CheckPrefix(5, PREFIX), True, 4.0) == []
    assert (transfer.state, transfer.touched_at) == (SendState.CHECKING, 3.0)
    assert transfer.prefix_checked(CheckPrefix(4, PREFIX), True, 4.0) == []
    assert (transfer.state, transfer.next_offset, transfer.touched_at) == (
        SendState.SENDING,
        4,
        4.0,
    )


def test_the_sender_restarts_a_differing_prefix_up_to_its_limit_then_fails() -> None:
    transfer = sender(max_restarts=2)
    transfer.session_up(2.0)
    for attempt in (1, 2):
        transfer.on_accept(FileAccept(TID, 4, PREFIX), 3.0)
        assert transfer.prefix_checked(CheckPrefix(4, PREFIX), False, 4.0) == [
            Send(FileRestart(TID))
        ]
        assert (transfer.restarts, transfer.state) == (attempt, SendState.OFFERED)
    transfer.on_accept(FileAccept(TID, 4, PREFIX), 5.0)
    assert transfer.prefix_checked(CheckPrefix(4, PREFIX), False, 6.0) == [
        Send(FileAbort(TID, AbortCode.TOO_MANY_RESTARTS, "")),
        Report(
            Failed, "the partial file kept differing from the original", AbortCode.TOO_MANY_RESTARTS
        ),
    ]


def test_acknowledgements_may_repeat_but_not_go_back_or_past_what_was_sent() -> None:
    transfer = sending()
    transfer.take_chunks(4)
    assert transfer.on_ack(0, 4.0) == []  # nothing new stored yet: fine
    assert transfer.on_ack(4, 5.0) == []
    assert (transfer.acked, transfer.touched_at) == (4, 5.0)
    assert transfer.on_ack(4, 6.0) == []
    assert transfer.on_ack(9, 7.0) == [
        Send(FileAbort(TID, AbortCode.PROTOCOL_VIOLATION, "it acknowledged 9 bytes, 4 sent")),
        Report(
            Failed,
            "the other side broke the transfer protocol (it acknowledged 9 bytes, 4 sent)",
            AbortCode.PROTOCOL_VIOLATION,
        ),
    ]


def test_a_dropped_session_sends_again_from_what_was_acknowledged() -> None:
    transfer = sending()
    transfer.take_chunks(8)
    transfer.on_ack(4, 4.0)
    transfer.session_down()
    assert (transfer.state, transfer.next_offset, transfer.acked) == (SendState.WAITING, 4, 4)


def test_completion_declining_and_aborts_are_reported_word_for_word() -> None:
    done = sending()
    done.take_chunks(4)
    assert done.on_complete() == [Report(TransferOutcome.COMPLETE)]
    assert (done.acked, done.next_offset) == (10, 10)
    declined = sender()
    declined.session_up(2.0)
    assert declined.on_decline("not now") == [Report(TransferOutcome.DECLINED, "not now")]
    stalled = sending()
    assert stalled.on_abort(AbortCode.STALLED, "") == [
        Report(TransferOutcome.STALLED, "no data arrived for too long")
    ]
    aborted = sending()
    assert aborted.on_abort(AbortCode.CANNOT_STORE, "disk full") == [
        Report(Failed, "the receiver cannot store the file (disk full)", AbortCode.CANNOT_STORE)
    ]


def test_an_unreadable_source_tells_the_receiver_why() -> None:
    transfer = sending()
    assert transfer.source_failed("changed since the offer") == [
        Send(FileAbort(TID, AbortCode.SOURCE_UNREADABLE, "changed since the offer")),
        Report(
            Failed,
            "the sender cannot read the file (changed since the offer)",
            AbortCode.SOURCE_UNREADABLE,
        ),
    ]


def test_a_waiting_sender_expires_only_after_the_whole_age() -> None:
    transfer = SendingTransfer(TID, "notes.txt", 10, DIGEST, 100.0)
    assert transfer.expire(160.0, 60.0) == []
    assert transfer.expire(160.5, 60.0) == [Report(Failed, "it waited too long", AbortCode.EXPIRED)]


def test_an_impossible_sender_step_is_refused_by_name() -> None:
    transfer = sending()
    transfer.on_complete()
    with pytest.raises(RuntimeError, match=r"^a sent transfer cannot go from complete to sending$"):
        transfer._set(SendState.SENDING)


# -- the receiver -------------------------------------------------------------------


def test_a_new_receiver_is_offline_until_told_and_accepts_for_later() -> None:
    transfer = ReceivingTransfer(OFFER, 1.0)
    assert (transfer.transfer_id, transfer.name, transfer.received) == (TID, "notes.txt", 0)
    assert transfer.matches(OFFER)
    assert not transfer.matches(FileOffer(TID, 10, DIGEST, "other.txt"))
    assert transfer.accept(4.0) == []
    assert (transfer.state, transfer.touched_at) == (ReceiveState.ACCEPTED, 4.0)
    assert transfer.store_failed("disk full") == [  # offline: nobody to tell
        DiscardPartial(),
        Report(Failed, "the receiver cannot store the file (disk full)", AbortCode.CANNOT_STORE),
    ]


def test_a_decline_online_says_why() -> None:
    transfer = ReceivingTransfer(OFFER, 1.0, online=True)
    assert transfer.decline("too big") == [Send(FileDecline(TID, "too big"))]


def test_a_failure_while_receiving_tells_the_sender_and_drops_the_partial_file() -> None:
    transfer = receiving()
    assert transfer.store_failed("disk full") == [
        Send(FileAbort(TID, AbortCode.CANNOT_STORE, "disk full")),
        DiscardPartial(),
        Report(Failed, "the receiver cannot store the file (disk full)", AbortCode.CANNOT_STORE),
    ]


def test_a_dropped_session_leaves_the_receiver_offline() -> None:
    transfer = receiving()
    transfer.session_down()
    assert not transfer.online
    assert transfer.store_failed("gone") == [
        DiscardPartial(),
        Report(Failed, "the receiver cannot store the file (gone)", AbortCode.CANNOT_STORE),
    ]


def test_a_prefix_longer_than_the_file_starts_over_and_a_whole_one_is_verified() -> None:
    longer = ReceivingTransfer(OFFER, 1.0, online=True)
    longer.accept(2.0)
    assert longer.prefix_ready(11, PREFIX, 5.0) == [
        ResetPartial(),
        Send(FileAccept(TID, 0, EMPTY_DIGEST)),
    ]
    assert (longer.received, longer.touched_at) == (0, 5.0)
    whole = ReceivingTransfer(OFFER, 1.0, online=True)
    whole.accept(2.0)
    assert whole.prefix_ready(10, DIGEST, 5.0) == [
        Send(FileAccept(TID, 10, DIGEST)),
        VerifyAndSave(),
    ]


def test_chunks_are_acknowledged_by_transfer_id() -> None:
    transfer = receiving()
    assert transfer.on_chunk(FileChunk(TID, 0, b"0123"), 4.0) == [
        WriteChunk(0, b"0123"),
        Send(FileAck(TID, 4)),
    ]


def test_the_receiver_starts_over_up_to_its_limit_then_fails() -> None:
    transfer = receiving(max_restarts=2)
    transfer.on_chunk(FileChunk(TID, 0, b"0123"), 4.0)
    for attempt in (1, 2):
        assert transfer.on_restart(5.0 + attempt) == [
            ResetPartial(),
            Send(FileAccept(TID, 0, EMPTY_DIGEST)),
        ]
        assert (transfer.restarts, transfer.received, transfer.touched_at) == (
            attempt,
            0,
            5.0 + attempt,
        )
    assert transfer.on_restart(9.0) == [
        Send(FileAbort(TID, AbortCode.TOO_MANY_RESTARTS, "")),
        DiscardPartial(),
        Report(
            Failed, "the partial file kept differing from the original", AbortCode.TOO_MANY_RESTARTS
        ),
    ]


def test_a_whole_file_is_confirmed_to_the_sender_before_the_user_is_told() -> None:
    transfer = receiving()
    transfer.on_chunk(FileChunk(TID, 0, b"0123456789"), 4.0)
    assert transfer.verified(True) == [Send(FileComplete(TID)), Report(TransferOutcome.COMPLETE)]
    wrong = receiving()
    wrong.on_chunk(FileChunk(TID, 0, b"0123456789"), 4.0)
    assert wrong.verified(False) == [
        Send(FileAbort(TID, AbortCode.DIGEST_MISMATCH, "")),
        DiscardPartial(),
        Report(Failed, "the file does not match its SHA-256 digest", AbortCode.DIGEST_MISMATCH),
    ]


def test_a_stall_is_called_at_exactly_the_timeout() -> None:
    transfer = receiving(stall_timeout=30.0)
    assert transfer.tick(32.9) == []
    assert transfer.tick(33.0) == [
        Send(FileAbort(TID, AbortCode.STALLED, "")),
        Report(TransferOutcome.STALLED, "no data arrived for too long"),
    ]
    assert transfer.state is ReceiveState.ACCEPTED


def test_an_accepted_transfer_expires_only_after_the_whole_age_without_telling_the_peer() -> None:
    transfer = ReceivingTransfer(OFFER, 100.0, accepted=True, online=True)
    assert transfer.expire(160.0, 60.0) == []
    assert transfer.expire(160.5, 60.0) == [
        DiscardPartial(),
        Report(Failed, "it waited too long", AbortCode.EXPIRED),
    ]
    undecided = ReceivingTransfer(OFFER, 100.0, online=True)
    assert undecided.expire(10_000.0, 60.0) == []  # the user has not decided: it stays
    assert undecided.state is ReceiveState.OFFERED


def test_an_offer_again_resumes_only_an_accepted_transfer_on_a_session() -> None:
    offline = ReceivingTransfer(OFFER, 1.0, accepted=True)
    assert offline.offered_again() == []
    undecided = ReceivingTransfer(OFFER, 1.0, online=True)
    assert undecided.offered_again() == []
    assert undecided.state is ReceiveState.OFFERED
    accepted = ReceivingTransfer(OFFER, 1.0, accepted=True, online=True)
    assert accepted.offered_again() == [HashPartial()]
    assert accepted.state is ReceiveState.PREPARING


def test_the_sender_giving_up_leaves_the_receiver_waiting_and_an_abort_is_not_answered() -> None:
    stalled = receiving()
    assert stalled.on_abort(AbortCode.STALLED, "") == []
    assert stalled.state is ReceiveState.ACCEPTED
    undecided = ReceivingTransfer(OFFER, 1.0, online=True)
    assert undecided.on_abort(AbortCode.STALLED, "") == []
    assert undecided.state is ReceiveState.OFFERED
    aborted = receiving()
    assert aborted.on_abort(AbortCode.SOURCE_UNREADABLE, "changed") == [
        DiscardPartial(),
        Report(Failed, "the sender cannot read the file (changed)", AbortCode.SOURCE_UNREADABLE),
    ]


def test_an_impossible_receiver_step_is_refused_by_name() -> None:
    transfer = ReceivingTransfer(OFFER, 1.0)
    with pytest.raises(
        RuntimeError, match=r"^a received transfer cannot go from offered to complete$"
    ):
        transfer._set(ReceiveState.COMPLETE)
