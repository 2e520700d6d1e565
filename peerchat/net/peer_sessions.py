"""The owner of every session: admission, the handshake's outcome, and messages in.

It implements `session.SessionOwner`. A new connection is admitted within
the limits of the session table; an authenticated peer is judged by the trust
book, settled against a duplicate session, listed, and sent what is queued
for it; a batch of chat messages is stored before it is acknowledged; an
acknowledgement completes delivery; a goodbye ends the session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from peerchat.completion import Completion
from peerchat.delivery import Delivery, receive_chats
from peerchat.errors import StorageError
from peerchat.events import (
    MessageArrived,
    PeerConnected,
    PeerOffline,
    Problem,
    QueuedDelivered,
    UiEvent,
)
from peerchat.net.connector import KeyChangedError, Refused
from peerchat.net.liveness_checker import LivenessChecker
from peerchat.net.reconnector import Reconnector
from peerchat.net.session import (
    BYE_DUPLICATE,
    BYE_QUIT,
    BYE_QUOTA,
    BYE_STORAGE,
    BYE_UNTRUSTED,
    Session,
)
from peerchat.net.trust_book import TrustBook
from peerchat.policy.address_book import AddressBook
from peerchat.policy.presence import Presence
from peerchat.policy.quota import ReceiveQuota
from peerchat.policy.session_table import SessionTable
from peerchat.protocol.channel import Role
from peerchat.protocol.messages import Ack, Bye, Chat, ConnectNotice, Message, Ping, Pong
from storage import HistoryStore

log = logging.getLogger(__name__)


class PeerSessions:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        store: HistoryStore,
        *,
        table: SessionTable[Session],
        trust_book: TrustBook,
        book: AddressBook,
        quota: ReceiveQuota,
        presence: Presence,
        delivery: Delivery,
        completion: Completion,
        reconnector: Reconnector,
        liveness: LivenessChecker,
        pump: Callable[[str], None],
        emit: Callable[[UiEvent], None],
    ) -> None:
        self._loop = loop
        self._store = store
        self._table = table
        self._trust = trust_book
        self._book = book
        self._quota = quota
        self._presence = presence
        self._delivery = delivery
        self._completion = completion
        self._reconnector = reconnector
        self._liveness = liveness
        self._pump = pump
        self._emit = emit
        self.closing = False
        # Other roles' messages and session news, wired by the node shell.
        self._routes: dict[type[Message], Callable[[Session, str, Message], None]] = {}
        self._up: list[Callable[[Session, str], None]] = []
        self._down: list[Callable[[str], None]] = []
        self._writable: list[Callable[[Session, str], None]] = []
        self._announcement: Callable[[Session], UiEvent | None] = _connected_from

    # -- wiring (the node shell) --------------------------------------------------

    def route(
        self, kinds: Iterable[type[Message]], handler: Callable[[Session, str, Message], None]
    ) -> None:
        """Hand messages of these kinds, from a peer's current session, to `handler`."""
        for kind in kinds:
            self._routes[kind] = handler

    def on_session_up(self, listener: Callable[[Session, str], None]) -> None:
        """Tell `listener` when a session becomes a peer's current one."""
        self._up.append(listener)

    def on_session_down(self, listener: Callable[[str], None]) -> None:
        """Tell `listener` when a peer's current session is gone."""
        self._down.append(listener)

    def on_writable(self, listener: Callable[[Session, str], None]) -> None:
        """Tell `listener` when a peer's current session can take more data again."""
        self._writable.append(listener)

    def announce_with(self, announcement: Callable[[Session], UiEvent | None]) -> None:
        """How a peer that a session newly lists is announced (None: not at all)."""
        self._announcement = announcement

    # -- SessionOwner -----------------------------------------------------------

    def admit(self, session: Session) -> bool:
        if self.closing:
            return False
        for idle in self._table.make_room(session):
            idle.fail(f"dropped for a newer connection from {session.remote_ip}")
        refused = self._table.admit(session)
        if refused is not None:
            log.warning("refusing %s: %s", session.remote_ip, refused)
            return False
        return True

    def established(self, session: Session) -> None:
        hello = session.peer
        addr = session.listen_address
        assert hello is not None and addr is not None
        fp = hello.fingerprint
        host, port = addr
        # Only where we dialled does a completed handshake confirm an address, and
        # never one confirmed for another key: that is the user's to decide (the
        # sender names both keys and sends nothing).
        dialled = session.dialled if session.role is Role.INITIATOR else None
        if dialled is not None and self._book.key_at(dialled) not in (None, fp):
            dialled = None
        conflict = self._trust.admit_hello(hello, *(dialled or addr), worked=dialled is not None)
        if conflict is not None:
            session.close(BYE_UNTRUSTED)
            session.fail_ready(KeyChangedError(conflict))
            return
        if dialled is not None:
            self._confirm(fp, dialled)
        settled = self._table.settle(fp, session)
        dropped = settled.dropped
        if dropped is not None:
            if dropped is not session:
                self._delivery.session_lost(fp)  # its messages go again on the kept one
            dropped.close(BYE_DUPLICATE)
            if dropped is session:
                session.resolve_ready(settled.kept)
                return
        self._reconnector.drop(fp)
        log.info(
            "session with %s [%s] at %s:%d established (%s)",
            hello.name,
            fp[:8],
            host,
            port,
            "we connected" if session.role is Role.INITIATOR else "it connected",
        )
        newly = self._presence.session_up(
            fp, hello.name, host, port, now=self._loop.time(), wall=time.time()
        )
        self._liveness.watch(session)
        for listener in self._up:
            listener(session, fp)
        if newly:
            event = self._announcement(session)
            if event is not None:
                self._emit(event)
                # The peer's notice of an explicit connect, if one follows, is said already.
                session.announced_at_start = isinstance(event, PeerConnected)
        session.resolve_ready(session)
        self._pump(fp)

    def _confirm(self, fp: str, dialled: tuple[str, int]) -> None:
        """The one place a handshake confirms a key at an address (the book's one writer)."""
        displaced = self._book.confirm(fp, dialled, self._loop.time())
        assert displaced is None, "checked before: another key's address is never moved"

    def received(self, session: Session, messages: list[Message]) -> None:
        fp = session.fingerprint
        if fp is not None and self._table.is_live(fp, session):
            self._presence.heard(fp, self._loop.time(), time.time())
        announced, session.announced_at_start = session.announced_at_start, False
        chats: list[Chat] = []
        for message in messages:
            if isinstance(message, ConnectNotice) and announced:
                announced = False  # said already when the session listed the peer
                continue
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

    def closed(self, session: Session) -> None:
        fp = session.fingerprint
        if not self._table.remove(session, fp):
            return
        assert fp is not None
        log.info("session with [%s] at %s closed", fp[:8], session.listen_address)
        for listener in self._down:
            listener(fp)
        self._delivery.session_lost(fp)
        if self._reconnector.wanted(fp) and not self.closing:
            self._reconnector.want(fp)

    def writable(self, session: Session) -> None:
        fp = session.fingerprint
        if fp is None or not self._table.is_live(fp, session):
            return
        for listener in self._writable:
            listener(session, fp)

    # -- messages in ------------------------------------------------------------

    def _on_chats(self, session: Session, chats: list[Chat]) -> None:
        hello = session.peer
        addr = session.listen_address
        if hello is None or addr is None or not self._table.is_live(hello.fingerprint, session):
            return  # a losing duplicate: the peer resends on the kept session
        verified = self._trust.is_verified(hello.fingerprint, hello.name)
        sizes = [len(chat.text.encode()) for chat in chats]
        fits = self._quota.admit(hello.fingerprint, sizes, verified=verified, now=self._loop.time())
        over = fits < len(chats)
        chats = chats[:fits]
        if chats:
            self._store_and_ack(session, chats)
        if over:
            # Not stored, not acknowledged: the sender keeps them and is told why.
            allowed = self._quota.limits_for(verified).describe()
            self._emit(Problem(f"Refused messages from {hello.name}: over its quota ({allowed})"))
            session.close(f"{BYE_QUOTA}: {allowed}; try again later")

    def _store_and_ack(self, session: Session, chats: list[Chat]) -> None:
        hello = session.peer
        addr = session.listen_address
        assert hello is not None and addr is not None
        try:
            # Stored before acknowledged, duplicates acknowledged too (delivery's rule).
            received = receive_chats(
                self._store, hello.fingerprint, hello.name, *addr, chats, now=time.time()
            )
        except StorageError as exc:
            # Not stored means not acknowledged: the sender keeps it and retries.
            self._emit(Problem(f"Cannot store messages from {hello.name}: {exc}"))
            session.close(BYE_STORAGE)
            return
        session.last_chat = self._loop.time()
        session.send(received.acks())
        for chat in received.fresh:
            peer = self._presence.get(hello.fingerprint)
            verified = peer is not None and peer.verified
            self._emit(
                MessageArrived(hello.name, addr[0], addr[1], hello.fingerprint, chat.text, verified)
            )
            if chat.text.strip().lower() == "exit":
                # As the original did: gone from the list until its next sign of life.
                self._depart(hello.fingerprint, "said exit", until_heard=True)

    def _on_control(self, session: Session, message: Message) -> None:
        fp = session.fingerprint
        if fp is None:
            return
        if isinstance(message, Ack):
            self._on_ack(fp, message.msg_ids)
        elif isinstance(message, Ping):
            session.send([Pong(message.nonce)])
        elif isinstance(message, Bye):
            self._on_bye(session, fp, message.reason)
        elif isinstance(message, ConnectNotice) and session.peer is not None:
            host, port = session.listen_address or (session.remote_ip, 0)
            self._emit(PeerConnected(session.peer.name, host, port))
        else:
            handler = self._routes.get(type(message))
            # Only the current session's: a duplicate's messages are the peer's to resend.
            if handler is not None and self._table.is_live(fp, session):
                handler(session, fp, message)

    def _on_bye(self, session: Session, fp: str, reason: str) -> None:
        kept = self._table.get(fp)
        if reason == BYE_DUPLICATE and kept is not None and kept is not session:
            # Both ends closed this one of two simultaneous sessions: use the other.
            session.resolve_ready(kept)
        else:
            session.fail_ready(Refused(reason))
        if reason == BYE_UNTRUSTED or reason.startswith(BYE_QUOTA):
            self._completion.refused(self._delivery.queued_ids(fp), Refused(reason))
        if reason.startswith(BYE_QUOTA) and session.peer is not None:
            self._emit(Problem(f"{session.peer.name} refuses more messages for now: {reason}"))
        session.hang_up()
        if reason == BYE_QUIT:
            self._depart(fp, "left")

    def _on_ack(self, fp: str, msg_ids: tuple[str, ...]) -> None:
        ids = [row.msg_id for row in self._delivery.acknowledge(fp, msg_ids)]
        if not ids:
            return
        unattended = self._completion.acknowledged(ids)  # queued earlier, nobody waiting
        peer = self._presence.get(fp)
        if unattended and peer is not None:
            self._emit(QueuedDelivered(peer.name, peer.host, peer.port, unattended))
        self._pump(fp)

    def _depart(self, fp: str, reason: str, *, until_heard: bool = False) -> None:
        peer = self._presence.depart(fp, until_heard=until_heard)
        if peer is not None:
            self._emit(PeerOffline(peer.name, peer.host, peer.port, reason))


def _connected_from(session: Session) -> UiEvent | None:
    """The default announcement: a peer that connected to us; our own dials say nothing."""
    hello, addr = session.peer, session.listen_address
    if session.role is not Role.RESPONDER or hello is None or addr is None:
        return None
    return PeerConnected(hello.name, *addr)
