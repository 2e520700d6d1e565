"""The network node: a shell that runs the event loop and wires the roles together.

Ownership, which is what keeps the threads free of data races:

- One background thread runs an asyncio loop. Every role below and all they
  hold (sessions, the active list, the outbox, the pins cache) belong to that
  thread and are touched only from it.
- The menu thread calls the public methods below; each one hands a coroutine
  to the loop and waits for its result, for a bounded time (NotAnswering), so
  it never touches loop state and never hangs on a stuck loop.
- The history store is the single writer of the database and carries its own
  lock, so the menu thread may read history directly.

The roles: the TCP server (server.py), the discovery service (discovery.py)
and the liveness checker (liveness_checker.py); the session owner
(peer_sessions.py); sending (sender.py) and reconnecting (reconnector.py);
trust (trust_book.py); reach (reach.py); file transfers (file_wiring.py);
one alarm (alarm.py) armed at the earliest time any of them needs attention.
Where each key is lives in one address book, confirmed by the session owner
only. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from crypto_utils import Identity
from discovery import DiscoveryService, broadcast_targets
from peerchat.completion import Completion
from peerchat.delivery import Delivery
from peerchat.errors import NotAnswering
from peerchat.events import (
    ActivePeer,
    ConnectResult,
    FileResult,
    IncomingOffer,
    KeyConflict,
    SendResult,
    UiEvent,
)
from peerchat.net.alarm import Alarm
from peerchat.net.beacons import BeaconIntake
from peerchat.net.config import NodeConfig
from peerchat.net.connector import ANY_CONNECT_FAILURE, Connector
from peerchat.net.directory import PeerDirectory
from peerchat.net.file_store import SourceFile
from peerchat.net.file_wiring import FileWiring
from peerchat.net.legacy_service import LegacyService
from peerchat.net.liveness_checker import LivenessChecker
from peerchat.net.news import News
from peerchat.net.peer_cache import PeerCacheWriter
from peerchat.net.peer_sessions import PeerSessions
from peerchat.net.reach import Reach
from peerchat.net.reconnector import Reconnector
from peerchat.net.seeds import SeedStore
from peerchat.net.sender import Sender
from peerchat.net.server import TcpServer
from peerchat.net.session import BYE_QUIT, Session
from peerchat.net.trust_book import TrustBook
from peerchat.net.verification import LoopVerifier, VerificationRole
from peerchat.policy.address_book import AddressBook
from peerchat.policy.presence import Presence
from peerchat.policy.quota import ReceiveQuota
from peerchat.policy.session_table import SessionTable
from peerchat.protocol.channel import Credentials, Role
from peerchat.protocol.messages import VERIFY_MESSAGE_TYPES, Message, PeerExchange
from peerchat.protocol.transfer import TRANSFER_MESSAGE_TYPES
from storage import HistoryStore

log = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = ["Node", "NodeConfig"]


class Node:
    """A running peer. Create, `start()`, use from any thread, `close()`."""

    def __init__(
        self,
        config: NodeConfig,
        identity: Identity,
        store: HistoryStore,
        on_event: Callable[[UiEvent], None],
        seeds: SeedStore | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.store = store
        self.credentials = Credentials.create(identity, config.name, config.port)
        self.loop = loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="peer-net", daemon=True)
        self._discovery: DiscoveryService | None = None
        self._news = news = News(on_event, loop.time)
        emit = news.emit

        self.alarm = alarm = Alarm(loop)
        sessions: SessionTable[Session] = SessionTable(identity.fingerprint, config.admission())
        self._sessions = sessions
        self._presence = presence = Presence(config.peer_timeout, self._is_verified)
        self._peer_cache = PeerCacheWriter(
            loop, config.data_dir / "peers.json", store.known_peers, alarm.poke
        )
        self._trust = TrustBook(store, emit, self._peer_cache.mark_dirty)
        self._delivery = Delivery(
            store,
            news.problem,
            max_queued_per_peer=config.max_queued_per_peer,
            max_queued_age=config.max_queued_age,
        )
        completion = Completion()
        # File transfers: the role, with what it needs from sessions and the alarm.
        self._files = files = FileWiring(
            loop, store, config.transfer_settings(), sessions=sessions, emit=emit, poke=alarm.poke
        )
        # Where each key is: one book, confirmed by the session owner, fed and dialled by reach.
        book = AddressBook()
        directory = PeerDirectory(presence, store, book)
        self._directory = directory
        self._connector = connector = Connector(
            loop,
            sessions,
            presence,
            self._new_session,
            key_at=directory.known_fingerprint_at,
            address_of=directory.address_of,
            name_of=directory.name_of,
            own_port=config.port,
            connect_timeout=config.connect_timeout,
        )
        self._reconnector = reconnector = Reconnector(
            loop,
            self._delivery,
            has_session=sessions.__contains__,
            address_of=directory.address_of,
            attempt=connector.try_open,
            poke=alarm.poke,
            has_work=files.has_work,
        )
        self._liveness = LivenessChecker(
            presence,
            sessions,
            config.upkeep(),
            emit,
            alarm.due_by,
            in_use=files.busy,
        )
        self._sender = Sender(
            loop,
            store,
            delivery=self._delivery,
            completion=completion,
            sessions=sessions,
            presence=presence,
            directory=directory,
            trust_book=self._trust,
            connector=connector,
            want_reconnect=reconnector.want,
            emit=emit,
            poke=alarm.poke,
            discovery=config.discovery,
            send_wait=config.send_wait,
        )
        self._owner = PeerSessions(
            loop,
            store,
            table=sessions,
            trust_book=self._trust,
            book=book,
            quota=ReceiveQuota(config.quota()),
            presence=presence,
            delivery=self._delivery,
            completion=completion,
            reconnector=reconnector,
            liveness=self._liveness,
            pump=self._sender.pump,
            emit=emit,
        )
        # Reach beyond broadcast: seeds, peer exchange and mDNS feed the address book.
        self._reach = reach = Reach(
            loop,
            identity=identity,
            config=config,
            sessions=sessions,
            trust_book=self._trust,
            book=book,
            delivery=self._delivery,
            connector=connector,
            seeds=seeds,
            emit=emit,
            poke=alarm.poke,
            has_work=files.has_work,
        )
        self._owner.route([PeerExchange], reach.exchange_received)
        self._owner.on_session_up(reach.session_up)
        self._owner.on_session_down(reach.session_down)
        self._owner.announce_with(reach.announcement)
        self._owner.route(TRANSFER_MESSAGE_TYPES, files.received)
        self._owner.on_session_up(files.session_up)
        self._owner.on_session_down(files.session_down)
        self._owner.on_writable(files.writable)
        self._beacons = BeaconIntake(
            loop,
            trust_book=self._trust,
            presence=presence,
            liveness=self._liveness,
            delivery=self._delivery,
            has_session=sessions.__contains__,
            reconnector=reconnector,
            emit=emit,
            announce=self._announce,
            on_claim=reach.beacon_heard,
        )
        self._server = TcpServer(loop, lambda: self._new_session(Role.RESPONDER))
        # Legacy peers: their own port and list, never mixed with keyed peers' sessions.
        self.legacy = (
            None if config.legacy is None else LegacyService(config.legacy, store=store, emit=emit)
        )
        # Comparing a code: the role on this loop, and the menu's way to it.
        self.verification = VerificationRole(
            identity.fingerprint,
            send=self._send_to_current,
            mark_verified=self._verify,
            emit=emit,
        )
        self.verifier = LoopVerifier(self.verification, loop, after=alarm.poke)
        self._owner.route(VERIFY_MESSAGE_TYPES, self._on_verify_message)
        self._owner.on_session_up(self._verification_session_up)
        self._owner.on_session_down(lambda fp: self.verification.session_closed(fp, loop.time()))
        alarm.attach(
            self._liveness,
            self._sender,
            reconnector,
            self._peer_cache,
            self.verification,
            reach,
            files,
        )

    # -- lifecycle (menu thread) ---------------------------------------------

    def start(self) -> None:
        """Bind the TCP port and the discovery port; nothing is processed until `run()`."""
        self._trust.load()
        self._directory.load(self.loop.time())
        try:
            self.loop.run_until_complete(self._bind())
        except BaseException:
            self._close_loop_now()
            raise
        self._delivery.load()
        self._files.transfers.load()

    def run(self) -> None:
        """Start processing in the background thread (after the banner is on screen)."""
        self._news.release()
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
        for fp in {*self._delivery.peers_with_pending(), *self._files.transfers.peers_with_work()}:
            self._reconnector.want(fp, at_once=True)
        self.alarm.poke()
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
        await self._server.start(cfg.bind, cfg.port)
        if self.legacy is not None:
            try:
                self.legacy.bind()
                await self.legacy.serve()
            except BaseException:
                self.legacy.close()
                self._server.close()
                raise
        if cfg.discovery:
            self._discovery = DiscoveryService(
                identity=self.identity,
                name=cfg.name,
                tcp_port=cfg.port,
                targets=broadcast_targets(cfg.broadcast),
                discovery_port=cfg.discovery_port,
                interval=cfg.beacon_interval,
                on_beacon=self._beacons,
                on_trouble=self._news.emit,
            )
            try:
                await self._discovery.start()
            except BaseException:
                if self.legacy is not None:
                    self.legacy.close()
                self._server.close()
                raise
        await self._reach.start(self._discovery.instance if self._discovery else None)

    async def _shutdown(self) -> None:
        self._owner.closing = True
        self.alarm.stop()
        if self._discovery is not None:
            self._discovery.close()
        self._server.close()
        if self.legacy is not None:
            self.legacy.close()
        await self._reach.close()
        for session in self._sessions.connections():
            session.close(BYE_QUIT)
        self._files.transfers.close()
        # Give the goodbyes a moment to reach the wire.
        await asyncio.sleep(0.05)
        self._reconnector.stop()
        await self._peer_cache.flush()

    def _new_session(self, role: Role) -> Session:
        cfg = self.config
        return Session(
            self._owner, role, self.credentials, cfg.handshake_timeout, cfg.first_message_timeout
        )

    # -- the facade (menu thread) ------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T], takes: float = 0.0) -> T:
        """Run `coro` on the loop and wait at most `takes` plus the slack for its result."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(takes + self.config.call_slack)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise NotAnswering("the network part of this peer is not answering") from None

    def _connect_takes(self) -> float:
        return self.config.connect_timeout + self.config.handshake_timeout

    def active_peers(self) -> list[ActivePeer]:
        return self._call(self._in_loop(lambda: self._reach.describe(self._presence.listing())))

    def send_to_address(self, host: str, port: int, text: str) -> SendResult:
        takes = 2 * self._connect_takes() + self.config.send_wait
        return self._call(self._sender.send_to_address(host, port, text), takes)

    def send_to_peer(self, fingerprint: str, text: str) -> SendResult:
        takes = self._connect_takes() + self.config.send_wait
        return self._call(self._sender.send_to_peer(fingerprint, text), takes)

    def submit(self, fingerprint: str, texts: Sequence[str]) -> list[str]:
        """Queue messages to a known peer without waiting; returns their ids."""
        return self._call(self._sender.submit(fingerprint, texts), 25.0)

    def wait_delivered(self, msg_ids: Sequence[str], timeout: float) -> bool:
        return self._call(self._sender.wait_delivered(msg_ids, timeout), timeout)

    def connect(self, host: str, port: int) -> ConnectResult:
        return self._call(self._connector.connect(host, port), self._connect_takes())

    def connect_all(self) -> list[ConnectResult]:
        return self._call(self._connector.connect_all(), self._connect_takes())

    def key_conflicts(self) -> list[KeyConflict]:
        return self._call(self._in_loop(self._trust.conflicts))

    def key_conflicts_not_listed(self) -> int:
        """Changed keys no longer kept (beyond the few kept per name)."""
        return self._call(self._in_loop(self._trust.conflicts_not_listed))

    def retrust(self, presented_fingerprint: str) -> KeyConflict | None:
        """Accept a changed key: pin it, then let held messages flow."""
        return self._call(self._retrust(presented_fingerprint), self._connect_takes())

    def verify(self, fingerprint: str) -> None:
        """Mark a peer verified: in the store and in the active list at once."""
        self._call(self._in_loop(lambda: self._verify(fingerprint)))

    def send_file(self, fingerprint: str, source: SourceFile) -> FileResult:
        """Offer a checked file to a peer, connecting first if it is listed; else it waits."""
        return self._call(self._send_file(fingerprint, source), 2 * self._connect_takes())

    def file_offers(self) -> list[IncomingOffer]:
        return self._call(self._files.offers())

    def answer_offer(self, key: str, accept: bool) -> FileResult:
        return self._call(self._files.answer(key, accept))

    def session_count(self) -> int:
        return self._call(self._in_loop(lambda: len(self._sessions)))

    # -- in the loop ---------------------------------------------------------------

    @staticmethod
    async def _in_loop(fn: Callable[[], T]) -> T:
        return fn()

    async def _retrust(self, presented: str) -> KeyConflict | None:
        conflict = self._trust.retrust(presented)
        if conflict is not None:
            with contextlib.suppress(*ANY_CONNECT_FAILURE):
                await self._connector.open_session(conflict.host, conflict.port)
        return conflict

    async def _send_file(self, fp: str, source: SourceFile) -> FileResult:
        # As option 1: a known peer that is not listed is most likely away, so the offer waits.
        reachable = fp in self._presence or not self.config.discovery
        return await self._files.send_file(
            fp,
            source,
            name_of=self._directory.name_of,
            addresses=self._directory.addresses_to_try(fp) if reachable else [],
            open_session=self._connector.open_session,
            want_reconnect=self._reconnector.want,
        )

    def _verify(self, fp: str) -> None:
        peer = self._presence.get(fp)
        self._trust.verify(fp, True, peer.name if peer is not None else None)
        if peer is not None:
            self._presence.set_verified(fp, self._trust.is_verified(fp, peer.name))

    def _send_to_current(self, fp: str, message: Message) -> None:
        session = self._sessions.get(fp)
        if session is not None:
            session.send([message])

    def _on_verify_message(self, session: Session, fp: str, message: Message) -> None:
        assert isinstance(message, VERIFY_MESSAGE_TYPES)
        self.verification.receive(fp, message, self.loop.time())
        self.alarm.poke()

    def _verification_session_up(self, session: Session, fp: str) -> None:
        handshake_hash = session.channel.handshake_hash
        assert handshake_hash is not None and session.peer is not None
        self.verification.session_opened(fp, session.peer.name, handshake_hash, self.loop.time())

    def _is_verified(self, fp: str, name: str) -> bool:
        return self._trust.is_verified(fp, name)

    def _announce(self) -> None:
        if self._discovery is not None:
            self._discovery.announce_soon()


def _log_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    log.error("event loop: %s", context.get("message"), exc_info=exc)
