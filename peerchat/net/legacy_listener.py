"""The legacy port: a second TCP listener for plain-text and shared-key peers.

It only reads. Each connection gets a `ConnectionDecoder`, an idle deadline
(a connection that sends nothing for `idle_timeout` seconds is ended, and what
it sent so far is read as its last line), a lifetime cap, and a byte cap.
Admission (total and per-source connections, a per-source connection rate)
is decided before a byte is read; each decoded message spends the source's
and the global message budget, and a connection that overspends is cut.
Decoded items go to the owner's `on_item(source_ip, item)`; zero-byte probes
are counted and otherwise ignored. Nothing is ever written back.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable

from peerchat.errors import BindError
from peerchat.legacy.admission import AdmissionLimits, LegacyAdmission
from peerchat.legacy.decoder import ConnectionDecoder
from peerchat.legacy.original import LegacyKey
from peerchat.legacy.wire import LegacyDropped, LegacyItem
from peerchat.limits import LEGACY_IDLE_TIMEOUT, LEGACY_MAX_CONNECTION_TIME

log = logging.getLogger(__name__)

TOO_FAST = "sending messages too fast"
LOG_GAP = 1.0  # seconds between two log lines about refused connections


class LegacyListener:
    """Owns the legacy TCP socket; `bind()` (any thread), then `serve()` in the loop."""

    def __init__(
        self,
        *,
        bind: str,
        port: int,
        key: LegacyKey | None,
        on_item: Callable[[str, LegacyItem], None],
        limits: AdmissionLimits | None = None,
        idle_timeout: float = LEGACY_IDLE_TIMEOUT,
        max_connection_time: float = LEGACY_MAX_CONNECTION_TIME,
    ) -> None:
        self._bind_host = bind
        self._requested_port = port
        self.key = key
        self.on_item = on_item
        self.admission = LegacyAdmission(limits)
        self.idle_timeout = idle_timeout
        self.max_connection_time = max_connection_time
        self._sock: socket.socket | None = None
        self._server: asyncio.Server | None = None
        self.connections: set[_LegacyConnection] = set()
        self.probes = 0
        self.refused = 0
        self.cut = 0
        self._refusals_unlogged = 0
        self._last_refusal_log = -LOG_GAP

    @property
    def port(self) -> int:
        """The port bound (the one asked for, or the one the system chose for 0)."""
        if self._sock is None:
            return self._requested_port
        return int(self._sock.getsockname()[1])

    def bind(self) -> None:
        """Open the listening socket now, so a port in use is reported before anything runs."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._bind_host, self._requested_port))
            sock.listen(128)
            sock.setblocking(False)
        except (OSError, OverflowError) as exc:
            sock.close()
            port = self._requested_port
            if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
                raise BindError(f"Legacy port {port} is already in use.") from None
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise BindError(f"Cannot listen on legacy port {port}: {reason}") from None
        self._sock = sock

    async def serve(self) -> None:
        if self._sock is None:
            raise RuntimeError("bind() the legacy listener first")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _LegacyConnection(self), sock=self._sock)

    def close(self) -> None:
        """Stop accepting and cut every open legacy connection (idempotent)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        elif self._sock is not None:
            self._sock.close()
        self._sock = None
        for connection in list(self.connections):
            connection.abort()

    def refused_connection(self, ip: str, reason: str, now: float) -> None:
        self.refused += 1
        if now - self._last_refusal_log < LOG_GAP:
            self._refusals_unlogged += 1
            return
        more = f" ({self._refusals_unlogged} more refused)" if self._refusals_unlogged else ""
        log.warning("legacy port: refusing %s: %s%s", ip, reason, more)
        self._refusals_unlogged = 0
        self._last_refusal_log = now

    def report(self, ip: str, item: LegacyItem) -> None:
        try:
            self.on_item(ip, item)
        except Exception:
            log.exception("legacy message handler failed")


class _LegacyConnection(asyncio.Protocol):
    def __init__(self, listener: LegacyListener) -> None:
        self._listener = listener
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._decoder = ConnectionDecoder(listener.key)
        self._ip = "?"
        self._admitted = False
        self._done = False  # nothing more is read from this connection
        self._opened = self._last_data = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self._ip = str(peer[0])
        now = self._loop.time()
        refusal = self._listener.admission.admit(self._ip, now)
        if refusal is not None:
            self._done = True
            self._listener.refused_connection(self._ip, refusal, now)
            transport.abort()
            return
        self._admitted = True
        self._listener.connections.add(self)
        self._opened = self._last_data = now
        self._timer = self._loop.call_later(self._listener.idle_timeout, self._check_deadlines)

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        self._last_data = self._loop.time()
        self._deliver(self._decoder.receive(data))
        if self._decoder.failed is not None:
            self.abort()

    def eof_received(self) -> bool:
        self._finish()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        # A reset after the message arrived still leaves the message: read what came.
        self._finish()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._admitted:
            self._admitted = False
            self._listener.connections.discard(self)
            self._listener.admission.release(self._ip)

    def abort(self) -> None:
        self._done = True
        if self._transport is not None:
            self._transport.abort()

    # -- internals

    def _check_deadlines(self) -> None:
        self._timer = None
        if self._done:
            return
        now = self._loop.time()
        listener = self._listener
        idle_left = listener.idle_timeout - (now - self._last_data)
        life_left = listener.max_connection_time - (now - self._opened)
        if idle_left <= 0 or life_left <= 0:
            self._finish()
            if self._transport is not None:
                self._transport.close()
            return
        self._timer = self._loop.call_later(min(idle_left, life_left), self._check_deadlines)

    def _finish(self) -> None:
        """The stream ended, or stopped for too long: the rest is its last line."""
        if self._done:
            return
        self._done = True
        if self._decoder.bytes_received == 0:
            self._listener.probes += 1
            log.debug("legacy port: empty connection from %s", self._ip)
            return
        self._deliver(self._decoder.receive_eof())

    def _deliver(self, items: list[LegacyItem]) -> None:
        listener = self._listener
        for item in items:
            counted = not isinstance(item, LegacyDropped)
            if counted and not listener.admission.allow_message(self._ip, self._loop.time()):
                listener.cut += 1
                listener.report(self._ip, LegacyDropped(TOO_FAST))
                self.abort()
                return
            listener.report(self._ip, item)
