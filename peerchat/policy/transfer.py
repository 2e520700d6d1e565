"""One file transfer as seen by its sender and by its receiver: pure state machines.

No files, sockets or clocks here: each method is fed a message, a session
change or the time, updates the state and returns the actions its owner must
carry out in order (send a message, read or write a chunk, hash or check a
prefix, verify and save, discard the partial file, tell the user). An owner
that cannot carry out an action (a read or write fails) reports it back with
`source_failed` / `store_failed`, and skips the actions that followed.

    sender                                                    receiver
      | -- FileOffer(id, size, sha256, name) -------------------> |  user decides
      | <------------- FileAccept(id, offset, sha256 of prefix) - |  or FileDecline
      |    (offset > 0: the sender hashes its own first `offset`  |
      |     bytes; if they differ it sends FileRestart and the    |
      |     receiver starts over with FileAccept(id, 0, ...))     |
      | -- FileChunk(id, offset, data) x n ---------------------> |  written in order
      | <------------------------------ FileAck(id, received) --- |  every few chunks
      | <------------------------------------- FileComplete ----- |  whole SHA-256 matched
      |        FileAbort(id, code, detail) either way, at any time: the end

Resume: a session that drops leaves both sides waiting (sender WAITING,
receiver ACCEPTED). On the next session the sender offers again and the
receiver accepts again from what it has on disk, with the SHA-256 of that
prefix. The receiver must hash its prefix anyway to carry on the whole-file
digest, so the proof costs it nothing; the sender re-reads its prefix once per
resume, and in exchange both sides agree on every byte before the offset
before more are sent (a source file changed since the offer, or a damaged
partial file, is found at once rather than after the rest has been sent).

Bounds: a chunk must start exactly where the received bytes end and may not
reach past the announced size; acknowledgements may only cover what was sent;
a receiver starts over at most MAX_TRANSFER_RESTARTS times; a receiver that
hears nothing for `stall_timeout` while it expects chunks calls the transfer
stalled and keeps its partial file for a later resume.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from peerchat.limits import (
    CHUNK_BYTES,
    MAX_TRANSFER_RESTARTS,
    TRANSFER_ACK_EVERY,
    TRANSFER_STALL_TIMEOUT,
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


class TransferOutcome(enum.StrEnum):
    """What the user is told once about a transfer."""

    COMPLETE = "complete"
    DECLINED = "declined"
    FAILED = "failed"
    STALLED = "stalled"  # not over: it resumes on a later session


ABORT_REASONS: Final = {
    AbortCode.STALLED: "no data arrived for too long",
    AbortCode.CHUNK_OUT_OF_BOUNDS: "a chunk did not fit the announced file",
    AbortCode.DIGEST_MISMATCH: "the file does not match its SHA-256 digest",
    AbortCode.SOURCE_UNREADABLE: "the sender cannot read the file",
    AbortCode.CANNOT_STORE: "the receiver cannot store the file",
    AbortCode.UNKNOWN_TRANSFER: "the other side does not know this transfer",
    AbortCode.PROTOCOL_VIOLATION: "the other side broke the transfer protocol",
    AbortCode.TOO_MANY_RESTARTS: "the partial file kept differing from the original",
    AbortCode.EXPIRED: "it waited too long",
}


# -- actions -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    message: TransferMessage


@dataclass(frozen=True, slots=True)
class ReadChunk:
    """Sender: read `length` bytes at `offset` of the source and send them as a FileChunk."""

    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class CheckPrefix:
    """Sender: compare the SHA-256 of the source's first `offset` bytes with `digest`."""

    offset: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class HashPartial:
    """Receiver: find how many bytes the partial file holds and the SHA-256 of them."""


@dataclass(frozen=True, slots=True)
class WriteChunk:
    offset: int
    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class ResetPartial:
    """Receiver: empty the partial file and start the digest again."""


@dataclass(frozen=True, slots=True)
class VerifyAndSave:
    """Receiver: every byte is in; compare the whole digest, then move the file into place."""


@dataclass(frozen=True, slots=True)
class DiscardPartial:
    """Receiver: remove the partial file."""


@dataclass(frozen=True, slots=True)
class Report:
    """Tell the user, once."""

    outcome: TransferOutcome
    reason: str = ""
    code: AbortCode | None = None  # why it failed, as the wire says it


