"""Discovery beacons, pure: their wire format, encoding, and the filter that judges them.

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
    6       2     D: identity key length in bytes (1..MAX_IDENTITY_KEY_BYTES)
    8       2     S: signature length in bytes (1..MAX_SIGNATURE_BYTES)
    10      2     TCP port (1..65535)
    12      8     timestamp: IEEE 754 double, unix seconds of the sender's clock (0..MAX_TIMESTAMP)
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
new instance needs a newer timestamp than the last accepted beacon); the key
(RSA of 2048 to 4096 bits with e = 65537, parsed without RSA arithmetic);
budget; signature. The budget (token buckets: one per source address, one per
known key at the address it was accepted from, one for all, one reserved for
known keys) is the only way to the RSA verification, so a flood costs little.
A check that fails is charged to the source address, never to the key it
claimed, so junk carrying a friend's key cannot spend the friend's own budget.
Everything before it is bounded
parsing and dictionary lookups, and putting it first means that junk, our own
beacons, duplicate copies (one beacon sent to several broadcast addresses),
replays and keys that would make a check costly spend no budget and no
verification. The tables behind the buckets and
the replay state are LRU-capped, so a flood from many addresses or keys cannot
grow memory without bound. A key pushed out of the replay table could have a
beacon from the last BEACON_MAX_SKEW seconds replayed once; that costs the
attacker a flood of valid signatures first, and the session handshake still
authenticates whoever answers.
"""

from __future__ import annotations

import logging
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

from crypto_utils import Identity, fingerprint_of, load_public_key, verify_signature
from peerchat.errors import ProtocolError
from peerchat.limits import (
    BEACON_MAX_SIZE,
    BEACON_MAX_SKEW,
    BEACON_VERIFY_BURST,
    BEACON_VERIFY_GLOBAL_RATE,
    BEACON_VERIFY_KNOWN_RATE,
    BEACON_VERIFY_RATE,
    MAX_IDENTITY_KEY_BYTES,
    MAX_NAME_CHARS,
    MAX_SIGNATURE_BYTES,
    MAX_TIMESTAMP,
)
from peerchat.policy.sanitize import validate_name

log = logging.getLogger(__name__)

MAGIC: Final = b"PCHB"
VERSION: Final = 1
SIGNING_CONTEXT: Final = b"peer_chat/1 discovery beacon\x00"
INSTANCE_SIZE: Final = 16
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
BAD_KEY: Final = "bad key"
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


def name_problem(name: str) -> str | None:
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
    problem = name_problem(name)
    if problem is not None:
        raise ValueError(problem)
    if not 1 <= tcp_port <= 65535:
        raise ValueError(f"TCP port {tcp_port} is out of range")
    if len(instance) != INSTANCE_SIZE:
        raise ValueError(f"instance must be {INSTANCE_SIZE} bytes")
    if not 0 <= seq <= _MAX_SEQ:
        raise ValueError("sequence number out of range")
    if not 0 <= now <= MAX_TIMESTAMP:
        raise ValueError("timestamp must be a unix time from 1970 to 3000")
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
    if der_len > MAX_IDENTITY_KEY_BYTES:
        raise ProtocolError(f"identity key of {der_len} bytes is over {MAX_IDENTITY_KEY_BYTES}")
    if sig_len > MAX_SIGNATURE_BYTES:
        raise ProtocolError(f"signature of {sig_len} bytes is over {MAX_SIGNATURE_BYTES}")
    body_len = HEADER_SIZE + name_len + der_len
    if body_len + sig_len != len(data):
        raise ProtocolError("beacon length does not match its fields")
    if not 1 <= port <= 65535:
        raise ProtocolError("bad TCP port")
    if not 0 <= ts <= MAX_TIMESTAMP:  # also false for NaN
        raise ProtocolError("bad timestamp")
    try:
        name = data[HEADER_SIZE : HEADER_SIZE + name_len].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("name is not UTF-8") from None
    problem = name_problem(name)
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


class TokenBucket:
    """`rate` tokens a second up to `burst`; refilled from the time passed in."""

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

    def __init__(self, beacon: Beacon, source_ip: str, lane: TokenBucket) -> None:
        self.instance = beacon.instance
        self.seq = beacon.seq
        self.timestamp = beacon.timestamp
        self.source_ip = source_ip
        self.lane = lane


class BeaconFilter:
    """Judges received datagrams; pure (time is passed in), bounded memory.

    Budgets: a beacon that claims a key already accepted from this same address
    takes a check from that key's own bucket and from a pool reserved for known
    keys (`known_rate` per second); the key's bucket pays only if the signature
    holds, and a failed check is charged to the source address instead. Any
    other beacon (a new key, or a known key from another address) is charged to
    the bucket of its source address and to one global bucket. So a flood from
    one address gets `burst` checks and then `rate` per second, a flood from
    many addresses at most `global_rate` per second, junk carrying a known key
    at most `known_rate` per second and never that key's own budget, and several
    peers behind one address (on one host, behind a NAT) do not eat each other's
    budget.
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
        known_rate: float = BEACON_VERIFY_KNOWN_RATE,
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
        self._global: TokenBucket | None = None
        self._known_rate = known_rate
        self._known: TokenBucket | None = None  # reserved for keys already accepted
        self._sources: OrderedDict[str, TokenBucket] = OrderedDict()
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
        try:  # a key that could make the check costly is refused before it spends any budget
            load_public_key(beacon.identity_der)
        except ProtocolError as exc:
            return BeaconRejected(f"{BAD_KEY}: {exc}", source_ip)
        lane = state.lane if state is not None and state.source_ip == source_ip else None
        if not self._take_token(source_ip, lane, now):
            return BeaconRejected(RATE_LIMITED, source_ip)
        if not verify_signature(beacon.identity_der, signature, signed):
            if lane is not None:
                self._charge_failure(source_ip, lane, now)
            return BeaconRejected(BAD_SIGNATURE, source_ip)
        if state is None:
            state = _PeerState(beacon, source_ip, TokenBucket(self._rate, self._burst, now))
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

    def _take_token(self, source_ip: str, lane: TokenBucket | None, now: float) -> bool:
        if lane is not None:
            lane.refill(now)
            bucket = lane
            shared = self._known
            if shared is None:
                shared = self._known = TokenBucket(self._known_rate, self._known_rate, now)
        else:
            bucket = self._source_bucket(source_ip, now)
            shared = self._global
            if shared is None:
                shared = self._global = TokenBucket(self._global_rate, self._global_burst, now)
        shared.refill(now)
        if bucket.tokens < 1 or shared.tokens < 1:
            return False
        bucket.tokens -= 1
        shared.tokens -= 1
        return True

    def _charge_failure(self, source_ip: str, lane: TokenBucket, now: float) -> None:
        """A check taken from a key's own bucket failed: the source pays it, not the key."""
        lane.tokens = min(lane.burst, lane.tokens + 1)
        source = self._source_bucket(source_ip, now)
        source.tokens = max(0.0, source.tokens - 1)

    def _source_bucket(self, source_ip: str, now: float) -> TokenBucket:
        bucket = self._sources.get(source_ip)
        if bucket is None:
            bucket = TokenBucket(self._rate, self._burst, now)
            self._sources[source_ip] = bucket
            while len(self._sources) > self._max_sources:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(source_ip)
            bucket.refill(now)
        return bucket
