"""Code comparison with connected peers: the role the node wires, and the menu's view of it.

`VerificationRole` lives on the network thread. The node tells it which
session is current for each peer (`session_opened` / `session_closed`, with
the session's handshake hash), hands it the peer's comparison messages
(`receive`) and the time (`tick`), and gives it three ways out: `send` a
message to a peer's current session, `mark_verified` a fingerprint (the
node's one write path for "verified"), and `emit` news for the user.

At most one attempt runs per peer. When both users press "compare" at once,
the two requests cross; the request of the peer with the smaller fingerprint
goes on and the other is dropped on both sides, so they agree without a
further message. A new request from a peer while its attempt runs means the
peer started over: the old attempt ends (and counts as failed if a code had
been shown).

The menu thread reaches the role through `Verifier`, which `LoopVerifier`
implements by running each call on the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol, TypeVar

from peerchat import limits
from peerchat.events import (
    CodeRefused,
    CodeRequested,
    CodeShown,
    Ending,
    UiEvent,
    VerificationEnded,
)
from peerchat.policy.verification import Attempt, Binding, FailureLimiter, Side, Stage
from peerchat.protocol.messages import (
    ATTEMPT_ID_BYTES,
    VERIFY_NONCE_BYTES,
    AbortReason,
    Message,
    VerifyAbort,
    VerifyMessage,
    VerifyRequest,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
CodeResult = CodeShown | CodeRefused
OnCode = Callable[[CodeResult], None]

# How much longer than the role's own deadline the menu waits for a code.
_MENU_WAIT_MARGIN: Final = 5.0


class Verifier(Protocol):
    """What the menu needs for code comparison; every call comes from the menu thread."""

    def start(self, fingerprint: str) -> CodeResult:
        """Ask the peer to compare a code; returns once the code is known or cannot be."""
        ...

    def waiting(self) -> list[CodeShown]:
        """Codes that wait for this user's answer (mostly: peers who asked)."""
        ...

    def answer(self, offer: CodeShown, same: bool | None) -> Ending | None:
        """The user's answer; None while the peer's answer is still to come (news follows)."""
        ...


@dataclass
class _Session:
    name: str
    handshake_hash: bytes


@dataclass
class _Live:
    attempt: Attempt
    name: str
    waiters: list[OnCode] = field(default_factory=list)
    shown: bool = False  # the code was handed to the menu or announced


