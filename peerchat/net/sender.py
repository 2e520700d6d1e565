"""Messages out: option 1's send, the bench's submit, and the queue's expiry.

A message to a known peer is stored as pending and queued (delivery.py), put
on the wire when the peer has a session, and otherwise waits for a reconnect.
A message that cannot even be queued (an address never reached, a changed
key, a full queue) is kept in history as failed, with why.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from peerchat.completion import Completion, NotAcknowledged
from peerchat.delivery import Delivery, outgoing_message
from peerchat.errors import StorageError
from peerchat.events import KeyConflict, Outcome, Problem, QueuedExpired, SendResult, UiEvent
from peerchat.net.alarm import earliest
from peerchat.net.connector import CONNECT_FAILURES, Connector, KeyChangedError, Refused, describe
from peerchat.net.directory import PeerDirectory
from peerchat.net.reply import Reply
from peerchat.net.session import Session
from peerchat.net.trust_book import TrustBook
from peerchat.policy.outbox import QueueFull
from peerchat.policy.presence import Presence
from peerchat.policy.session_table import SessionTable
from storage import DeliveryState, HistoryStore, StoredMessage


class Answer(Protocol):
    """Where a send's result goes: an asyncio future, or the node's Reply to its caller."""

    def done(self) -> bool: ...

    def set_result(self, result: SendResult, /) -> None: ...

    def set_exception(self, exc: BaseException, /) -> None: ...


class Sender:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        store: HistoryStore,
        *,
        delivery: Delivery,
        completion: Completion,
        sessions: SessionTable[Session],
        presence: Presence,
        directory: PeerDirectory,
        trust_book: TrustBook,
        connector: Connector,
        want_reconnect: Callable[..., None],
        emit: Callable[[UiEvent], None],
        due_by: Callable[[float], None],
        discovery: bool,
        send_wait: float,
    ) -> None:
        self._loop = loop
        self._store = store
        self._delivery = delivery
        self._completion = completion
        self._sessions = sessions
        self._presence = presence
        self._directory = directory
        self._trust = trust_book
        self._connector = connector
        self._want_reconnect = want_reconnect
        self._emit = emit
        # A newly queued message may expire before anything else is due: the alarm is
        # told its time (a comparison), not asked to look at every part again.
        self._due_by = due_by
        self._discovery = discovery
        self._send_wait = send_wait

    def pump(self, fp: str) -> None:
        """Put the next queued messages to `fp` on the wire, within the window."""
        if not self._delivery.has_waiting(fp):  # most acknowledgements: nothing behind them
            return
        session = self._sessions.get(fp)
        if session is None or not session.established:
            return
        chats = self._delivery.take_chats(fp)
        if chats:
            session.send(chats)
            session.last_chat = self._loop.time()

    async def send_to_address(self, host: str, port: int, text: str) -> SendResult:
        """Option 1 with an address: to the key a handshake at that address proves.

        An address resolves to a key only through a handshake completed there
        (never through a beacon or a hello's claimed port). If the address
        belongs to a known key and another one answers, nothing is sent to it.
        The result names the address the user typed.
        """
        if self._connector.is_self(host, port):
            return SendResult(Outcome.FAILED, host, port, detail="that is this peer's own address")
        expected = self._directory.known_fingerprint_at(host, port)
        if expected is not None and expected in self._sessions:
            return _typed(await self.send_to_peer(expected, text), host, port)
        try:
            session = await self._connector.open_session(host, port)
        except KeyChangedError as exc:
            c = exc.conflict
            self._record_failed(host, port, text, "key changed")
            return SendResult(Outcome.KEY_CHANGED, host, port, c.name, _key_changed_detail(c))
        except Refused as exc:
            self._record_failed(host, port, text, f"refused: {exc}")
            return SendResult(Outcome.REFUSED, host, port, detail=str(exc))
        except CONNECT_FAILURES as exc:
            if expected is None:
                detail = f"{describe(exc)}; never reached before, so it cannot be queued"
                self._record_failed(host, port, text, detail)
                return SendResult(Outcome.FAILED, host, port, detail=detail)
            return _typed(self._queue_for(expected, text, describe(exc)), host, port)
        fp = session.fingerprint
        assert fp is not None
        if expected is not None and fp != expected:
            answered = session.peer.name if session.peer is not None else "?"
            wanted = self._directory.name_of(expected)
            detail = f"{answered} ({fp[:8]}) answered, not {wanted} ({expected[:8]})"
            self._record_failed(host, port, text, f"not sent: {detail}")
            return SendResult(
                Outcome.OTHER_KEY,
                host,
                port,
                answered,
                detail,
                fingerprint=fp,
                expected_name=wanted,
                expected_fingerprint=expected,
            )
        return _typed(await self.send_to_peer(fp, text), host, port)

    def start_to_address(self, host: str, port: int, text: str, reply: Reply[SendResult]) -> None:
        """`send_to_address`, answered through `reply`; without a task when the key
        confirmed at that address has a session (the same rule, taken at once)."""
        expected = self._directory.known_fingerprint_at(host, port)
        if (
            expected is not None
            and expected in self._sessions
            and not self._connector.is_self(host, port)
        ):
            self._send_now(expected, text, reply, typed=(host, port))
        else:
            reply.follow(self._loop.create_task(self.send_to_address(host, port, text)))

    def start_to_peer(self, fp: str, text: str, reply: Reply[SendResult]) -> None:
        """`send_to_peer`, answered through `reply`; without a task when a session is up."""
        if fp in self._sessions:
            self._send_now(fp, text, reply)
        else:
            reply.follow(self._loop.create_task(self.send_to_peer(fp, text)))

    async def send_to_peer(self, fp: str, text: str) -> SendResult:
        name, host, port = self._directory.who(fp)
        # With discovery on, a known peer that is not listed is most likely away:
        # queue at once and let the background retry find it, rather than make
        # the user wait for a connection to a host that may not answer at all.
        # The address that last worked is tried first, then the listed one.
        reachable = fp in self._presence or not self._discovery
        tried = self._directory.addresses_to_try(fp) if reachable else []
        for dial_host, dial_port in tried:
            if fp in self._sessions:
                break
            try:
                await self._connector.open_session(dial_host, dial_port)
            except KeyChangedError as exc:
                c = exc.conflict
                return SendResult(Outcome.KEY_CHANGED, host, port, name, _key_changed_detail(c))
            except CONNECT_FAILURES as exc:
                if (dial_host, dial_port) == tried[-1]:
                    return self._queue_for(fp, text, describe(exc))
        if fp not in self._sessions:
            return self._queue_for(fp, text, "offline" if not reachable else "not connected")
        answer: asyncio.Future[SendResult] = self._loop.create_future()
        self._send_now(fp, text, answer)
        return await answer

    def _send_now(
        self, fp: str, text: str, answer: Answer, typed: tuple[str, int] | None = None
    ) -> None:
        """Store, queue and put on the wire a message to a peer with a session; answer
        DELIVERED on its acknowledgement, or PENDING if none comes within the wait.

        `typed` is the address the user typed, which the result names instead of
        the peer's own.
        """
        name, host, port = self._directory.who(fp)
        queued = self._queue_one(fp, text, (name, host, port))
        if typed is not None:
            host, port = typed
        if isinstance(queued, SendResult):
            answer.set_result(queued if typed is None else _typed(queued, host, port))
            return
        # On the wire first: the acknowledgement is read in a later callback, after the
        # waiter below is in place.
        self.pump(fp)

        def acknowledged(refused: Exception | None) -> None:
            if answer.done():
                return
            if refused is None:
                answer.set_result(SendResult(Outcome.DELIVERED, host, port, name, fingerprint=fp))
            elif isinstance(refused, NotAcknowledged):
                detail = "no acknowledgement yet; it stays queued"
                answer.set_result(SendResult(Outcome.PENDING, host, port, name, detail))
            elif isinstance(refused, Refused):
                detail = f"{refused}; it stays queued"
                answer.set_result(SendResult(Outcome.REFUSED, host, port, name, detail))
            else:
                answer.set_exception(refused)

        # The wait's deadline is served by the node's one alarm, not a timer per send.
        until = self._loop.time() + self._send_wait
        self._completion.expect(queued, acknowledged, until)
        self._due_by(until)

    async def submit(self, fp: str, texts: Sequence[str]) -> list[str]:
        """Queue messages to a known peer without waiting; returns their ids."""
        record = self._store.get_peer(fp)
        if record is None:
            raise ValueError("unknown peer")
        host, port = record.host or "?", record.port or 0
        rows = [
            _outgoing(fp, record.name, host, port, t, state=DeliveryState.PENDING) for t in texts
        ]
        self._delivery.enqueue(rows)
        self._expires_by_then()
        self._completion.submitted(r.msg_id for r in rows)
        if fp in self._sessions:
            self.pump(fp)
        else:
            self._want_reconnect(fp, at_once=True)
        return [r.msg_id for r in rows]

    async def wait_delivered(self, msg_ids: Sequence[str], timeout: float) -> bool:
        return await self._completion.wait_all(msg_ids, self._delivery.is_queued, timeout)

    # -- the waits' deadlines and the queue's expiry: a timed part of the node's alarm

    def next_due(self) -> float | None:
        wall = self._delivery.next_expiry()
        # Queued messages age by the wall clock (their time of sending survives restarts).
        expiry = None if wall is None else self._loop.time() + (wall - time.time())
        return earliest([self._completion.next_due(), expiry])

    def handle_timer(self, now: float) -> None:
        self._completion.handle_timer(now)
        expired = self._delivery.expire(time.time())
        if not expired:
            return
        self._completion.expired(row.msg_id for row in expired)
        by_peer: dict[str, int] = {}
        for row in expired:
            by_peer[row.peer_name] = by_peer.get(row.peer_name, 0) + 1
        for name, count in by_peer.items():
            self._emit(QueuedExpired(name, count))

    # -- internals --------------------------------------------------------------

    def _queue_for(self, fp: str, text: str, why: str) -> SendResult:
        queued = self._queue_one(fp, text)
        if isinstance(queued, SendResult):
            return queued
        self._want_reconnect(fp)
        name, host, port = self._directory.who(fp)
        return SendResult(Outcome.QUEUED, host, port, name, why)

    def _queue_one(
        self, fp: str, text: str, who: tuple[str, str, int] | None = None
    ) -> str | SendResult:
        """Store and queue one message to a known peer: its id, or why it was not sent.

        `who` is the peer's name, host and port when the caller has looked them up.
        """
        name, host, port = who or self._directory.who(fp)
        row = _outgoing(fp, name, host, port, text, state=DeliveryState.PENDING)
        try:
            self._delivery.enqueue([row])
        except StorageError as exc:
            return SendResult(Outcome.NOT_SENT, host, port, name, f"cannot store it: {exc}")
        except QueueFull:
            self._record_failed(host, port, text, "queue full", (fp, name))
            detail = self._delivery.queue_full_detail()
            return SendResult(Outcome.NOT_SENT, host, port, name, detail)
        self._expires_by_then()
        return row.msg_id

    def _expires_by_then(self) -> None:
        """A message queued now expires after the queue age, on the loop's clock."""
        self._due_by(self._loop.time() + self._delivery.max_queued_age)

    def _record_failed(
        self, host: str, port: int, text: str, detail: str, peer: tuple[str, str] | None = None
    ) -> None:
        """Keep a message that could not be sent in history, as failed, with why.

        `peer` is (fingerprint, name) when the recipient is a known identity.
        """
        fp, name = peer if peer is not None else (None, "?")
        row = _outgoing(fp, name, host, port, text, state=DeliveryState.FAILED)
        try:
            self._delivery.record_failed(row._replace(detail=detail))
        except StorageError as exc:
            self._emit_problem(f"Cannot record the failed message: {exc}")

    def _emit_problem(self, text: str) -> None:
        self._emit(Problem(text))


def _outgoing(
    fp: str | None, name: str, host: str, port: int, text: str, *, state: DeliveryState
) -> StoredMessage:
    return outgoing_message(fp, name, host, port, text, state=state, now=time.time())


def _typed(result: SendResult, host: str, port: int) -> SendResult:
    """The result as the user asked: for the address typed, not the one the peer claims."""
    return dataclasses.replace(result, host=host, port=port)


def _key_changed_detail(c: KeyConflict) -> str:
    return f"pinned {c.pinned_fingerprint}, now presents {c.presented_fingerprint}"
