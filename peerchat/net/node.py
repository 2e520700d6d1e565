"""The network node: sessions, discovery, liveness and delivery, in one event loop.

Ownership, which is what keeps the threads free of data races:

- One background thread runs an asyncio loop. Everything mutable here (the
  sessions, the active list, the outbox, the pins cache) belongs to that
  thread and is touched only from it.
- The menu thread calls the public methods below; each one hands a coroutine
  to the loop and waits for its result, so it never touches loop state.
- The history store is the single writer of the database and carries its own
  lock, so the menu thread may read history directly.

Delivery (delivery.py) keeps the queue and the store in step; the node puts
its messages on the wire, feeds it the acknowledgements and lost sessions, and
reconnects, with backoff, to peers that have messages waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import functools
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from crypto_utils import Identity
from discovery import DiscoveryService, broadcast_targets
from peerchat import limits
from peerchat.delivery import Delivery, ReconnectSchedule, outgoing_message, received_messages
from peerchat.errors import BindError, StorageError
from peerchat.events import (
    ActivePeer,
    ConnectResult,
    KeyChanged,
    KeyConflict,
    MessageArrived,
    Outcome,
    PeerConnected,
    PeerDiscovered,
    PeerOffline,
    Problem,
    QueuedDelivered,
    QueuedExpired,
    SendResult,
    UiEvent,
)
from peerchat.net.peer_cache import write_peer_cache
from peerchat.net.session import Session
from peerchat.policy import trust
from peerchat.policy.liveness import Liveness
from peerchat.policy.outbox import QueueFull
from peerchat.protocol.beacon import BeaconAccepted
from peerchat.protocol.channel import (
    Credentials,
    Event,
    HandshakeComplete,
    MessageReceived,
    PeerHello,
    Role,
)
from peerchat.protocol.messages import Ack, Bye, Chat, Message, Ping, Pong
from storage import DeliveryState, HistoryStore, StoredMessage

log = logging.getLogger(__name__)

T = TypeVar("T")

# Reasons carried by a goodbye. Only QUIT means "I am leaving".
BYE_QUIT = "quit"
BYE_DUPLICATE = "duplicate session"
BYE_UNTRUSTED = "key not trusted"
BYE_IDLE = "idle"
BYE_STORAGE = "cannot store messages"

PROBLEM_REPEAT = 30.0  # seconds before the same problem line is shown again
TICK = 0.25  # seconds between housekeeping passes (liveness, pings, retries)


@dataclass(frozen=True)
class NodeConfig:
    name: str
    port: int
    data_dir: Path
    bind: str = "0.0.0.0"
    broadcast: str = limits.LIMITED_BROADCAST
    discovery_port: int = limits.DISCOVERY_PORT
    beacon_interval: float = limits.BEACON_INTERVAL
    peer_timeout: float = limits.PEER_TIMEOUT
    discovery: bool = True
    handshake_timeout: float = limits.HANDSHAKE_TIMEOUT
    idle_timeout: float = limits.IDLE_SESSION_TIMEOUT
    ping_interval: float = limits.PING_INTERVAL
    connect_timeout: float = 3.0
    send_wait: float = limits.SEND_WAIT
    max_connections: int = limits.MAX_CONNECTIONS
    max_connections_per_address: int = limits.MAX_CONNECTIONS_PER_ADDRESS
    max_pending_handshakes: int = limits.MAX_PENDING_HANDSHAKES
    max_queued_per_peer: int = limits.MAX_QUEUED_PER_PEER
    max_queued_age: float = limits.MAX_QUEUED_AGE


class _Refused(Exception):
    """The remote peer closed the session on purpose (its goodbye reason is the message)."""


class _KeyChangedError(Exception):
    def __init__(self, conflict: KeyConflict) -> None:
        super().__init__(conflict.name)
        self.conflict = conflict


class Node:
    """A running peer. Create, `start()`, use from any thread, `close()`."""

    def __init__(
        self,
        config: NodeConfig,
        identity: Identity,
        store: HistoryStore,
        on_event: Callable[[UiEvent], None],
    ) -> None:
        self.config = config
        self.identity = identity
        self.store = store
        self._emit_to_ui = on_event
        self.credentials = Credentials.create(identity, config.name, config.port)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="peer-net", daemon=True)
        self._server: asyncio.Server | None = None
        self._discovery: DiscoveryService | None = None
        self._tick_handle: asyncio.Handle | None = None
        # Loop-owned state.
        self._connections: set[Session] = set()
        self._per_address: dict[str, int] = {}
        self._sessions: dict[str, Session] = {}  # fingerprint -> the one live session
        self._active: dict[str, ActivePeer] = {}
        self._liveness = Liveness(config.peer_timeout)
        self._delivery = Delivery(
            store,
            lambda text: self._emit(Problem(text)),
            max_queued_per_peer=config.max_queued_per_peer,
            max_queued_age=config.max_queued_age,
        )
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._pins: dict[str, str] = {}
        self._conflicts: dict[str, KeyConflict] = {}  # presented fingerprint -> conflict
        self._announced: dict[str, bytes] = {}  # fingerprint -> beacon instance announced
        self._departed: dict[str, bytes | None] = {}  # said goodbye/exit: beacon instance
        self._reconnects = ReconnectSchedule()
        self._reconnect_tasks: dict[str, asyncio.Task[None]] = {}
        self._submitted: set[str] = set()
        self._delivery_watches: list[tuple[set[str], asyncio.Future[None]]] = []
        self._problems_said: dict[str, float] = {}
        # News from start() (a beacon can arrive while it binds) waits for run(),
        # so that nothing is shown before the banner.
        self._held_events: list[UiEvent] | None = []
        self._peer_cache_dirty = False
        self._peer_cache_write: asyncio.Future[None] | None = None
        self._closing = False

    # -- lifecycle (menu thread) ---------------------------------------------

    def start(self) -> None:
        """Bind the TCP port and the discovery port; nothing is processed until `run()`."""
        self._pins = self.store.pins()
        try:
            self.loop.run_until_complete(self._bind())
        except BaseException:
            self._close_loop_now()
            raise
        self._delivery.load()

    def run(self) -> None:
        """Start processing in the background thread (after the banner is on screen)."""
        held, self._held_events = self._held_events or [], None
        for event in held:
            self._show(event)
        self._thread.start()

    def close(self, timeout: float = 1.5) -> None:
        """Say goodbye to every peer, stop the loop and wait for it (bounded)."""
        if not self._thread.is_alive():
            self._close_loop_now()
            return
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop)
        with contextlib.suppress(Exception):
            fut.result(timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.set_exception_handler(_log_loop_exception)
        self._tick_handle = self.loop.call_soon(self._tick)
        for fp in self._delivery.peers_with_pending():
            self._schedule_retry(fp, at_once=True)
        try:
            self.loop.run_forever()
        finally:
            self._close_loop_now()

    def _close_loop_now(self) -> None:
        with contextlib.suppress(Exception):
            if not self.loop.is_closed() and not self.loop.is_running():
                for task in asyncio.all_tasks(self.loop):
                    task.cancel()
                self.loop.run_until_complete(asyncio.sleep(0))
                self.loop.close()

    async def _bind(self) -> None:
        cfg = self.config
        try:
            self._server = await self.loop.create_server(
                lambda: Session(self, Role.RESPONDER),
                host=cfg.bind or None,
                port=cfg.port,
                reuse_address=True,
                backlog=1024,
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise BindError(f"Port {cfg.port} is already in use.") from None
            raise BindError(
                f"Cannot listen on {cfg.bind}:{cfg.port}: {exc.strerror or exc}"
            ) from None
        if cfg.discovery:
            self._discovery = DiscoveryService(
                identity=self.identity,
                name=cfg.name,
                tcp_port=cfg.port,
                targets=broadcast_targets(cfg.broadcast),
                discovery_port=cfg.discovery_port,
                interval=cfg.beacon_interval,
                on_beacon=self._on_beacon,
            )
            try:
                await self._discovery.start()
            except BaseException:
                self._server.close()
                raise

    async def _shutdown(self) -> None:
        self._closing = True
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        if self._discovery is not None:
            self._discovery.close()
        if self._server is not None:
            self._server.close()
        for session in list(self._connections):
            session.close(BYE_QUIT)
        # Give the goodbyes a moment to reach the wire.
        await asyncio.sleep(0.05)
        for task in self._reconnect_tasks.values():
            task.cancel()
        if self._peer_cache_write is not None:
            with contextlib.suppress(Exception):
                await self._peer_cache_write
        await self.loop.run_in_executor(None, self._write_peer_cache_now)

    # -- public API (menu thread) -----------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def active_peers(self) -> list[ActivePeer]:
        return self._call(self._active_peers(), 5.0)

    def send_to_address(self, host: str, port: int, text: str) -> SendResult:
        return self._call(self._send_to_address(host, port, text))

    def send_to_peer(self, fingerprint: str, text: str) -> SendResult:
        return self._call(self._send_to_peer(fingerprint, text))

    def submit(self, fingerprint: str, texts: Sequence[str]) -> list[str]:
        """Queue messages to a known peer without waiting; returns their ids."""
        return self._call(self._submit(fingerprint, texts), 30.0)

    def wait_delivered(self, msg_ids: Sequence[str], timeout: float) -> bool:
        return self._call(self._wait_delivered(msg_ids, timeout))

    def connect(self, host: str, port: int) -> ConnectResult:
        return self._call(self._connect(host, port))

    def connect_all(self) -> list[ConnectResult]:
        return self._call(self._connect_all())

    def key_conflicts(self) -> list[KeyConflict]:
        return self._call(self._list_conflicts(), 5.0)

    def retrust(self, presented_fingerprint: str) -> KeyConflict | None:
        """Accept a changed key: pin it, then let held messages flow."""
        return self._call(self._retrust(presented_fingerprint), 10.0)

    def session_count(self) -> int:
        return self._call(self._session_count(), 5.0)

    # -- admission and session bookkeeping (loop) ---------------------------

    def admit(self, session: Session) -> bool:
        """Whether a new connection fits in the limits; counted if it does."""
        cfg = self.config
        if self._closing:
            return False
        ip = session.remote_ip
        pending = sum(1 for s in self._connections if not s.established)
        if session.role is Role.RESPONDER:
            if len(self._connections) >= cfg.max_connections:
                log.warning("refusing %s: %d connections open", ip, len(self._connections))
                return False
            if self._per_address.get(ip, 0) >= cfg.max_connections_per_address:
                log.warning("refusing %s: too many connections from that address", ip)
                return False
            if pending >= cfg.max_pending_handshakes:
                log.warning("refusing %s: %d handshakes pending", ip, pending)
                return False
        self._connections.add(session)
        self._per_address[ip] = self._per_address.get(ip, 0) + 1
        return True

    def session_closed(self, session: Session) -> None:
        self._connections.discard(session)
        ip = session.remote_ip
        left = self._per_address.get(ip, 1) - 1
        if left > 0:
            self._per_address[ip] = left
        else:
            self._per_address.pop(ip, None)
        fp = session.fingerprint
        if fp is not None and self._sessions.get(fp) is session:
            log.info("session with [%s] at %s closed", fp[:8], session.listen_address)
            del self._sessions[fp]
            self._delivery.session_lost(fp)
            if self._delivery.pending_count(fp) and not self._closing:
                self._schedule_retry(fp)

    def handle_events(self, session: Session, events: list[Event]) -> None:
        chats: list[Chat] = []
        for event in events:
            if isinstance(event, HandshakeComplete):
                self._on_handshake(session, event.peer)
            elif isinstance(event, MessageReceived):
                message = event.message
                if isinstance(message, Chat):
                    chats.append(message)
                    continue
                if chats:
                    self._on_chats(session, chats)
                    chats = []
                self._on_control(session, message)
            if session.closed:
                return
        if chats:
            self._on_chats(session, chats)
        fp = session.fingerprint
        if fp is not None and self._sessions.get(fp) is session:
            self._heard(fp)

    # -- handshake and trust (loop) ----------------------------------------

    def _on_handshake(self, session: Session, hello: PeerHello) -> None:
        session.mark_established(hello)
        fp = hello.fingerprint
        addr = session.listen_address
        assert addr is not None
        host, port = addr
        decision = trust.decide(self._pins, hello.name, fp)
        if decision.verdict is trust.Verdict.CHANGED:
            assert decision.pinned_fingerprint is not None
            conflict = KeyConflict(
                hello.name, host, port, decision.pinned_fingerprint, fp, hello.identity_der
            )
            self._report_conflict(conflict)
            session.close(BYE_UNTRUSTED)
            self._fail_ready(session, _KeyChangedError(conflict))
            return
        try:
            if decision.verdict is trust.Verdict.NEW:
                self.store.pin(hello.name, fp)
                self._pins[trust.pin_key(hello.name)] = fp
            self.store.upsert_peer(fp, hello.name, hello.identity_der, host, port, time.time())
        except StorageError as exc:
            self._emit(Problem(f"Cannot record peer {hello.name}: {exc}"))
        self._peer_cache_dirty = True
        existing = self._sessions.get(fp)
        if existing is not None and existing is not session and existing.established:
            keep = self._preferred(existing, session, fp)
            loser = session if keep is existing else existing
            if loser is existing:
                self._sessions[fp] = session
                self._delivery.session_lost(fp)
            loser.close(BYE_DUPLICATE)
            if loser is session:
                if not session.ready.done():
                    session.ready.set_result(existing)
                return
        else:
            self._sessions[fp] = session
        self._departed.pop(fp, None)
        self._reconnects.drop(fp)
        log.info(
            "session with %s [%s] at %s:%d established (%s)",
            hello.name,
            fp[:8],
            host,
            port,
            "we connected" if session.role is Role.INITIATOR else "it connected",
        )
        newly = self._mark_active(fp, hello.name, host, port)
        if newly and session.role is Role.RESPONDER:
            self._emit(PeerConnected(hello.name, host, port))
        if not session.ready.done():
            session.ready.set_result(session)
        self._pump(fp)

    def _preferred(self, a: Session, b: Session, fp: str) -> Session:
        """Of two sessions with one peer, the one both ends agree to keep.

        Each end keeps the session initiated by the peer with the smaller
        fingerprint, so both close the same one even when they race.
        """

        def initiator(s: Session) -> str:
            return self.identity.fingerprint if s.role is Role.INITIATOR else fp

        ia, ib = initiator(a), initiator(b)
        if ia == ib:
            return a  # same initiator twice: keep the older
        return a if ia < ib else b

    def _report_conflict(self, conflict: KeyConflict) -> None:
        log.warning(
            "refused %s at %s:%d: key %s is not the pinned %s",
            conflict.name,
            conflict.host,
            conflict.port,
            conflict.presented_fingerprint[:8],
            conflict.pinned_fingerprint[:8],
        )
        known = self._conflicts.get(conflict.presented_fingerprint)
        self._conflicts[conflict.presented_fingerprint] = conflict
        if known is None:
            self._emit(
                KeyChanged(
                    conflict.name,
                    conflict.host,
                    conflict.port,
                    conflict.pinned_fingerprint,
                    conflict.presented_fingerprint,
                )
            )

    @staticmethod
    def _fail_ready(session: Session, exc: Exception) -> None:
        if not session.ready.done():
            session.ready.set_exception(exc)
            session.ready.exception()

    # -- messages in (loop) --------------------------------------------------

    def _on_chats(self, session: Session, chats: list[Chat]) -> None:
        hello = session.peer
        addr = session.listen_address
        if hello is None or addr is None or self._sessions.get(hello.fingerprint) is not session:
            return  # a losing duplicate: the peer resends on the kept session
        rows = received_messages(hello.fingerprint, hello.name, *addr, chats, now=time.time())
        try:
            fresh = self.store.add_incoming(rows)
        except StorageError as exc:
            # Not stored means not acknowledged: the sender keeps it and retries.
            self._emit(Problem(f"Cannot store messages from {hello.name}: {exc}"))
            session.close(BYE_STORAGE)
            return
        session.last_chat = self.loop.time()
        ids = [chat.msg_id for chat in chats]
        step = limits.MAX_IN_FLIGHT
        session.send([Ack(tuple(ids[i : i + step])) for i in range(0, len(ids), step)])
        for chat, is_new in zip(chats, fresh, strict=True):
            if not is_new:
                continue
            self._emit(MessageArrived(hello.name, addr[0], addr[1], hello.fingerprint, chat.text))
            if chat.text.strip().lower() == "exit":
                self._depart(hello.fingerprint, "said exit")

    def _on_control(self, session: Session, message: Message) -> None:
        fp = session.fingerprint
        if fp is None:
            return
        if isinstance(message, Ack):
            self._on_ack(fp, message.msg_ids)
        elif isinstance(message, Ping):
            session.send([Pong(message.nonce)])
        elif isinstance(message, Pong):
            pass
        elif isinstance(message, Bye):
            self._on_bye(session, fp, message.reason)

    def _on_bye(self, session: Session, fp: str, reason: str) -> None:
        kept = self._sessions.get(fp)
        if reason == BYE_DUPLICATE and kept is not None and kept is not session:
            # Both ends closed this one of two simultaneous sessions: use the other.
            if not session.ready.done():
                session.ready.set_result(kept)
        else:
            self._fail_ready(session, _Refused(reason))
        refused = reason == BYE_UNTRUSTED
        if refused:
            for msg_id in self._delivery.queued_ids(fp):
                waiter = self._waiters.get(msg_id)
                if waiter is not None and not waiter.done():
                    waiter.set_exception(_Refused(reason))
                    waiter.exception()
        session.closed = True
        if session.transport is not None:
            session.transport.close()
        if reason == BYE_QUIT:
            self._depart(fp, "left")

    def _on_ack(self, fp: str, msg_ids: tuple[str, ...]) -> None:
        ids = [row.msg_id for row in self._delivery.acknowledge(fp, msg_ids)]
        if not ids:
            return
        unattended = 0  # queued earlier, with nobody waiting: tell the user here
        for msg_id in ids:
            waiter = self._waiters.pop(msg_id, None)
            if waiter is not None:
                if not waiter.done():
                    waiter.set_result(None)
            elif msg_id in self._submitted:
                self._submitted.discard(msg_id)  # its caller follows it with wait_delivered()
            else:
                unattended += 1
        if self._delivery_watches:
            acked = set(ids)
            for remaining, done_future in self._delivery_watches:
                remaining.difference_update(acked)
                if not remaining and not done_future.done():
                    done_future.set_result(None)
        peer = self._active.get(fp)
        if unattended and peer is not None:
            self._emit(QueuedDelivered(peer.name, peer.host, peer.port, unattended))
        self._pump(fp)

    # -- messages out (loop) -------------------------------------------------

    def _pump(self, fp: str) -> None:
        session = self._sessions.get(fp)
        if session is None or not session.established:
            return
        chats = self._delivery.take_chats(fp)
        if chats:
            session.send(chats)
            session.last_chat = self.loop.time()

    def _new_outgoing(
        self, fp: str | None, name: str, host: str, port: int, *, text: str, state: DeliveryState
    ) -> StoredMessage:
        return outgoing_message(fp, name, host, port, text, state=state, now=time.time())

    def _record_failed(
        self, host: str, port: int, text: str, detail: str, peer: tuple[str, str] | None = None
    ) -> None:
        """Keep a message that could not be sent in history, as failed, with why.

        `peer` is (fingerprint, name) when the recipient is a known identity.
        """
        fp, name = peer if peer is not None else (None, "?")
        row = self._new_outgoing(fp, name, host, port, text=text, state=DeliveryState.FAILED)
        try:
            self._delivery.record_failed(dataclasses.replace(row, detail=detail))
        except StorageError as exc:
            self._emit(Problem(f"Cannot record the failed message: {exc}"))

    async def _send_to_address(self, host: str, port: int, text: str) -> SendResult:
        if self._is_self(host, port):
            return SendResult(Outcome.FAILED, host, port, detail="that is this peer's own address")
        fp = self._fingerprint_at(host, port)
        if fp is not None and fp in self._sessions:
            return await self._send_to_peer(fp, text)
        try:
            session = await self._open_session(host, port)
        except _KeyChangedError as exc:
            c = exc.conflict
            self._record_failed(host, port, text, "key changed")
            return SendResult(Outcome.KEY_CHANGED, host, port, c.name, _key_changed_detail(c))
        except _Refused as exc:
            self._record_failed(host, port, text, f"refused: {exc}")
            return SendResult(Outcome.REFUSED, host, port, detail=str(exc))
        except (OSError, ConnectionError, TimeoutError) as exc:
            known = fp or self._known_fingerprint_at(host, port)
            if known is None:
                detail = f"{_describe(exc)}; never reached before, so it cannot be queued"
                self._record_failed(host, port, text, detail)
                return SendResult(Outcome.FAILED, host, port, detail=detail)
            return await self._queue_for(known, text, _describe(exc))
        assert session.fingerprint is not None
        return await self._send_to_peer(session.fingerprint, text)

    async def _send_to_peer(self, fp: str, text: str) -> SendResult:
        conflict = next((c for c in self._conflicts.values() if c.pinned_fingerprint == fp), None)
        name, host, port = self._who(fp)
        if conflict is not None and fp not in self._sessions:
            return SendResult(Outcome.KEY_CHANGED, host, port, name, _key_changed_detail(conflict))
        # With discovery on, a known peer that is not listed is most likely away:
        # queue at once and let the background retry find it, rather than make
        # the user wait for a connection to a host that may not answer at all.
        reachable = fp in self._active or not self.config.discovery
        if fp not in self._sessions and reachable and host != "?" and port:
            try:
                await self._open_session(host, port)
            except _KeyChangedError as exc:
                c = exc.conflict
                return SendResult(Outcome.KEY_CHANGED, host, port, name, _key_changed_detail(c))
            except (_Refused, OSError, ConnectionError, TimeoutError) as exc:
                return await self._queue_for(fp, text, _describe(exc))
        if fp not in self._sessions:
            return await self._queue_for(fp, text, "offline" if not reachable else "not connected")
        queued = self._queue_one(fp, text)
        if isinstance(queued, SendResult):
            return queued
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._waiters[queued] = waiter
        self._pump(fp)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.config.send_wait)
        except TimeoutError:
            self._waiters.pop(queued, None)
            return SendResult(
                Outcome.PENDING, host, port, name, "no acknowledgement yet; it stays queued"
            )
        except _Refused as exc:
            self._waiters.pop(queued, None)
            return SendResult(Outcome.REFUSED, host, port, name, f"{exc}; it stays queued")
        return SendResult(Outcome.DELIVERED, host, port, name)

    async def _queue_for(self, fp: str, text: str, why: str) -> SendResult:
        queued = self._queue_one(fp, text)
        if isinstance(queued, SendResult):
            return queued
        self._schedule_retry(fp)
        name, host, port = self._who(fp)
        return SendResult(Outcome.QUEUED, host, port, name, why)

    def _queue_one(self, fp: str, text: str) -> str | SendResult:
        """Store and queue one message to a known peer: its id, or why it was not sent."""
        name, host, port = self._who(fp)
        row = self._new_outgoing(fp, name, host, port, text=text, state=DeliveryState.PENDING)
        try:
            self._delivery.enqueue([row])
        except StorageError as exc:
            return SendResult(Outcome.NOT_SENT, host, port, name, f"cannot store it: {exc}")
        except QueueFull:
            self._record_failed(host, port, text, "queue full", (fp, name))
            detail = self._delivery.queue_full_detail()
            return SendResult(Outcome.NOT_SENT, host, port, name, detail)
        return row.msg_id

    async def _submit(self, fp: str, texts: Sequence[str]) -> list[str]:
        record = self.store.get_peer(fp)
        if record is None:
            raise ValueError("unknown peer")
        rows = [
            self._new_outgoing(
                fp,
                record.name,
                record.host or "?",
                record.port or 0,
                text=t,
                state=DeliveryState.PENDING,
            )
            for t in texts
        ]
        self._delivery.enqueue(rows)
        self._submitted.update(r.msg_id for r in rows)
        if fp in self._sessions:
            self._pump(fp)
        else:
            self._schedule_retry(fp, at_once=True)
        return [r.msg_id for r in rows]

    async def _wait_delivered(self, msg_ids: Sequence[str], timeout: float) -> bool:
        remaining = {m for m in msg_ids if self._delivery.is_queued(m)}
        if not remaining:
            return True
        watch: tuple[set[str], asyncio.Future[None]] = (remaining, self.loop.create_future())
        self._delivery_watches.append(watch)
        try:
            await asyncio.wait_for(watch[1], timeout)
        except TimeoutError:
            return False
        finally:
            self._delivery_watches.remove(watch)
        return True

    # -- connecting (loop) -------------------------------------------------------

    async def _open_session(self, host: str, port: int) -> Session:
        """An established session to host:port: the existing one, or a new one."""
        fp = self._fingerprint_at(host, port)
        if fp is not None and fp in self._sessions:
            return self._sessions[fp]
        async with asyncio.timeout(self.config.connect_timeout):
            _, session = await self.loop.create_connection(
                lambda: Session(self, Role.INITIATOR), host, port
            )
        # The session fails itself at its handshake deadline, which ends this wait.
        return await session.ready

    async def _connect(self, host: str, port: int) -> ConnectResult:
        if self._is_self(host, port):
            return ConnectResult(False, host, port, detail="that is this peer's own address")
        try:
            session = await self._open_session(host, port)
        except _KeyChangedError as exc:
            return ConnectResult(False, host, port, exc.conflict.name, "key changed")
        except (_Refused, OSError, ConnectionError, TimeoutError) as exc:
            return ConnectResult(False, host, port, detail=_describe(exc))
        name = session.peer.name if session.peer else None
        return ConnectResult(True, host, port, name)

    async def _connect_all(self) -> list[ConnectResult]:
        peers = [(p.host, p.port) for p in self._active.values()]
        return list(await asyncio.gather(*(self._connect(h, p) for h, p in peers)))

    def _schedule_retry(self, fp: str, at_once: bool = False) -> None:
        """Keep trying to reach a peer that has queued messages, with backoff."""
        self._reconnects.want(fp, self.loop.time(), at_once=at_once)

    def _run_retries(self, now: float) -> None:
        for fp in self._reconnects.peers():
            if fp in self._sessions or not self._delivery.pending_count(fp):
                self._reconnects.drop(fp)
                self._reconnect_tasks.pop(fp, None)  # an attempt under way may finish
        for fp in self._reconnects.due(now):
            task = self._reconnect_tasks.get(fp)
            if task is not None and not task.done():
                continue
            address = self._address_of(fp)
            if address is None:
                self._reconnects.postpone(fp, now)
                continue
            self._reconnect_tasks[fp] = self.loop.create_task(self._retry_connect(*address))
            self._reconnects.attempted(fp, now)

    async def _retry_connect(self, host: str, port: int) -> None:
        with contextlib.suppress(
            _Refused, _KeyChangedError, OSError, ConnectionError, TimeoutError
        ):
            await self._open_session(host, port)

    # -- discovery and liveness (loop) -----------------------------------------

    def _on_beacon(self, accepted: BeaconAccepted) -> None:
        beacon = accepted.beacon
        fp = beacon.fingerprint
        host, port = accepted.source_ip, beacon.tcp_port
        decision = trust.decide(self._pins, beacon.name, fp)
        if decision.verdict is trust.Verdict.CHANGED:
            assert decision.pinned_fingerprint is not None
            self._report_conflict(
                KeyConflict(
                    beacon.name, host, port, decision.pinned_fingerprint, fp, beacon.identity_der
                )
            )
            return
        if fp in self._departed:
            if self._departed[fp] == beacon.instance:
                return  # it said goodbye; the same run does not come back by beacon
            del self._departed[fp]
        self._mark_active(fp, beacon.name, host, port)
        self._heard(fp)
        if self._announced.get(fp) != beacon.instance:
            self._announced[fp] = beacon.instance
            self._emit(PeerDiscovered(beacon.name, host, port))
            if self._discovery is not None:
                self._discovery.announce_soon()
        if self._delivery.pending_count(fp) and fp not in self._sessions:
            self._schedule_retry(fp, at_once=True)

    def _mark_active(self, fp: str, name: str, host: str, port: int) -> bool:
        record = self._active.get(fp)
        newly = record is None
        verified = False
        if record is None:
            stored = self.store.get_peer(fp)
            verified = bool(stored and stored.verified)
            self._active[fp] = ActivePeer(fp, name, host, port, verified, time.time())
        else:
            record.name, record.host, record.port = name, host, port
            record.last_seen = time.time()
        self._liveness.heard(fp, self.loop.time())
        return newly

    def _heard(self, fp: str) -> None:
        if fp in self._active:
            self._active[fp].last_seen = time.time()
            self._liveness.heard(fp, self.loop.time())

    def _depart(self, fp: str, reason: str) -> None:
        self._departed[fp] = self._announced.get(fp)
        self._liveness.forget(fp)
        peer = self._active.pop(fp, None)
        if peer is not None:
            self._emit(PeerOffline(peer.name, peer.host, peer.port, reason))

    def _tick(self) -> None:
        now = self.loop.time()
        try:
            self._housekeeping(now)
        except Exception:
            log.exception("housekeeping failed")
        self._tick_handle = self.loop.call_later(TICK, self._tick)

    def _housekeeping(self, now: float) -> None:
        for fp in self._liveness.expire(now):
            peer = self._active.pop(fp, None)
            self._announced.pop(fp, None)  # silent too long: its return is news again
            session = self._sessions.get(fp)
            if session is not None:
                session.fail("peer timed out")
            if peer is not None:
                self._emit(PeerOffline(peer.name, peer.host, peer.port, "timed out"))
        cfg = self.config
        # A quiet session is pinged well within the peer timeout, so it stays listed.
        ping_every = min(cfg.ping_interval, cfg.peer_timeout / 3)
        for session in list(self._sessions.values()):
            silent = now - session.last_received
            if silent > cfg.peer_timeout:
                session.fail("no traffic from the peer")
            elif now - session.last_chat > cfg.idle_timeout:
                session.close(BYE_IDLE)
            elif silent > ping_every and now - session.last_ping > ping_every:
                session.last_ping = now
                session.send([Ping(int(now * 1000) & 0xFFFFFFFFFFFFFFFF)])
        expired = self._delivery.expire(time.time())
        if expired:
            self._expired(expired)
        self._run_retries(now)
        if self._peer_cache_dirty:
            self._write_peer_cache()

    def _expired(self, rows: list[StoredMessage]) -> None:
        by_peer: dict[str, int] = {}
        for row in rows:
            self._submitted.discard(row.msg_id)
            by_peer[row.peer_name] = by_peer.get(row.peer_name, 0) + 1
        for name, count in by_peer.items():
            self._emit(QueuedExpired(name, count))

    def _write_peer_cache(self) -> None:
        """Rewrite peers.json from a worker thread, one write at a time.

        The write fsyncs the file and its folder (milliseconds, tens under load),
        which would stall every session if done on the network thread.
        """
        if self._peer_cache_write is not None and not self._peer_cache_write.done():
            return  # still dirty: a later tick writes again
        self._peer_cache_dirty = False
        self._peer_cache_write = self.loop.run_in_executor(None, self._write_peer_cache_now)

    def _write_peer_cache_now(self) -> None:
        try:
            write_peer_cache(self.config.data_dir / "peers.json", self.store.known_peers())
        except (OSError, StorageError) as exc:
            log.warning("cannot write peers.json: %s", exc)

    # -- queries (loop) ----------------------------------------------------------

    async def _active_peers(self) -> list[ActivePeer]:
        peers = [
            ActivePeer(p.fingerprint, p.name, p.host, p.port, p.verified, p.last_seen)
            for p in self._active.values()
        ]
        return sorted(peers, key=lambda p: (p.name.casefold(), p.host, p.port))

    async def _list_conflicts(self) -> list[KeyConflict]:
        return list(self._conflicts.values())

    async def _retrust(self, presented: str) -> KeyConflict | None:
        conflict = self._conflicts.pop(presented, None)
        if conflict is None:
            return None
        self.store.pin(conflict.name, presented)
        self.store.upsert_peer(
            presented, conflict.name, conflict.public_der, conflict.host, conflict.port, time.time()
        )
        self._pins[trust.pin_key(conflict.name)] = presented
        self._peer_cache_dirty = True
        with contextlib.suppress(
            _Refused, _KeyChangedError, OSError, ConnectionError, TimeoutError
        ):
            await self._open_session(conflict.host, conflict.port)
        return conflict

    async def _session_count(self) -> int:
        return len(self._sessions)

    # -- helpers -----------------------------------------------------------------

    def _emit(self, event: UiEvent) -> None:
        if isinstance(event, Problem):
            # The same local trouble (a full disk) recurs with every retry: say it once a while.
            now = self.loop.time()
            if now - self._problems_said.get(event.text, -PROBLEM_REPEAT) < PROBLEM_REPEAT:
                return
            if len(self._problems_said) > 256:
                self._problems_said.clear()
            self._problems_said[event.text] = now
        if self._held_events is not None:
            self._held_events.append(event)
            return
        self._show(event)

    def _show(self, event: UiEvent) -> None:
        try:
            self._emit_to_ui(event)
        except Exception:
            log.exception("user interface callback failed")

    def _fingerprint_at(self, host: str, port: int) -> str | None:
        for fp, session in self._sessions.items():
            if session.listen_address == (host, port):
                return fp
        for fp, peer in self._active.items():
            if (peer.host, peer.port) == (host, port):
                return fp
        return None

    def _known_fingerprint_at(self, host: str, port: int) -> str | None:
        with contextlib.suppress(StorageError):
            record = self.store.peer_by_address(host, port)
            if record is not None:
                return record.fingerprint
        return None

    def _who(self, fp: str) -> tuple[str, str, int]:
        """Name, host and port of a peer: as listed now, else as last stored ("?", 0)."""
        peer = self._active.get(fp)
        if peer is not None:
            return peer.name, peer.host, peer.port
        record = None
        with contextlib.suppress(StorageError):
            record = self.store.get_peer(fp)
        if record is None:
            return "?", "?", 0
        return record.name, record.host or "?", record.port or 0

    def _address_of(self, fp: str) -> tuple[str, int] | None:
        _, host, port = self._who(fp)
        return (host, port) if host != "?" and port else None

    def _is_self(self, host: str, port: int) -> bool:
        if port != self.config.port:
            return False
        return host.startswith("127.") or host == "0.0.0.0" or host in _local_addresses()


def _key_changed_detail(c: KeyConflict) -> str:
    return f"pinned {c.pinned_fingerprint}, now presents {c.presented_fingerprint}"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, _Refused):
        return f"refused by the peer ({exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


@functools.cache
def _local_addresses() -> frozenset[str]:
    """This host's IPv4 addresses, read from the interfaces (no name lookup)."""
    import ifaddr  # imported here: only needed when an address might be our own

    found: set[str] = set()
    for adapter in ifaddr.get_adapters():
        found.update(ip.ip for ip in adapter.ips if isinstance(ip.ip, str))
    return frozenset(found)


def _log_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    log.error("event loop: %s", context.get("message"), exc_info=exc)
