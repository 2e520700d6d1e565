"""The discovery service: sends this peer's beacons over UDP and reports accepted ones.

The beacon format and the rules that judge a datagram are pure code in
peerchat/protocol/beacon.py; this module owns the UDP socket, the timer that
sends beacons, and the list of broadcast targets.

Discovery that cannot work is reported, once, through `on_trouble`: a target
beacons cannot be sent to (no route, broadcast forbidden), said again only
after a send to it has worked; and a silence, no other peer's beacon accepted
for `quiet_after` seconds, said again only after someone was heard. Without
them a user on a network that drops broadcast just sees no peers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

import ifaddr

from crypto_utils import Identity
from peerchat.errors import BindError, UsageError
from peerchat.events import DiscoveryBlocked, DiscoveryQuiet, DiscoveryTrouble
from peerchat.limits import LIMITED_BROADCAST
from peerchat.protocol.beacon import (
    INSTANCE_SIZE,
    SELF,
    BeaconAccepted,
    BeaconFilter,
    BeaconRejected,
    TokenBucket,
    encode_beacon,
    name_problem,
)

log = logging.getLogger(__name__)

ANNOUNCE_MIN_GAP: Final = 0.5  # seconds between extra beacons (replies to newcomers)
QUIET_BEACONS: Final = 6  # beacon intervals with no other peer heard before that is said

# --------------------------------------------------------------------------- targets


def _directed_broadcasts(adapters: Iterable[Any]) -> list[str]:
    found: list[str] = []
    for adapter in adapters:
        for ip in adapter.ips:
            if not isinstance(ip.ip, str):
                continue  # IPv6 has no broadcast
            try:
                net = ipaddress.IPv4Network(f"{ip.ip}/{ip.network_prefix}", strict=False)
            except ValueError:
                continue
            if net.is_loopback or net.prefixlen >= 31:
                continue  # /31 and /32 links have no broadcast address
            address = str(net.broadcast_address)
            if address not in found:
                found.append(address)
    return found


def broadcast_targets(requested: str) -> list[str]:
    """Where beacons go.

    The default limited broadcast leaves only through the interface of the
    default route, so each other non-loopback IPv4 interface gets its directed
    broadcast too. Any other value is used alone (UsageError if it is not an
    IPv4 address).
    """
    try:
        ipaddress.IPv4Address(requested)
    except ValueError:
        raise UsageError(f"Invalid broadcast address: {requested!r}") from None
    if requested != LIMITED_BROADCAST:
        return [requested]
    try:
        adapters = ifaddr.get_adapters()
    except (OSError, ValueError) as exc:
        log.warning("cannot list network interfaces (%s); using %s only", exc, requested)
        return [requested]
    targets = [requested]
    targets.extend(t for t in _directed_broadcasts(adapters) if t != requested)
    return targets


# --------------------------------------------------------------------------- service


class _LogThrottle:
    """At most `burst` lines, then `rate` per second; says how many were dropped."""

    def __init__(self, rate: float = 1.0, burst: float = 20.0) -> None:
        self._bucket = TokenBucket(rate, burst, time.monotonic())
        self.suppressed = 0

    def allow(self) -> bool:
        self._bucket.refill(time.monotonic())
        if self._bucket.tokens < 1:
            self.suppressed += 1
            return False
        self._bucket.tokens -= 1
        return True


class _BeaconProtocol(asyncio.DatagramProtocol):
    def __init__(self, service: DiscoveryService) -> None:
        self._service = service

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._service._datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        self._service._error_received(exc)


class DiscoveryService:
    """Sends this peer's beacons and reports accepted ones; runs in the node's loop."""

    def __init__(
        self,
        *,
        identity: Identity,
        name: str,
        tcp_port: int,
        targets: list[str],
        discovery_port: int,
        interval: float,
        on_beacon: Callable[[BeaconAccepted], None],
        beacon_filter: BeaconFilter | None = None,
        on_trouble: Callable[[DiscoveryTrouble], None] | None = None,
        quiet_after: float | None = None,
    ) -> None:
        """`quiet_after`: seconds without another peer's beacon before `on_trouble`
        hears of it (default: QUIET_BEACONS intervals)."""
        problem = name_problem(name)
        if problem is not None:
            raise ValueError(problem)
        if not interval > 0:
            raise ValueError("beacon interval must be positive")
        self._identity = identity
        self._name = name
        self._tcp_port = tcp_port
        self._targets = list(targets)
        self._port = discovery_port
        self._interval = interval
        self._on_beacon = on_beacon
        self._on_trouble = on_trouble
        self._quiet_after = quiet_after if quiet_after is not None else QUIET_BEACONS * interval
        self._last_heard = -math.inf  # loop time of the last accepted beacon (or of the start)
        self._quiet_said = False
        self._blocked: set[str] = set()  # targets a failed send was reported for
        self._sending = False
        self._send_error: OSError | None = None
        self._filter = beacon_filter or BeaconFilter(identity.fingerprint)
        self._instance = secrets.token_bytes(INSTANCE_SIZE)
        self._seq = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._announce: asyncio.Handle | None = None
        self._last_announce = -math.inf
        self._closed = False
        self._reject_log = _LogThrottle()
        self._error_log = _LogThrottle(rate=0.1, burst=3.0)

    @property
    def instance(self) -> bytes:
        """This run's instance nonce (carried by every beacon it sends)."""
        return self._instance

    @property
    def beacons_sent(self) -> int:
        return self._seq

    async def start(self) -> None:
        if self._loop is not None:
            raise RuntimeError("discovery already started")
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            # Several peers on one host all listen on the discovery port; broadcasts
            # reach every socket bound to it.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setblocking(False)
            sock.bind(("", self._port))
        except (OSError, OverflowError) as exc:
            sock.close()
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise BindError(f"Discovery port {self._port} is unavailable: {reason}") from exc
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _BeaconProtocol(self), sock=sock
            )
        except BaseException:
            sock.close()
            raise
        self._loop = loop
        self._transport = transport
        self._last_heard = loop.time()
        if self._closed:  # closed while starting
            transport.close()
            return
        self._send_beacon()
        self._timer = loop.call_later(self._interval, self._periodic)

    def announce_soon(self) -> None:
        """One extra beacon (a reply to a newcomer) soon; at most one per ANNOUNCE_MIN_GAP."""
        loop = self._loop
        if loop is None or self._closed or self._announce is not None:
            return
        wait = self._last_announce + ANNOUNCE_MIN_GAP - loop.time()
        if wait <= 0:
            self._announce = loop.call_soon(self._announce_now)
        else:
            self._announce = loop.call_later(wait, self._announce_now)

    def close(self) -> None:
        self._closed = True
        for handle in (self._timer, self._announce):
            if handle is not None:
                handle.cancel()
        self._timer = self._announce = None
        if self._transport is not None:
            self._transport.close()

    # -- internals

    def _periodic(self) -> None:
        self._timer = None
        if self._closed or self._loop is None:
            return
        self._send_beacon()
        self._check_quiet(self._loop.time())
        self._timer = self._loop.call_later(self._interval, self._periodic)

    def _announce_now(self) -> None:
        self._announce = None
        if self._closed or self._loop is None:
            return
        self._last_announce = self._loop.time()
        self._send_beacon()

    def _send_beacon(self) -> None:
        transport = self._transport
        if transport is None or self._closed:
            return
        try:
            data = encode_beacon(
                self._identity, self._name, self._tcp_port, self._instance, self._seq, time.time()
            )
        except ValueError:
            log.exception("cannot build a discovery beacon")
            return
        self._seq += 1
        for target in self._targets:
            # The transport reports a failed send to error_received, not by raising.
            self._sending, self._send_error = True, None
            try:
                transport.sendto(data, (target, self._port))
            except OSError as exc:
                self._send_error = exc
            finally:
                self._sending = False
            self._sent(target, self._send_error)

    def _sent(self, target: str, error: OSError | None) -> None:
        if error is None:
            self._blocked.discard(target)
            return
        if target in self._blocked:
            return
        self._blocked.add(target)
        reason = error.strerror or str(error) or type(error).__name__
        log.warning("cannot send discovery beacons to %s:%d: %s", target, self._port, reason)
        self._report(DiscoveryBlocked(target, self._port, reason))

    def _check_quiet(self, now: float) -> None:
        if self._quiet_said or now - self._last_heard < self._quiet_after:
            return
        self._quiet_said = True
        if self._blocked.issuperset(self._targets):
            return  # nothing goes out, and that has been said
        log.info("no other peer heard on UDP port %d in %g s", self._port, self._quiet_after)
        self._report(DiscoveryQuiet(self._port, self._quiet_after))

    def _report(self, trouble: DiscoveryTrouble) -> None:
        if self._on_trouble is None:
            return
        try:
            self._on_trouble(trouble)
        except Exception:
            log.exception("discovery trouble callback failed")

    def _datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        source_ip = str(addr[0])
        try:
            result = self._filter.check(data, source_ip, time.time())
        except Exception:  # the filter never raises; a bug must not stop discovery
            log.exception("beacon from %s could not be checked", source_ip)
            return
        if isinstance(result, BeaconRejected):
            if result.reason != SELF and self._reject_log.allow():
                dropped = self._reject_log.suppressed
                self._reject_log.suppressed = 0
                log.debug(
                    "beacon from %s rejected: %s%s",
                    source_ip,
                    result.reason,
                    f" ({dropped} more rejections not logged)" if dropped else "",
                )
            return
        if self._loop is not None:
            self._last_heard = self._loop.time()
            self._quiet_said = False
        try:
            self._on_beacon(result)
        except Exception:
            log.exception("discovery callback failed")

    def _error_received(self, exc: Exception) -> None:
        if self._sending and isinstance(exc, OSError):
            self._send_error = exc
            return
        if self._error_log.allow():
            log.warning("discovery socket error: %s", exc)
