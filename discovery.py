"""Peer discovery: signed UDP beacons, the filter that judges them, and the UDP endpoint.

Every peer broadcasts a beacon when it starts and then every few seconds. A
beacon says "the key with this fingerprint is called NAME and accepts sessions
on TCP port PORT at the address this datagram came from". It is only a hint:
the session handshake authenticates the peer again. But since the list of
active peers is built from beacons, they are signed, fresh and never replayed.

Beacon wire format, version 1 (all integers big-endian, one UDP datagram):

    offset  size  field
    0       4     magic b"PCHB"
    4       1     version (1)
    5       1     N: name length in bytes (1..4*MAX_NAME_CHARS)
    6       2     D: identity key length in bytes (>= 1)
    8       2     S: signature length in bytes (>= 1)
    10      2     TCP port (1..65535)
    12      8     timestamp: IEEE 754 double, unix seconds of the sender's clock
    20      16    instance: random nonce chosen at each start of the sender
    36      8     sequence number: 0 for the start beacon, +1 for each further one
    44      N     name, UTF-8
    44+N    D     identity public key, SubjectPublicKeyInfo DER (RSA >= 2048 bits)
    44+N+D  S     signature

The datagram is exactly 44+N+D+S bytes and at most BEACON_MAX_SIZE (a 3072-bit
key with a 5-byte name takes 855 bytes; a 4096-bit key with the longest name
1,234). The signature is RSA-PSS (SHA-256, MGF1-SHA256, salt 32) by the
identity key over SIGNING_CONTEXT (b"peer_chat/1 discovery beacon\x00") +
bytes[0 : 44+N+D]: every field, the lengths included, is signed; the context
keeps a beacon signature from meaning anything elsewhere.
The key travels in the beacon so that a receiver can verify it with no prior
session; the fingerprint is derived from it, never sent.

How a receiver judges a datagram (BeaconFilter.check), cheapest first: size;
decode; our own fingerprint; freshness (|now - timestamp| <= BEACON_MAX_SKEW);
replay (per fingerprint: the same instance needs a higher sequence number, a
new instance needs a newer timestamp than the last accepted beacon); budget;
signature. The budget (token buckets: one per source address, one per known key
at the address it was accepted from, one for all) is the only way to the RSA
verification, so a flood costs little. Everything before it is bounded
parsing and dictionary lookups, and putting it first means that junk, our own
beacons, duplicate copies (one beacon sent to several broadcast addresses) and
replays cost no budget and no verification. The tables behind the buckets and
the replay state are LRU-capped, so a flood from many addresses or keys cannot
grow memory without bound. A key pushed out of the replay table could have a
beacon from the last BEACON_MAX_SKEW seconds replayed once; that costs the
attacker a flood of valid signatures first, and the session handshake still
authenticates whoever answers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import secrets
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import ifaddr

from crypto_utils import Identity, fingerprint_of, verify_signature
from errors import BindError, ProtocolError, UsageError
from limits import (
    BEACON_MAX_SIZE,
    BEACON_MAX_SKEW,
    BEACON_VERIFY_BURST,
    BEACON_VERIFY_GLOBAL_RATE,
    BEACON_VERIFY_RATE,
    LIMITED_BROADCAST,
    MAX_NAME_CHARS,
)
from sanitize import validate_name

log = logging.getLogger(__name__)

MAGIC: Final = b"PCHB"
VERSION: Final = 1
SIGNING_CONTEXT: Final = b"peer_chat/1 discovery beacon\x00"
INSTANCE_SIZE: Final = 16
ANNOUNCE_MIN_GAP: Final = 0.5  # seconds between extra beacons (replies to newcomers)
MAX_TRACKED_SOURCES: Final = 1024
MAX_TRACKED_PEERS: Final = 1024

_HEADER: Final = struct.Struct(">4sBBHHHd16sQ")
HEADER_SIZE: Final = _HEADER.size  # 44
_MAX_NAME_BYTES: Final = 4 * MAX_NAME_CHARS
_MAX_SEQ: Final = 2**64 - 1

# Rejection reasons (BeaconRejected.reason starts with one of these).
TOO_LARGE: Final = "too large"
TOO_SHORT: Final = "too short"
RATE_LIMITED: Final = "rate limited"
MALFORMED: Final = "malformed"
SELF: Final = "self"
STALE: Final = "stale"
BAD_SIGNATURE: Final = "bad signature"
REPLAY: Final = "replay"


# --------------------------------------------------------------------------- beacon


@dataclass(frozen=True)
class Beacon:
    name: str
    tcp_port: int
    identity_der: bytes = field(repr=False)
    timestamp: float
    instance: bytes
    seq: int
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fingerprint", fingerprint_of(self.identity_der))


def _name_problem(name: str) -> str | None:
    # The same rules as the handshake's, so a name listed from a beacon is one a
    # session with that peer will accept.
    try:
        validate_name(name)
    except ValueError as exc:
        return str(exc)
    return None


def encode_beacon(  # noqa: PLR0917 (the contract's signature)
    identity: Identity, name: str, tcp_port: int, instance: bytes, seq: int, now: float
) -> bytes:
    """A signed beacon datagram. ValueError for arguments no receiver would accept."""
    problem = _name_problem(name)
    if problem is not None:
        raise ValueError(problem)
    if not 1 <= tcp_port <= 65535:
        raise ValueError(f"TCP port {tcp_port} is out of range")
    if len(instance) != INSTANCE_SIZE:
        raise ValueError(f"instance must be {INSTANCE_SIZE} bytes")
    if not 0 <= seq <= _MAX_SEQ:
        raise ValueError("sequence number out of range")
    if not (math.isfinite(now) and now >= 0):
        raise ValueError("timestamp must be a finite unix time")
    name_bytes = name.encode("utf-8")
    der = identity.public_der
    # The signature length is part of the signed header, so it comes from the key:
    # a PSS signature is exactly as long as the modulus.
    probe_size = HEADER_SIZE + len(name_bytes) + len(der)
    if probe_size >= BEACON_MAX_SIZE or len(der) > 0xFFFF:
        raise ValueError("identity key too large for a beacon")
    key_bytes = (identity.private_key.key_size + 7) // 8
    header = _HEADER.pack(
        MAGIC, VERSION, len(name_bytes), len(der), key_bytes, tcp_port, now, instance, seq
    )
    body = header + name_bytes + der
    signature = identity.sign(SIGNING_CONTEXT + body)
    if len(signature) != key_bytes:
        raise ValueError("unexpected signature length")
    data = body + signature
    if len(data) > BEACON_MAX_SIZE:
        raise ValueError(f"beacon of {len(data)} bytes exceeds {BEACON_MAX_SIZE}")
    return data


def decode_beacon(data: bytes) -> tuple[Beacon, bytes, bytes]:
    """(beacon, signed_message, signature); ProtocolError (only) for anything malformed.

    signed_message is exactly what the signature covers (SIGNING_CONTEXT included),
    so `verify_signature(beacon.identity_der, signature, signed_message)` checks it.
    Decoding does not verify anything cryptographic.
    """
    if len(data) > BEACON_MAX_SIZE:
        raise ProtocolError(f"beacon of {len(data)} bytes exceeds {BEACON_MAX_SIZE}")
    if len(data) < HEADER_SIZE:
        raise ProtocolError("beacon truncated")
    magic, version, name_len, der_len, sig_len, port, ts, instance, seq = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ProtocolError("not a peer_chat beacon")
    if version != VERSION:
        raise ProtocolError(f"unsupported beacon version {version}")
    if not (1 <= name_len <= _MAX_NAME_BYTES and der_len >= 1 and sig_len >= 1):
        raise ProtocolError("bad field length")
    body_len = HEADER_SIZE + name_len + der_len
    if body_len + sig_len != len(data):
        raise ProtocolError("beacon length does not match its fields")
    if not 1 <= port <= 65535:
        raise ProtocolError("bad TCP port")
    if not (math.isfinite(ts) and ts >= 0):
        raise ProtocolError("bad timestamp")
    try:
        name = data[HEADER_SIZE : HEADER_SIZE + name_len].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("name is not UTF-8") from None
    problem = _name_problem(name)
    if problem is not None:
        raise ProtocolError(problem)
    der = bytes(data[HEADER_SIZE + name_len : body_len])
    beacon = Beacon(name, port, der, ts, bytes(instance), seq)
    return beacon, SIGNING_CONTEXT + bytes(data[:body_len]), bytes(data[body_len:])


# --------------------------------------------------------------------------- filter


@dataclass(frozen=True)
class BeaconAccepted:
    beacon: Beacon
    source_ip: str
    new_instance: bool  # first beacon of this run of the peer (or first since forgotten)


@dataclass(frozen=True)
class BeaconRejected:
    reason: str
    source_ip: str


class _TokenBucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def refill(self, now: float) -> None:
        # `now` is wall-clock time (beacons carry it): a step back refills nothing
        # and refilling resumes from the new time; a step forward refills to `burst`.
        elapsed = max(0.0, now - self.stamp)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.stamp = now


class _PeerState:
    """What the filter remembers of one key: its last accepted beacon, and its own budget."""

    __slots__ = ("instance", "lane", "seq", "source_ip", "timestamp")

    def __init__(self, beacon: Beacon, source_ip: str, lane: _TokenBucket) -> None:
        self.instance = beacon.instance
        self.seq = beacon.seq
        self.timestamp = beacon.timestamp
        self.source_ip = source_ip
        self.lane = lane


class BeaconFilter:
    """Judges received datagrams; pure (time is passed in), bounded memory.

    Budgets: a beacon that claims a key already accepted from this same address
    is charged to that key's own bucket; any other (a new key, or a known key
    from another address) to the bucket of its source address. Every signature
    check is also charged to one global bucket. So a flood from one address gets
    `burst` checks and then `rate` per second, a flood from many addresses at
    most `global_rate` per second, and several peers behind one address (on
    one host, behind a NAT) do not eat each other's budget.
    """

    def __init__(
        self,
        own_fingerprint: str,
        *,
        max_skew: float = BEACON_MAX_SKEW,
        rate: float = BEACON_VERIFY_RATE,
        burst: float = BEACON_VERIFY_BURST,
        global_rate: float = BEACON_VERIFY_GLOBAL_RATE,
        global_burst: float | None = None,
        max_sources: int = MAX_TRACKED_SOURCES,
        max_peers: int = MAX_TRACKED_PEERS,
    ) -> None:
        self._own = own_fingerprint
        self._max_skew = max_skew
        self._rate = rate
        self._burst = burst
        # One second's worth by default: a LAN-wide restart is not throttled.
        self._global_rate = global_rate
        self._global_burst = global_rate if global_burst is None else global_burst
        self._global: _TokenBucket | None = None
        self._sources: OrderedDict[str, _TokenBucket] = OrderedDict()
        self._peers: OrderedDict[str, _PeerState] = OrderedDict()
        self._max_sources = max_sources
        self._max_peers = max_peers

    @property
    def tracked_sources(self) -> int:
        return len(self._sources)

    @property
    def tracked_peers(self) -> int:
        return len(self._peers)

    def check(self, data: bytes, source_ip: str, now: float) -> BeaconAccepted | BeaconRejected:
        # Everything before the signature check is cheap and bounded by the size.
        if len(data) > BEACON_MAX_SIZE:
            return BeaconRejected(TOO_LARGE, source_ip)
        if len(data) < HEADER_SIZE:
            return BeaconRejected(TOO_SHORT, source_ip)
        try:
            beacon, signed, signature = decode_beacon(data)
        except ProtocolError as exc:
            return BeaconRejected(f"{MALFORMED}: {exc}", source_ip)
        fp = beacon.fingerprint
        if fp == self._own:
            return BeaconRejected(SELF, source_ip)
        if not abs(now - beacon.timestamp) <= self._max_skew:
            return BeaconRejected(STALE, source_ip)
        state = self._peers.get(fp)
        if state is None:
            new_instance = True
        elif beacon.instance == state.instance:
            if beacon.seq <= state.seq:
                return BeaconRejected(REPLAY, source_ip)
            new_instance = False
        else:
            # Another run of the same key: only a later one may take over, so an
            # old run's beacons replayed after a restart are refused.
            if beacon.timestamp <= state.timestamp:
                return BeaconRejected(REPLAY, source_ip)
            new_instance = True
        lane = state.lane if state is not None and state.source_ip == source_ip else None
        if not self._take_token(source_ip, lane, now):
            return BeaconRejected(RATE_LIMITED, source_ip)
        if not verify_signature(beacon.identity_der, signature, signed):
            return BeaconRejected(BAD_SIGNATURE, source_ip)
        if state is None:
            state = _PeerState(beacon, source_ip, _TokenBucket(self._rate, self._burst, now))
            self._peers[fp] = state
            while len(self._peers) > self._max_peers:
                self._peers.popitem(last=False)
        else:
            state.instance, state.seq, state.timestamp = (
                beacon.instance,
                beacon.seq,
                beacon.timestamp,
            )
            state.source_ip = source_ip
            self._peers.move_to_end(fp)
        return BeaconAccepted(beacon, source_ip, new_instance)

    def _take_token(self, source_ip: str, lane: _TokenBucket | None, now: float) -> bool:
        bucket = lane
        if bucket is not None:
            bucket.refill(now)
        else:
            bucket = self._sources.get(source_ip)
            if bucket is None:
                bucket = _TokenBucket(self._rate, self._burst, now)
                self._sources[source_ip] = bucket
                while len(self._sources) > self._max_sources:
                    self._sources.popitem(last=False)
            else:
                self._sources.move_to_end(source_ip)
                bucket.refill(now)
        shared = self._global
        if shared is None:
            shared = self._global = _TokenBucket(self._global_rate, self._global_burst, now)
        else:
            shared.refill(now)
        if bucket.tokens < 1 or shared.tokens < 1:
            return False
        bucket.tokens -= 1
        shared.tokens -= 1
        return True


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
        self._bucket = _TokenBucket(rate, burst, time.monotonic())
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
    ) -> None:
        problem = _name_problem(name)
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
            try:
                transport.sendto(data, (target, self._port))
            except OSError as exc:
                self._error_received(exc)

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
        try:
            self._on_beacon(result)
        except Exception:
            log.exception("discovery callback failed")

    def _error_received(self, exc: Exception) -> None:
        if self._error_log.allow():
            log.warning("discovery socket error: %s", exc)