Action = (
    Send
    | ReadChunk
    | CheckPrefix
    | HashPartial
    | WriteChunk
    | ResetPartial
    | VerifyAndSave
    | DiscardPartial
    | Report
)


# -- the sender -----------------------------------------------------------------


class SendState(enum.Enum):
    WAITING = "waiting"  # the offer goes out on the next session
    OFFERED = "offered"  # offered on this session: waiting for the answer
    CHECKING = "checking"  # accepted from an offset: comparing our prefix with theirs
    SENDING = "sending"
    COMPLETE = "complete"
    DECLINED = "declined"
    FAILED = "failed"


_S = SendState
_LIVE_SEND: Final = frozenset({_S.OFFERED, _S.CHECKING, _S.SENDING})
_SEND_TRANSITIONS: Final = {
    _S.WAITING: frozenset({_S.OFFERED, _S.FAILED}),
    _S.OFFERED: frozenset(
        {_S.CHECKING, _S.SENDING, _S.WAITING, _S.COMPLETE, _S.DECLINED, _S.FAILED}
    ),
    _S.CHECKING: frozenset(
        {_S.SENDING, _S.OFFERED, _S.WAITING, _S.COMPLETE, _S.DECLINED, _S.FAILED}
    ),
    _S.SENDING: frozenset({_S.WAITING, _S.COMPLETE, _S.DECLINED, _S.FAILED}),
    _S.COMPLETE: frozenset(),
    _S.DECLINED: frozenset(),
    _S.FAILED: frozenset(),
}
SEND_FINAL: Final = frozenset({_S.COMPLETE, _S.DECLINED, _S.FAILED})


