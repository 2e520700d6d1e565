"""The network node: a shell that builds the core roles, lets each feature attach, offers a facade.

Ownership, which keeps the threads free of data races: one thread runs the
asyncio loop (loop_thread.py), and every role and all it holds belong to that
thread. The menu thread calls the facade below; each call runs on the loop and
is waited for with a bound (NotAnswering), so it never touches loop state and
never hangs. The history store has its own lock; the menu thread reads it.

The core: the TCP server, discovery, liveness, the session owner, trust,
sending, reconnecting, one alarm. The features (reach, file transfers, code
comparison) attach to the session owner's extension points (session_hooks.py);
the legacy port is one more port to open. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Sequence

from crypto_utils import Identity
from discovery import DiscoveryService, broadcast_targets
from peerchat.completion import Completion
from peerchat.delivery import Delivery
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
from peerchat.net.file_wiring import Dial, FileWiring
from peerchat.net.legacy_service import LegacyService
from peerchat.net.liveness_checker import LivenessChecker
from peerchat.net.loop_thread import LoopThread
from peerchat.net.news import News
from peerchat.net.peer_cache import PeerCacheWriter
from peerchat.net.peer_sessions import PeerSessions
from peerchat.net.ports import OpenPorts, Port
from peerchat.net.reach import Reach
from peerchat.net.reach_wiring import attach_reach
from peerchat.net.reconnector import Reconnector
from peerchat.net.seeds import SeedStore
from peerchat.net.sender import Sender
from peerchat.net.server import TcpServer
from peerchat.net.session import BYE_QUIT, Session
from peerchat.net.trust_book import TrustBook
from peerchat.net.verification_wiring import VerificationWiring
from peerchat.policy.address_book import AddressBook
from peerchat.policy.presence import Presence
from peerchat.policy.quota import ReceiveQuota
from peerchat.policy.session_table import SessionTable
from peerchat.protocol.channel import Credentials, Role
from storage import HistoryStore

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
        self._loop_thread = LoopThread("peer-net", slack=config.call_slack)
        self.loop = loop = self._loop_thread.loop
        self._ports = OpenPorts()
        self._discovery: DiscoveryService | None = None
        self._news = news = News(on_event, loop.time)
        emit = news.emit

        # -- the core: sessions, trust, presence, delivery, dialling, sending --------
        self.alarm = alarm = Alarm(loop)
        sessions: SessionTable[Session] = SessionTable(identity.fingerprint, config.admission())
        self._sessions = sessions
        self._peer_cache = PeerCacheWriter(
            loop, config.data_dir / "peers.json", store.known_peers, alarm.poke
        )
        self._trust = trust = TrustBook(store, emit, self._peer_cache.mark_dirty)
        self._presence = presence = Presence(config.peer_timeout, trust.is_verified)
        self._delivery = Delivery(
            store,
            news.problem,
            max_queued_per_peer=config.max_queued_per_peer,
            max_queued_age=config.max_queued_age,
        )
        completion = Completion()
        # File transfers first: reconnects, upkeep and reach ask whether a peer has one.
        self._files = files = FileWiring(
            loop, store, config.transfer_settings(), sessions=sessions, emit=emit, poke=alarm.poke
        )
        # Where each key is: one book, confirmed by the session owner, fed and dialled by reach.
        book = AddressBook()
        self._directory = directory = PeerDirectory(presence, store, book)
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
        liveness = LivenessChecker(
            presence, sessions, config.upkeep(), emit, alarm.due_by, in_use=files.busy
        )
        self._sender = Sender(
            loop,
            store,
            delivery=self._delivery,
            completion=completion,
            sessions=sessions,
            presence=presence,
            directory=directory,
            trust_book=trust,
            connector=connector,
            want_reconnect=reconnector.want,
            emit=emit,
            due_by=alarm.due_by,
            discovery=config.discovery,
            send_wait=config.send_wait,
        )
        self._owner = owner = PeerSessions(
            loop,
            store,
            table=sessions,
            trust_book=trust,
            book=book,
            quota=ReceiveQuota(config.quota()),
            presence=presence,
            delivery=self._delivery,
            completion=completion,
            reconnector=reconnector,
            liveness=liveness,
            pump=self._sender.pump,
            emit=emit,
        )
        self._server = TcpServer(loop, lambda: self._new_session(Role.RESPONDER))

        # -- the features: each attaches to the session owner's extension points ----
        # Reach beyond broadcast: seeds, peer exchange and mDNS feed the address book.
        self._reach = reach = Reach(
            loop,
            identity=identity,
            config=config,
            sessions=sessions,
            trust_book=trust,
            book=book,
            delivery=self._delivery,
            connector=connector,
            seeds=seeds,
            emit=emit,
            poke=alarm.poke,
            has_work=files.has_work,
        )
        attach_reach(reach, owner)
        # Option 11 reaches a known peer as option 1 does, then offers.
        addresses = functools.partial(directory.addresses_to_try_now, discovery=config.discovery)
        files.attach(
            owner, Dial(directory.name_of, addresses, connector.open_session, reconnector.want)
        )
        verification = VerificationWiring(
            loop, identity.fingerprint, sessions, trust, presence, emit=emit, poke=alarm.poke
        )
        verification.attach(owner)
        self._mark_verified = verification.mark_verified
        self.verifier = verification.verifier  # the menu's way to code comparison
        # Legacy peers: their own port and list, never mixed with keyed peers' sessions.
        self.legacy = (
            None if config.legacy is None else LegacyService(config.legacy, store=store, emit=emit)
        )
        # What the discovery service hears: judged by trust, listed, and told to reach.
        self._beacons = BeaconIntake(
            loop,
            trust_book=trust,
            presence=presence,
            liveness=liveness,
            delivery=self._delivery,
            has_session=sessions.__contains__,
            reconnector=reconnector,
            emit=emit,
            announce=self._announce,
            on_claim=reach.beacon_heard,
        )
        alarm.attach(
            liveness, self._sender, reconnector, self._peer_cache, verification.role, reach, files
        )

    # -- lifecycle (menu thread) ---------------------------------------------

    def start(self) -> None:
        """Bind the TCP port and the discovery port; nothing is processed until `run()`."""
        self._trust.load()
        self._directory.load(self.loop.time())
        self._loop_thread.run_until_complete(self._open())
        self._delivery.load()
        self._files.transfers.load()

    def run(self) -> None:
        """Start processing in the background thread (after the banner is on screen)."""
        self._news.release()
        self._loop_thread.start(self._resume_waiting)

    def close(self, timeout: float = 1.5) -> None:
        """Say goodbye to every peer, stop the loop and wait for it (bounded)."""
        self._loop_thread.stop(self._shutdown, timeout)

    def _resume_waiting(self) -> None:
        """First thing on the loop: reach again the peers that messages or files wait for."""
        for fp in {*self._delivery.peers_with_pending(), *self._files.transfers.peers_with_work()}:
            self._reconnector.want(fp, at_once=True)
        self.alarm.poke()

    async def _open(self) -> None:
        cfg = self.config
        server = self._server
        await self._ports.open(Port(lambda: server.start(cfg.bind, cfg.port), server.close))
        if self.legacy is not None:
            await self._ports.open(Port(self.legacy.open, self.legacy.close))
        if cfg.discovery:
            self._discovery = discovery = DiscoveryService(
                identity=self.identity,
                name=cfg.name,
                tcp_port=cfg.port,
                targets=broadcast_targets(cfg.broadcast),
                discovery_port=cfg.discovery_port,
                interval=cfg.beacon_interval,
                on_beacon=self._beacons,
                on_trouble=self._news.emit,
            )
            await self._ports.open(Port(discovery.start, discovery.close))
        heard_by = self._discovery
        await self._reach.start(heard_by.instance if heard_by else None, heard_by)

    async def _shutdown(self) -> None:
        self._owner.closing = True
        self._owner.release_held()
        self.alarm.stop()
        self._ports.close()
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

    def _announce(self) -> None:
        if self._discovery is not None:
            self._discovery.announce_soon()

    # -- the facade (menu thread) ------------------------------------------------

    def _connect_takes(self) -> float:
        return self.config.connect_timeout + self.config.handshake_timeout

    def active_peers(self) -> list[ActivePeer]:
        return self._loop_thread.call_fn(lambda: self._reach.describe(self._presence.listing()))

    def exchange_hostile(self) -> dict[str, int]:
        """Peer-exchange records dropped as hostile, by reason."""
        return self._loop_thread.call_fn(self._reach.hostile_exchange)

    def send_to_address(self, host: str, port: int, text: str) -> SendResult:
        takes = 2 * self._connect_takes() + self.config.send_wait
        return self._loop_thread.call_with_reply(
            lambda reply: self._sender.start_to_address(host, port, text, reply), takes
        )

    def send_to_peer(self, fingerprint: str, text: str) -> SendResult:
        takes = self._connect_takes() + self.config.send_wait
        return self._loop_thread.call_with_reply(
            lambda reply: self._sender.start_to_peer(fingerprint, text, reply), takes
        )

    def submit(self, fingerprint: str, texts: Sequence[str]) -> list[str]:
        """Queue messages to a known peer without waiting; returns their ids."""
        return self._loop_thread.call(self._sender.submit(fingerprint, texts), 25.0)

    def wait_delivered(self, msg_ids: Sequence[str], timeout: float) -> bool:
        return self._loop_thread.call(self._sender.wait_delivered(msg_ids, timeout), timeout)

    def connect(self, host: str, port: int) -> ConnectResult:
        return self._loop_thread.call(self._connector.connect(host, port), self._connect_takes())

    def connect_all(self) -> list[ConnectResult]:
        return self._loop_thread.call(self._connector.connect_all(), self._connect_takes())

    def key_conflicts(self) -> list[KeyConflict]:
        return self._loop_thread.call_fn(self._trust.conflicts)

    def key_conflicts_not_listed(self) -> int:
        """Changed keys no longer kept (beyond the few kept per name)."""
        return self._loop_thread.call_fn(self._trust.conflicts_not_listed)

    def retrust(self, presented_fingerprint: str) -> KeyConflict | None:
        """Accept a changed key: pin it, then let held messages flow."""
        return self._loop_thread.call(self._retrust(presented_fingerprint), self._connect_takes())

    def verify(self, fingerprint: str) -> None:
        """Mark a peer verified: in the store and in the active list at once."""
        self._loop_thread.call_fn(lambda: self._mark_verified(fingerprint))

    def send_file(self, fingerprint: str, source: SourceFile) -> FileResult:
        """Offer a checked file to a peer, connecting first if it is listed; else it waits."""
        return self._loop_thread.call(
            self._files.offer(fingerprint, source), 2 * self._connect_takes()
        )

    def file_offers(self) -> list[IncomingOffer]:
        return self._loop_thread.call(self._files.offers())

    def answer_offer(self, key: str, accept: bool) -> FileResult:
        return self._loop_thread.call(self._files.answer(key, accept))

    def session_count(self) -> int:
        return self._loop_thread.call_fn(lambda: len(self._sessions))

    async def _retrust(self, presented: str) -> KeyConflict | None:
        conflict = self._trust.retrust(presented)
        if conflict is not None:
            with contextlib.suppress(*ANY_CONNECT_FAILURE):
                await self._connector.open_session(conflict.host, conflict.port)
        return conflict