class VerificationRole:
    """Every code comparison of this peer; call only from the network thread."""

    def __init__(
        self,
        own_fingerprint: str,
        *,
        send: Callable[[str, Message], None],
        mark_verified: Callable[[str], None],
        emit: Callable[[UiEvent], None],
        limiter: FailureLimiter | None = None,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self._own_fp = own_fingerprint
        self._send = send
        self._mark_verified = mark_verified
        self._emit = emit
        self._limiter = limiter or FailureLimiter()
        self._random = random_bytes
        self._sessions: dict[str, _Session] = {}
        self._attempts: dict[str, _Live] = {}

    # -- sessions --------------------------------------------------------------

    def session_opened(self, fp: str, name: str, handshake_hash: bytes, now: float) -> None:
        """`fp`'s current session is now this one; an attempt bound to another one ends."""
        self._sessions[fp] = _Session(name, handshake_hash)
        live = self._attempts.get(fp)
        if live is not None and live.attempt.binding.handshake_hash != handshake_hash:
            live.attempt.end_quietly(Ending.SESSION_LOST)
            self._finish(fp, live, now)

    def session_closed(self, fp: str, now: float) -> None:
        self._sessions.pop(fp, None)
        live = self._attempts.get(fp)
        if live is not None:
            live.attempt.end_quietly(Ending.SESSION_LOST)
            self._finish(fp, live, now)

    # -- the user's side -------------------------------------------------------

    def start(self, fp: str, now: float, on_code: OnCode) -> None:
        """Compare a code with `fp`; `on_code` gets the code, or why there is none."""
        session = self._sessions.get(fp)
        if session is None:
            on_code(CodeRefused(Ending.NOT_CONNECTED))
            return
        live = self._attempts.get(fp)
        if live is not None:
            attempt = live.attempt
            if attempt.awaiting_answer:
                on_code(self._offer(fp, live))
            elif attempt.stage is Stage.COMPARING:
                on_code(CodeRefused(Ending.IN_PROGRESS))
            else:
                live.waiters.append(on_code)  # the code is on its way
            return
        wait = self._limiter.wait(fp, now)
        if wait > 0:
            on_code(CodeRefused(Ending.RATE_LIMITED, wait))
            return
        attempt, out = Attempt.request(
            self._binding(fp, session),
            now,
            attempt_id=self._random(ATTEMPT_ID_BYTES),
            nonce=self._random(VERIFY_NONCE_BYTES),
        )
        self._attempts[fp] = _Live(attempt, session.name, [on_code])
        self._send_all(fp, out)

    def waiting(self) -> list[CodeShown]:
        return [
            self._offer(fp, live)
            for fp, live in self._attempts.items()
            if live.attempt.awaiting_answer
        ]

    def answer(self, fp: str, attempt_id: bytes, same: bool | None, now: float) -> Ending | None:
        """Returns how the attempt ended now, or None while the peer's answer is awaited.

        An ending returned here is not also emitted as news.
        """
        live = self._attempts.get(fp)
        if live is None or live.attempt.attempt_id != attempt_id:
            return Ending.ENDED_EARLIER
        if not live.attempt.awaiting_answer:
            return Ending.IN_PROGRESS
        self._send_all(fp, live.attempt.answer(same, now))
        if live.attempt.ended:
            return self._finish(fp, live, now, announce=False)
        return None

    # -- the network's side ----------------------------------------------------

    def receive(self, fp: str, message: VerifyMessage, now: float) -> None:
        """A comparison message from `fp`'s current session."""
        session = self._sessions.get(fp)
        if session is None:
            return
        if isinstance(message, VerifyRequest):
            self._on_request(fp, session, message, now)
            return
        live = self._attempts.get(fp)
        if live is None or live.attempt.attempt_id != message.attempt:
            # Late news of an attempt that ended here (it timed out, say): nothing to do.
            log.debug(
                "ignoring %s for no current attempt with [%s]", type(message).__name__, fp[:8]
            )
            return
        self._send_all(fp, live.attempt.receive(message, now))
        self._advanced(fp, live, now)

    def next_due(self) -> float | None:
        """The earliest deadline of a running attempt (the node's alarm asks)."""
        return min((live.attempt.deadline() for live in self._attempts.values()), default=None)

    def handle_timer(self, now: float) -> None:
        self.tick(now)

    def tick(self, now: float) -> None:
        """End attempts whose time is up."""
        for fp, live in list(self._attempts.items()):
            out = live.attempt.check_time(now)
            if live.attempt.ended:
                self._send_all(fp, out)
                self._finish(fp, live, now)

    # -- internals -------------------------------------------------------------

    def _on_request(self, fp: str, session: _Session, request: VerifyRequest, now: float) -> None:
        waiters: list[OnCode] = []
        live = self._attempts.get(fp)
        if live is not None:
            mine = live.attempt
            if mine.attempt_id == request.attempt:  # the same request twice
                self._send_all(fp, mine.receive(request, now))
                self._advanced(fp, live, now)
                return
            if mine.side is Side.REQUESTER and mine.stage is Stage.REQUESTED:
                # Both asked at once: the smaller fingerprint's request goes on.
                if self._own_fp < fp:
                    return
                waiters = live.waiters
                del self._attempts[fp]
            else:  # the peer started over
                mine.end_quietly(Ending.SUPERSEDED)
                self._finish(fp, live, now)
        wait = self._limiter.wait(fp, now)
        if wait > 0:
            log.info("refusing a code comparison with [%s]: %.0f s to wait", fp[:8], wait)
            self._send_all(fp, [VerifyAbort(request.attempt, AbortReason.RATE_LIMITED)])
            for waiter in waiters:
                waiter(CodeRefused(Ending.RATE_LIMITED, wait))
            return
        attempt, out = Attempt.respond(
            self._binding(fp, session), request, now, nonce=self._random(VERIFY_NONCE_BYTES)
        )
        self._attempts[fp] = _Live(attempt, session.name, waiters)
        self._send_all(fp, out)

    def _advanced(self, fp: str, live: _Live, now: float) -> None:
        attempt = live.attempt
        if attempt.ended:
            self._finish(fp, live, now)
            return
        if attempt.stage is not Stage.COMPARING or live.shown:
            return
        live.shown = True
        waiters, live.waiters = live.waiters, []
        if waiters:
            offer = self._offer(fp, live)
            for waiter in waiters:
                waiter(offer)
        else:
            self._emit(CodeRequested(live.name, fp))

    def _finish(self, fp: str, live: _Live, now: float, *, announce: bool = True) -> Ending:
        """Forget an ended attempt: count it, mark the peer if verified, tell whoever waits."""
        attempt = live.attempt
        ending = attempt.ending
        assert ending is not None
        if self._attempts.get(fp) is live:
            del self._attempts[fp]
        if ending is Ending.VERIFIED:
            self._limiter.succeeded(fp)
            self._mark_verified(fp)
            log.info("code comparison with %s [%s]: both saw the same code", live.name, fp[:8])
        elif attempt.counts_as_failure:
            self._limiter.failed(fp, now)
        if ending.warns_of_middle:
            log.warning(
                "code comparison with %s [%s] failed (%s): someone may be in the middle",
                live.name,
                fp[:8],
                ending.value,
            )
        elif ending is not Ending.VERIFIED:
            log.info("code comparison with %s [%s] ended: %s", live.name, fp[:8], ending.value)
        waiters, live.waiters = live.waiters, []
        for waiter in waiters:  # nobody has seen a code yet: the menu that asked says why
            waiter(CodeRefused(ending))
        # News only where the user has seen (or been told of) a code, or for a forgery.
        if announce and not waiters and (live.shown or ending.warns_of_middle):
            self._emit(VerificationEnded(live.name, fp, ending))
        return ending

    def _offer(self, fp: str, live: _Live) -> CodeShown:
        assert live.attempt.code is not None
        return CodeShown(fp, live.name, live.attempt.code, live.attempt.attempt_id)

    def _binding(self, fp: str, session: _Session) -> Binding:
        return Binding(session.handshake_hash, self._own_fp, fp)

    def _send_all(self, fp: str, messages: list[Message]) -> None:
        if fp not in self._sessions:
            return
        for message in messages:
            self._send(fp, message)


class LoopVerifier:
    """`Verifier` for the menu thread: each call runs on the role's event loop."""

    def __init__(
        self,
        role: VerificationRole,
        loop: asyncio.AbstractEventLoop,
        *,
        code_wait: float = limits.VERIFY_CODE_WAIT + _MENU_WAIT_MARGIN,
        call_wait: float = 5.0,
        after: Callable[[], None] = lambda: None,
    ) -> None:
        self._role = role
        self._loop = loop
        self._after = after  # told after each call: an attempt's deadline may have moved
        self._code_wait = code_wait
        self._call_wait = call_wait

    def start(self, fingerprint: str) -> CodeResult:
        done: concurrent.futures.Future[CodeResult] = concurrent.futures.Future()

        def on_code(result: CodeResult) -> None:
            if not done.done():
                done.set_result(result)

        self._on_loop(lambda: self._role.start(fingerprint, self._loop.time(), on_code), done)
        try:
            return done.result(self._code_wait)
        except TimeoutError:
            return CodeRefused(Ending.NO_RESPONSE)

    def waiting(self) -> list[CodeShown]:
        return self._call(self._role.waiting)

    def answer(self, offer: CodeShown, same: bool | None) -> Ending | None:
        return self._call(
            lambda: self._role.answer(offer.fingerprint, offer.attempt, same, self._loop.time())
        )

    def _call(self, fn: Callable[[], T]) -> T:
        done: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._on_loop(lambda: done.set_result(fn()), done)
        return done.result(self._call_wait)

    def _on_loop(self, fn: Callable[[], None], done: concurrent.futures.Future[T]) -> None:
        def run() -> None:
            try:
                fn()
            except Exception as exc:  # the menu thread raises it, rather than waiting in vain
                if not done.done():
                    done.set_exception(exc)
            self._after()

        self._loop.call_soon_threadsafe(run)
