"""The original's beacons on the discovery port: heard, and sent for the legacy port.

With `--legacy-key` (and discovery on), this role keeps a UDP socket of its
own on the discovery port, shared with the discovery service's (both set
SO_REUSEADDR and SO_REUSEPORT, and broadcasts reach every socket bound to the
port). Every `interval` seconds it broadcasts the original's beacon, a token
of `NAME:LEGACY_PORT`, so that copies of the original list this peer at its
legacy port. Datagrams that look like the original's tokens are decrypted
(at a bounded rate per source) and reported to the owner; our own beacons,
looped back, are recognised by their exact bytes and ignored. peer_chat's
own signed beacons never start like a token, so they cost one comparison.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, Final

from peerchat.errors import BindError
from peerchat.legacy.original import (
    LegacyKey,
    OriginalBeacon,
    decode_beacon,
    encode_beacon,
    looks_like_token,
)
from peerchat.limits import (
    LEGACY_BEACON_BURST,
    LEGACY_BEACON_RATE,
    LEGACY_MAX_TRACKED_SOURCES,
    LEGACY_ORIGINAL_READ,
)
from peerchat.protocol.beacon import TokenBucket

log = logging.getLogger(__name__)

_OWN_REMEMBERED: Final = 16  # beacons of ours recognised when they come back


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: LegacyBeacons) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._owner.datagram_received(data, str(addr[0]))

    def error_received(self, exc: Exception) -> None:
        log.debug("legacy beacon socket: %s", exc)


class LegacyBeacons:
    """`bind()` (any thread), then `serve()` in the loop; `close()` in the loop or after it."""

    def __init__(
        self,
        *,
        key: LegacyKey,
        name: str,
        port: int,
        targets: list[str],
        discovery_port: int,
        interval: float,
        on_beacon: Callable[[str, OriginalBeacon], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not interval > 0:
            raise ValueError("beacon interval must be positive")
        self._key = key
        self._name = name
        self._port = port
        self._targets = list(targets)
        self._discovery_port = discovery_port
        self._interval = interval
        self._on_beacon = on_beacon
        self._clock = clock
        self._sent: collections.deque[bytes] = collections.deque(maxlen=_OWN_REMEMBERED)
        self._budgets: collections.OrderedDict[str, TokenBucket] = collections.OrderedDict()
        self._sock: socket.socket | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.beacons_sent = 0
        self.heard = 0

    def bind(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setblocking(False)
            sock.bind(("", self._discovery_port))
        except (OSError, OverflowError) as exc:
            sock.close()
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise BindError(
                f"Discovery port {self._discovery_port} is unavailable for the original's "
                f"beacons: {reason}"
            ) from None
        self._sock = sock

    async def serve(self) -> None:
        if self._sock is None:
            raise RuntimeError("bind() the legacy beacons first")
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=self._sock)
        self._transport = transport
        self._send()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        elif self._sock is not None:
            self._sock.close()
        self._sock = None

    def datagram_received(self, data: bytes, source_ip: str) -> None:
        if len(data) > LEGACY_ORIGINAL_READ or not looks_like_token(data):
            return
        if data in self._sent:
            return  # our own, looped back
        if not self._spend(source_ip):
            return
        beacon = decode_beacon(self._key, data)
        if beacon is None:
            return
        self.heard += 1
        try:
            self._on_beacon(source_ip, beacon)
        except Exception:
            log.exception("legacy beacon handler failed")

    # -- internals

    def _send(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None:
            return
        data = encode_beacon(self._key, self._name, self._port, self._clock())
        self._sent.append(data)
        self.beacons_sent += 1
        for target in self._targets:
            try:
                transport.sendto(data, (target, self._discovery_port))
            except OSError as exc:
                log.debug("legacy beacon to %s: %s", target, exc)
        self._timer = asyncio.get_running_loop().call_later(self._interval, self._send)

    def _spend(self, source_ip: str) -> bool:
        now = time.monotonic()
        bucket = self._budgets.get(source_ip)
        if bucket is None:
            bucket = self._budgets[source_ip] = TokenBucket(
                LEGACY_BEACON_RATE, LEGACY_BEACON_BURST, now
            )
            while len(self._budgets) > LEGACY_MAX_TRACKED_SOURCES:
                self._budgets.popitem(last=False)
        else:
            self._budgets.move_to_end(source_ip)
            bucket.refill(now)
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True