class SendingTransfer:
    """The sender's side of one transfer."""

    def __init__(
        self,
        transfer_id: str,
        name: str,
        size: int,
        sha256: bytes,
        touched_at: float,
        *,
        chunk_bytes: int = CHUNK_BYTES,
        max_restarts: int = MAX_TRANSFER_RESTARTS,
    ) -> None:
        if size < 0 or len(sha256) != 32 or chunk_bytes < 1:
            raise ValueError("a transfer needs a size >= 0, a SHA-256 and a chunk size >= 1")
        self.transfer_id = transfer_id
        self.name = name
        self.size = size
        self.sha256 = sha256
        self.state = SendState.WAITING
        self.next_offset = 0  # the next byte to send
        self.acked = 0  # bytes the receiver says it has stored
        self.touched_at = touched_at  # the last time anything moved (for expiry)
        self.restarts = 0
        self._chunk_bytes = chunk_bytes
        self._max_restarts = max_restarts
        self._check: CheckPrefix | None = None  # the comparison under way

    # -- queries

    @property
    def final(self) -> bool:
        return self.state in SEND_FINAL

    @property
    def in_flight(self) -> int:
        """Bytes sent and not yet acknowledged."""
        return self.next_offset - self.acked if self.state is SendState.SENDING else 0

    @property
    def wants_to_send(self) -> bool:
        return self.state is SendState.SENDING and self.next_offset < self.size

    def offer(self) -> FileOffer:
        return FileOffer(self.transfer_id, self.size, self.sha256, self.name)

    # -- the session

    def session_up(self, now: float) -> list[Action]:
        if self.state is not SendState.WAITING:
            return []
        self._set(SendState.OFFERED)
        self.touched_at = now
        return [Send(self.offer())]

    def session_down(self) -> None:
        if self.state in _LIVE_SEND:
            self._set(SendState.WAITING)
            self.next_offset = self.acked

    # -- answers from the receiver

    def on_accept(self, message: FileAccept, now: float) -> list[Action]:
        if self.state is not SendState.OFFERED:
            return []  # a repeat, or late: the state already moved on
        if message.offset > self.size:
            return self._violation(f"it accepted from {message.offset}, past the end")
        if message.offset == 0 and message.prefix_sha256 != EMPTY_DIGEST:
            return self._violation("it accepted from 0 with a digest of something")
        self.touched_at = now
        if message.offset == 0:
            self._start_at(0)
            return []
        self._check = CheckPrefix(message.offset, message.prefix_sha256)
        self._set(SendState.CHECKING)
        return [self._check]

    def prefix_checked(self, check: CheckPrefix, matches: bool, now: float) -> list[Action]:
        """The owner compared our first `check.offset` bytes with the receiver's digest."""
        if self.state is not SendState.CHECKING or check != self._check:
            return []  # the session went away meanwhile: the next one checks again
        self.touched_at = now
        if matches:
            self._start_at(check.offset)
            return []
        self.restarts += 1
        if self.restarts > self._max_restarts:
            return self._fail(AbortCode.TOO_MANY_RESTARTS, "")
        self._set(SendState.OFFERED)
        return [Send(FileRestart(self.transfer_id))]

    def take_chunks(self, budget: int) -> list[ReadChunk]:
        """Up to `budget` bytes of chunks to send now (at least one chunk if budget > 0)."""
        reads: list[ReadChunk] = []
        while self.wants_to_send and budget > 0:
            length = min(self._chunk_bytes, self.size - self.next_offset)
            reads.append(ReadChunk(self.next_offset, length))
            self.next_offset += length
            budget -= length
        return reads

    def on_ack(self, received: int, now: float) -> list[Action]:
        if self.state is not SendState.SENDING:
            return []
        if not self.acked <= received <= self.next_offset:
            return self._violation(f"it acknowledged {received} bytes, {self.next_offset} sent")
        self.acked = received
        self.touched_at = now
        return []

    def on_complete(self) -> list[Action]:
        if self.final:
            return []
        self._set(SendState.COMPLETE)
        self.acked = self.next_offset = self.size
        return [Report(TransferOutcome.COMPLETE)]

    def on_decline(self, reason: str) -> list[Action]:
        if self.final:
            return []
        self._set(SendState.DECLINED)
        return [Report(TransferOutcome.DECLINED, reason)]

    def on_abort(self, code: AbortCode, detail: str) -> list[Action]:
        if self.final:
            return []
        if code is AbortCode.STALLED:
            if self.state is SendState.WAITING:
                return []
            self.session_down()  # the receiver stopped waiting: offer again next session
            return [Report(TransferOutcome.STALLED, ABORT_REASONS[code])]
        self._set(SendState.FAILED)
        return [Report(TransferOutcome.FAILED, _reason(code, detail), code)]

    # -- local events

    def source_failed(self, detail: str) -> list[Action]:
        """The source file cannot be read (gone, changed, unreadable)."""
        if self.final:
            return []
        return self._fail(AbortCode.SOURCE_UNREADABLE, detail)

    def expire(self, now: float, max_age: float) -> list[Action]:
        """A transfer that has not moved for `max_age` seconds while waiting ends."""
        if self.state is not SendState.WAITING or now - self.touched_at <= max_age:
            return []
        return self._fail(AbortCode.EXPIRED, "")

    # -- internals

    def _start_at(self, offset: int) -> None:
        self._set(SendState.SENDING)
        self.next_offset = self.acked = offset

    def _violation(self, detail: str) -> list[Action]:
        return self._fail(AbortCode.PROTOCOL_VIOLATION, detail)

    def _fail(self, code: AbortCode, detail: str) -> list[Action]:
        online = self.state in _LIVE_SEND
        self._set(SendState.FAILED)
        actions: list[Action] = []
        if online:
            actions.append(Send(FileAbort(self.transfer_id, code, detail)))
        actions.append(Report(TransferOutcome.FAILED, _reason(code, detail), code))
        return actions

    def _set(self, new: SendState) -> None:
        if new not in _SEND_TRANSITIONS[self.state]:
            raise RuntimeError(f"a sent transfer cannot go from {self.state.value} to {new.value}")
        self.state = new


# -- the receiver ---------------------------------------------------------------


class ReceiveState(enum.Enum):
    OFFERED = "offered"  # waiting for the user's decision; nothing on disk
    ACCEPTED = "accepted"  # accepted; the accept goes out on the next session
    PREPARING = "preparing"  # hashing what the partial file already holds
    RECEIVING = "receiving"  # accept sent on this session: chunks expected
    VERIFYING = "verifying"  # every byte is in: checking the whole digest, saving
    COMPLETE = "complete"
    DECLINED = "declined"
    FAILED = "failed"


