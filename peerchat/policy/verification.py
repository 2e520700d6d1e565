"""One code comparison attempt as a state machine, and the limit on failed attempts.

Pure: no sockets, no clock (every call takes `now`), no randomness it does not
get passed. An attempt is fed the peer's messages and its user's answer and
returns the messages to send; once it ends, `ending` says how.

    requester                                      responder
      | -- VerifyRequest(attempt) -----------------> |  picks nonce R, commits
      | <-- VerifyCommit(attempt, H(ctx, R)) -------- |
      | -- VerifyReveal(attempt, nonce Q) ---------> |  code(Q, R) known here
      | <-- VerifyReveal(attempt, nonce R) --------- |
      |   checks H(ctx, R), then code(Q, R)          |
      |         both users compare the codes         |
      | <-- VerifyConfirm(same) --- VerifyConfirm --> |

Stages (one table, `_TRANSITIONS`):
    REQUESTED (requester) -> REVEALED -> COMPARING -> ENDED
    COMMITTED (responder) -> COMPARING -> ENDED
and any stage -> ENDED. An attempt ends VERIFIED only when both users said
yes; anything out of order, a reveal that does not open its commitment, an
expiry or a "no" ends it otherwise.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from peerchat import limits
from peerchat.events import Ending
from peerchat.protocol import sas
from peerchat.protocol.messages import (
    AbortReason,
    Message,
    VerifyAbort,
    VerifyCommit,
    VerifyConfirm,
    VerifyMessage,
    VerifyRequest,
    VerifyReveal,
)


class Side(enum.Enum):
    REQUESTER = "requester"
    RESPONDER = "responder"


class Stage(enum.Enum):
    REQUESTED = "requested"  # requester: waits for the responder's commitment
    COMMITTED = "committed"  # responder: waits for the requester's nonce
    REVEALED = "revealed"  # requester: sent its nonce, waits for the opening
    COMPARING = "comparing"  # the code is known; waiting for both answers
    ENDED = "ended"


_TRANSITIONS: Final = {
    Stage.REQUESTED: frozenset({Stage.REVEALED, Stage.ENDED}),
    Stage.COMMITTED: frozenset({Stage.COMPARING, Stage.ENDED}),
    Stage.REVEALED: frozenset({Stage.COMPARING, Stage.ENDED}),
    Stage.COMPARING: frozenset({Stage.ENDED}),
    Stage.ENDED: frozenset(),
}

# What the peer's abort reason means here.
_PEER_ABORTS: Final = {
    AbortReason.CANCELLED: Ending.PEER_CANCELLED,
    AbortReason.EXPIRED: Ending.EXPIRED,
    AbortReason.RATE_LIMITED: Ending.PEER_RATE_LIMITED,
    AbortReason.BAD_REVEAL: Ending.BAD_REVEAL,
    AbortReason.UNEXPECTED: Ending.UNEXPECTED,
}


@dataclass(frozen=True)
class Binding:
    """The session an attempt belongs to, as this side sees it."""

    handshake_hash: bytes
    own_fp: str
    peer_fp: str


class Attempt:
    """One side of one comparison. Build with `request` or `respond`."""

    def __init__(
        self, side: Side, binding: Binding, attempt_id: bytes, nonce: bytes, now: float
    ) -> None:
        self.side = side
        self.binding = binding
        self.attempt_id = attempt_id
        self.started_at = now
        self.ctx = sas.SasContext.create(
            binding.handshake_hash, attempt_id, binding.own_fp, binding.peer_fp
        )
        self.stage = Stage.REQUESTED if side is Side.REQUESTER else Stage.COMMITTED
        self.code: str | None = None
        self.own_answer: bool | None = None
        self.peer_answer: bool | None = None
        self.ending: Ending | None = None
        self._nonce = nonce
        self._peer_commitment: bytes | None = None

    @classmethod
    def request(
        cls, binding: Binding, now: float, *, attempt_id: bytes, nonce: bytes
    ) -> tuple[Attempt, list[Message]]:
        attempt = cls(Side.REQUESTER, binding, attempt_id, nonce, now)
        return attempt, [VerifyRequest(attempt_id)]

    @classmethod
    def respond(
        cls, binding: Binding, request: VerifyRequest, now: float, *, nonce: bytes
    ) -> tuple[Attempt, list[Message]]:
        attempt = cls(Side.RESPONDER, binding, request.attempt, nonce, now)
        return attempt, [VerifyCommit(request.attempt, sas.commitment(attempt.ctx, nonce))]

    # -- state ---------------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self.stage is Stage.ENDED

    @property
    def awaiting_answer(self) -> bool:
        """The code is known and this side's user has not answered yet."""
        return self.stage is Stage.COMPARING and self.own_answer is None

    @property
    def counts_as_failure(self) -> bool:
        """Ended without success once a code existed (or with a forged opening)."""
        if self.ending is None or self.ending is Ending.VERIFIED:
            return False
        return self.code is not None or self.ending is Ending.BAD_REVEAL

    def deadline(self) -> float:
        """When the attempt ends by itself if it is still open."""
        if self.code is None:
            return self.started_at + limits.VERIFY_CODE_WAIT
        return self.started_at + limits.VERIFY_EXPIRY

    # -- input ---------------------------------------------------------------

    def receive(self, message: VerifyMessage, now: float) -> list[Message]:
        """The peer's next message for this attempt; returns what to send back."""
        if self.ended:
            return []
        if isinstance(message, VerifyAbort):
            self._end(_PEER_ABORTS[message.reason])
            return []
        stage = self.stage
        if isinstance(message, VerifyCommit) and stage is Stage.REQUESTED:
            self._peer_commitment = message.commitment
            self._move(Stage.REVEALED)
            return [VerifyReveal(self.attempt_id, self._nonce)]
        if isinstance(message, VerifyReveal) and stage is Stage.COMMITTED:
            self.code = sas.short_code(self.ctx, message.nonce, self._nonce)
            self._move(Stage.COMPARING)
            return [VerifyReveal(self.attempt_id, self._nonce)]
        if isinstance(message, VerifyReveal) and stage is Stage.REVEALED:
            assert self._peer_commitment is not None
            if not sas.opens(self.ctx, self._peer_commitment, message.nonce):
                return self._abort(Ending.BAD_REVEAL, AbortReason.BAD_REVEAL)
            self.code = sas.short_code(self.ctx, self._nonce, message.nonce)
            self._move(Stage.COMPARING)
            return []
        if isinstance(message, VerifyConfirm) and stage is Stage.COMPARING:
            if self.peer_answer is not None:
                return self._abort(Ending.UNEXPECTED, AbortReason.UNEXPECTED)
            self.peer_answer = message.same
            if not message.same:
                self._end(Ending.PEER_SAID_NO)
            elif self.own_answer:
                self._end(Ending.VERIFIED)
            return []
        return self._abort(Ending.UNEXPECTED, AbortReason.UNEXPECTED)

    def answer(self, same: bool | None, now: float) -> list[Message]:
        """This side's user: True (same code), False (different), None (no answer)."""
        if not self.awaiting_answer:
            raise ValueError(f"no answer is expected in stage {self.stage.value}")
        if same is None:
            return self._abort(Ending.CANCELLED, AbortReason.CANCELLED)
        self.own_answer = same
        if not same:
            self._end(Ending.SAID_NO)
        elif self.peer_answer:
            self._end(Ending.VERIFIED)
        return [VerifyConfirm(self.attempt_id, same)]

    def check_time(self, now: float) -> list[Message]:
        """End the attempt if its deadline has passed; returns what to tell the peer."""
        if self.ended or now < self.deadline():
            return []
        if self.code is None:
            return self._abort(Ending.NO_RESPONSE, AbortReason.CANCELLED)
        return self._abort(Ending.EXPIRED, AbortReason.EXPIRED)

    def end_quietly(self, ending: Ending) -> None:
        """End without telling the peer (its session is gone, or it started over)."""
        if not self.ended:
            self._end(ending)

    # -- internals -----------------------------------------------------------

    def _abort(self, ending: Ending, reason: AbortReason) -> list[Message]:
        self._end(ending)
        return [VerifyAbort(self.attempt_id, reason)]

    def _end(self, ending: Ending) -> None:
        self.ending = ending
        self._move(Stage.ENDED)

    def _move(self, stage: Stage) -> None:
        if stage not in _TRANSITIONS[self.stage]:
            raise RuntimeError(f"attempt cannot go from {self.stage.value} to {stage.value}")
        self.stage = stage


