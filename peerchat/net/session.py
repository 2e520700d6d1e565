"""One TCP connection to a peer: moves bytes between a socket and a SecureChannel.

This is the only place where a connection's bytes meet the event loop. It holds
no policy: every decision (admit, trust, store, acknowledge) is its owner's,
which it reaches only through the small `SessionOwner` interface below.
A protocol error closes this connection and no other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

from peerchat.errors import ProtocolError
from peerchat.protocol.channel import (
    ChannelState,
    Credentials,
    Event,
    HandshakeComplete,
    PeerHello,
    Role,
    SecureChannel,
)
from peerchat.protocol.messages import Bye, Message

log = logging.getLogger(__name__)

# Reasons carried by a goodbye. Only BYE_QUIT means "I am leaving".
BYE_QUIT = "quit"
BYE_DUPLICATE = "duplicate session"
BYE_UNTRUSTED = "key not trusted"
BYE_IDLE = "idle"
BYE_STORAGE = "cannot store messages"
BYE_QUOTA = "over quota"  # followed by ": " and the limits

# A peer that stops reading must not make us buffer without bound.
MAX_WRITE_BUFFER = 4 * 1024 * 1024


class SessionOwner(Protocol):
    """Who decides for a session; called on the loop thread only."""

    def admit(self, session: Session) -> bool:
        """Whether a new connection fits in the limits (it is counted if it does)."""
        ...

    def established(self, session: Session) -> None:
        """The handshake completed: `session.peer` is who the peer proved to be."""
        ...

    def received(self, session: Session, messages: list[Message]) -> None:
        """Messages from an established session, in order (may raise ProtocolError)."""
        ...

    def closed(self, session: Session) -> None:
        """An admitted connection is gone."""
        ...

    def writable(self, session: Session) -> None:
        """The write buffer drained after it had filled: more may be sent."""
        ...


class Session(asyncio.Protocol):
    """A connection in either direction, from first byte to close."""

    def __init__(
        self,
        owner: SessionOwner,
        role: Role,
        credentials: Credentials,
        handshake_timeout: float,
        first_message_timeout: float | None = None,
    ) -> None:
        self._owner = owner
        self._loop = asyncio.get_running_loop()
        self._handshake_timeout = handshake_timeout
        # A connection from outside must start its handshake at once: an idle one
        # would hold a pending slot for the whole handshake deadline.
        self._first_message_timeout = first_message_timeout
        self.role = role
        self.channel = SecureChannel(role, credentials)
        self.transport: asyncio.Transport | None = None
        self.remote_ip = "?"
        self.remote_port = 0
        self.dialled: tuple[str, int] | None = None  # the address we connected to (initiator)
        self.peer: PeerHello | None = None
        self.last_received = 0.0
        self.last_chat = 0.0
        self.last_ping = 0.0
        # "Peer ... connected" was said when this session listed the peer; the
        # peer's own notice that its user connected (if it comes first) is not said twice.
        self.announced_at_start = False
        self.admitted = False
        self.closed = False
        self.ready: asyncio.Future[Session] = self._loop.create_future()
        self._deadline: asyncio.TimerHandle | None = None
        self._first: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peername = transport.get_extra_info("peername")
        if isinstance(peername, tuple) and len(peername) >= 2:
            self.remote_ip, self.remote_port = str(peername[0]), int(peername[1])
        now = self._loop.time()
        self.last_received = self.last_chat = self.last_ping = now
        if not self._owner.admit(self):
            transport.abort()
            return
        self.admitted = True
        self._deadline = self._loop.call_later(self._handshake_timeout, self._handshake_expired)
        if self.role is Role.RESPONDER and self._first_message_timeout is not None:
            self._first = self._loop.call_later(self._first_message_timeout, self._first_expired)
        self._flush()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self._first is not None:
            self._first.cancel()
            self._first = None
        try:
            events = self.channel.receive_data(data)
        except ProtocolError as exc:
            self.fail(f"protocol error: {exc}")
            return
        self.last_received = self._loop.time()
        try:
            self._dispatch(events)
        except ProtocolError as exc:
            self.fail(str(exc))
        self._flush()

    def resume_writing(self) -> None:
        if self.peer is not None and not self.closed:
            self._owner.writable(self)

    def eof_received(self) -> bool | None:
        try:
            self.channel.receive_eof()
        except ProtocolError as exc:
            self.fail(f"stream ended early: {exc}")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for timer in (self._deadline, self._first):
            if timer is not None:
                timer.cancel()
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(str(exc) if exc else "connection closed"))
            self.ready.exception()  # mark retrieved: a waiter may already be gone
        if self.admitted:
            self._owner.closed(self)

    # -- used by the owner --------------------------------------------------

    @property
    def established(self) -> bool:
        return self.channel.state is ChannelState.ESTABLISHED and not self.closed

    @property
    def fingerprint(self) -> str | None:
        return self.peer.fingerprint if self.peer is not None else None

    @property
    def listen_address(self) -> tuple[str, int] | None:
        """Where this peer accepts connections: its IP as we see it, its advertised port."""
        if self.peer is None:
            return None
        return (self.remote_ip, self.peer.listen_port)

    def send(self, messages: Sequence[Message]) -> None:
        if not self.established:
            return
        self.channel.send_messages(messages)
        self._flush()

    def close(self, reason: str) -> None:
        """Say goodbye with `reason`, then close once the buffer is written."""
        if self.closed:
            return
        if self.established:
            with contextlib.suppress(ProtocolError):
                self.channel.send_message(Bye(reason))
            self._flush()
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def hang_up(self) -> None:
        """The peer said goodbye: close without answering."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def fail(self, why: str) -> None:
        """Drop the connection at once: it broke the protocol or a limit."""
        log.warning("closing connection %s:%d: %s", self.remote_ip, self.remote_port, why)
        # Whoever waits for this session (option 1 or 4) learns why it failed.
        self.fail_ready(ConnectionError(why))
        self.closed = True
        self.channel.close()
        if self.transport is not None:
            self.transport.abort()

    def resolve_ready(self, session: Session) -> None:
        """Tell whoever waits for this connection which session to use."""
        if not self.ready.done():
            self.ready.set_result(session)

    def fail_ready(self, exc: Exception) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc)
            self.ready.exception()

    # -- internals ----------------------------------------------------------

    def _dispatch(self, events: list[Event]) -> None:
        messages: list[Message] = []
        for event in events:
            if isinstance(event, HandshakeComplete):
                self._mark_established()
                self._owner.established(self)
                if self.closed:
                    return
            else:
                messages.append(event.message)
        if messages:
            self._owner.received(self, messages)

    def _mark_established(self) -> None:
        self.peer = self.channel.peer
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _flush(self) -> None:
        data = self.channel.data_to_send()
        transport = self.transport
        if not data or transport is None or transport.is_closing():
            return
        transport.write(data)
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            self.fail("peer is not reading its data")

    def _first_expired(self) -> None:
        self._first = None
        if self.channel.state is ChannelState.HANDSHAKING and not self.closed:
            self.fail("no handshake started in time")

    def _handshake_expired(self) -> None:
        if self.channel.state is ChannelState.HANDSHAKING and not self.closed:
            self.fail("handshake took too long")