_R = ReceiveState
_RECEIVE_TRANSITIONS: Final = {
    _R.OFFERED: frozenset({_R.ACCEPTED, _R.PREPARING, _R.DECLINED, _R.FAILED}),
    _R.ACCEPTED: frozenset({_R.PREPARING, _R.FAILED}),
    _R.PREPARING: frozenset({_R.RECEIVING, _R.VERIFYING, _R.ACCEPTED, _R.FAILED}),
    _R.RECEIVING: frozenset({_R.VERIFYING, _R.ACCEPTED, _R.FAILED}),
    _R.VERIFYING: frozenset({_R.COMPLETE, _R.FAILED}),
    _R.COMPLETE: frozenset(),
    _R.DECLINED: frozenset(),
    _R.FAILED: frozenset(),
}
RECEIVE_FINAL: Final = frozenset({_R.COMPLETE, _R.DECLINED, _R.FAILED})
# States in which the partial file exists and belongs to this transfer.
_HAS_PARTIAL: Final = frozenset({_R.ACCEPTED, _R.PREPARING, _R.RECEIVING, _R.VERIFYING})


class ReceivingTransfer:
    """The receiver's side of one transfer."""

    def __init__(
        self,
        offer: FileOffer,
        touched_at: float,
        *,
        accepted: bool = False,
        online: bool = False,
        ack_every: int = TRANSFER_ACK_EVERY * CHUNK_BYTES,
        stall_timeout: float = TRANSFER_STALL_TIMEOUT,
        max_restarts: int = MAX_TRANSFER_RESTARTS,
    ) -> None:
        self.transfer_id = offer.transfer_id
        self.name = offer.name
        self.size = offer.size
        self.sha256 = offer.sha256
        self.state = ReceiveState.ACCEPTED if accepted else ReceiveState.OFFERED
        self.received = 0
        self.touched_at = touched_at
        self.online = online
        self.restarts = 0
        self._acked = 0
        self._ack_every = ack_every
        self._stall_timeout = stall_timeout
        self._max_restarts = max_restarts

    @property
    def final(self) -> bool:
        return self.state in RECEIVE_FINAL

    @property
    def has_partial(self) -> bool:
        return self.state in _HAS_PARTIAL

    def matches(self, offer: FileOffer) -> bool:
        """Whether a repeated offer is the same file (a different one under one id is not)."""
        return (offer.size, offer.sha256, offer.name) == (self.size, self.sha256, self.name)

    # -- the user

    def accept(self, now: float) -> list[Action]:
        if self.state is not ReceiveState.OFFERED:
            return []
        self.touched_at = now
        if not self.online:
            self._set(ReceiveState.ACCEPTED)
            return []
        self._set(ReceiveState.PREPARING)
        return [HashPartial()]

    def decline(self, reason: str) -> list[Action]:
        if self.state is not ReceiveState.OFFERED:
            return []
        self._set(ReceiveState.DECLINED)
        return [Send(FileDecline(self.transfer_id, reason))] if self.online else []

    # -- the session

    def session_up(self) -> list[Action]:
        self.online = True
        if self.state is not ReceiveState.ACCEPTED:
            return []
        self._set(ReceiveState.PREPARING)
        return [HashPartial()]

    def session_down(self) -> None:
        self.online = False
        if self.state in (ReceiveState.PREPARING, ReceiveState.RECEIVING):
            self._set(ReceiveState.ACCEPTED)

    def offered_again(self) -> list[Action]:
        """The sender offered this transfer again on a session where we are not receiving it."""
        if self.state is ReceiveState.ACCEPTED and self.online:
            self._set(ReceiveState.PREPARING)  # after a stall: resume now
            return [HashPartial()]
        return []

    # -- the partial file and the data

    def prefix_ready(self, offset: int, digest: bytes, now: float) -> list[Action]:
        """The owner found `offset` bytes on disk with this SHA-256."""
        if self.state is not ReceiveState.PREPARING:
            return []  # the session went away meanwhile
        actions: list[Action] = []
        if offset > self.size:  # more than was announced: not this file
            actions.append(ResetPartial())
            offset, digest = 0, EMPTY_DIGEST
        self.received = self._acked = offset
        self.touched_at = now
        actions.append(Send(FileAccept(self.transfer_id, offset, digest)))
        if offset == self.size:
            self._set(ReceiveState.VERIFYING)
            actions.append(VerifyAndSave())
        else:
            self._set(ReceiveState.RECEIVING)
        return actions

    def on_chunk(self, chunk: FileChunk, now: float) -> list[Action]:
        if self.state is not ReceiveState.RECEIVING:
            return []  # late chunks after a stall, or chunks for an offer not accepted
        end = chunk.offset + len(chunk.data)
        if chunk.offset != self.received:
            where = f"a chunk at byte {chunk.offset}, expected {self.received}"
            return self._fail(AbortCode.CHUNK_OUT_OF_BOUNDS, where)
        if end > self.size:
            where = f"a chunk reaching byte {end}, past the announced size of {self.size}"
            return self._fail(AbortCode.CHUNK_OUT_OF_BOUNDS, where)
        self.received = end
        self.touched_at = now
        actions: list[Action] = [WriteChunk(chunk.offset, chunk.data)]
        if end == self.size or end - self._acked >= self._ack_every:
            self._acked = end
            actions.append(Send(FileAck(self.transfer_id, end)))
        if end == self.size:
            self._set(ReceiveState.VERIFYING)
            actions.append(VerifyAndSave())
        return actions

    def on_restart(self, now: float) -> list[Action]:
        """The sender's file differs from our partial one before the offset: start over."""
        if self.state is not ReceiveState.RECEIVING:
            return []
        self.restarts += 1
        if self.restarts > self._max_restarts:
            return self._fail(AbortCode.TOO_MANY_RESTARTS, "")
        self.received = self._acked = 0
        self.touched_at = now
        return [ResetPartial(), Send(FileAccept(self.transfer_id, 0, EMPTY_DIGEST))]

    def verified(self, matches: bool) -> list[Action]:
        """The owner compared the whole file's digest (and saved it when it matched)."""
        if self.state is not ReceiveState.VERIFYING:
            return []
        if not matches:
            return self._fail(AbortCode.DIGEST_MISMATCH, "")
        self._set(ReceiveState.COMPLETE)
        actions: list[Action] = [Report(TransferOutcome.COMPLETE)]
        if self.online:
            actions.insert(0, Send(FileComplete(self.transfer_id)))
        return actions

    def on_abort(self, code: AbortCode, detail: str) -> list[Action]:
        if self.final or self.state is ReceiveState.VERIFYING:
            return []  # with every byte in, the file is judged by its digest alone
        if code is AbortCode.STALLED:  # the sender gave up waiting: resume later
            if self.state in (ReceiveState.PREPARING, ReceiveState.RECEIVING):
                self._set(ReceiveState.ACCEPTED)
            return []
        return self._fail(code, detail, tell_peer=False)

    def store_failed(self, detail: str) -> list[Action]:
        """Writing, hashing or saving the file failed here."""
        if self.final:
            return []
        return self._fail(AbortCode.CANNOT_STORE, detail)

    # -- time

    def tick(self, now: float) -> list[Action]:
        if self.state is not ReceiveState.RECEIVING or now - self.touched_at < self._stall_timeout:
            return []
        self._set(ReceiveState.ACCEPTED)
        abort = FileAbort(self.transfer_id, AbortCode.STALLED, "")
        return [Send(abort), Report(TransferOutcome.STALLED, ABORT_REASONS[AbortCode.STALLED])]

    def expire(self, now: float, max_age: float) -> list[Action]:
        if self.state is not ReceiveState.ACCEPTED or now - self.touched_at <= max_age:
            return []
        return self._fail(AbortCode.EXPIRED, "", tell_peer=False)

    # -- internals

    def _fail(self, code: AbortCode, detail: str, *, tell_peer: bool = True) -> list[Action]:
        had_partial = self.has_partial
        self._set(ReceiveState.FAILED)
        actions: list[Action] = []
        if tell_peer and self.online:
            actions.append(Send(FileAbort(self.transfer_id, code, detail)))
        if had_partial:
            actions.append(DiscardPartial())
        actions.append(Report(TransferOutcome.FAILED, _reason(code, detail), code))
        return actions

    def _set(self, new: ReceiveState) -> None:
        if new not in _RECEIVE_TRANSITIONS[self.state]:
            raise RuntimeError(
                f"a received transfer cannot go from {self.state.value} to {new.value}"
            )
        self.state = new


# -- helpers --------------------------------------------------------------------


def _reason(code: AbortCode, detail: str) -> str:
    base = ABORT_REASONS[code]
    return f"{base} ({detail})" if detail else base


def sends(actions: Iterable[Action]) -> list[TransferMessage]:
    """The messages among `actions` (for tests and simple owners)."""
    return [action.message for action in actions if isinstance(action, Send)]