class FailureLimiter:
    """How long before the next comparison with a peer may start.

    The first VERIFY_FREE_FAILURES failures cost nothing (people mistype);
    after that each failure doubles the wait, from VERIFY_BACKOFF up to
    VERIFY_BACKOFF_MAX. A success, or VERIFY_FAILURE_MEMORY seconds without a
    failure, forgets the count. At most VERIFY_PEERS_TRACKED peers are
    remembered (the least recently failed is dropped first), so a flood of
    identities cannot grow the table.
    """

    def __init__(
        self,
        *,
        free: int = limits.VERIFY_FREE_FAILURES,
        backoff: float = limits.VERIFY_BACKOFF,
        backoff_max: float = limits.VERIFY_BACKOFF_MAX,
        memory: float = limits.VERIFY_FAILURE_MEMORY,
        tracked: int = limits.VERIFY_PEERS_TRACKED,
    ) -> None:
        self._free = free
        self._backoff = backoff
        self._backoff_max = backoff_max
        self._memory = memory
        self._tracked = tracked
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()  # fp -> count, last

    def wait(self, fingerprint: str, now: float) -> float:
        """Seconds until a comparison with this peer may start (0.0: now)."""
        entry = self._failures.get(fingerprint)
        if entry is None:
            return 0.0
        count, last = entry
        if now - last >= self._memory:
            del self._failures[fingerprint]
            return 0.0
        if count < self._free:
            return 0.0
        doublings = min(count - self._free, 32)  # the wait is capped long before this
        delay = min(self._backoff * 2.0**doublings, self._backoff_max)
        return max(0.0, last + delay - now)

    def failed(self, fingerprint: str, now: float) -> None:
        count, last = self._failures.pop(fingerprint, (0, now))
        if now - last >= self._memory:
            count = 0
        self._failures[fingerprint] = (count + 1, now)
        while len(self._failures) > self._tracked:
            self._failures.popitem(last=False)

    def succeeded(self, fingerprint: str) -> None:
        self._failures.pop(fingerprint, None)
