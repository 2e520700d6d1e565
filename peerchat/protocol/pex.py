"""Peer exchange, pure: peers tell each other, over their sessions, whom else they reach.

A session peer S sends PeerExchange messages (messages.py). Each carries:

- S's **own** beacon (the discovery beacon format and signature, signed by
  S's key afresh every `self_interval` seconds), so that the peers of S can
  pass S on to others with S's own signature; and
- **records**: the own beacons of the *other* peers S holds sessions with,
  exactly as those peers signed them, each with the address at which S
  reached that peer (a hint).

What a record proves: the key in the beacon signed "I am called NAME and
listen on TCP port PORT" at the beacon's time. The key is the peer; the
fingerprint is derived from the key, never sent, so no record signed by one
key can speak for another. What it does not prove: the address. S attaches
it and nobody signs it, so the receiver only learns a hint, to be confirmed by
a handshake at that address (AddressBook) before the peer is believed to be
there.

How a receiver judges a record, cheapest first: the sending peer's budget
(records per minute; a flood beyond it is dropped before any parsing); the
address (never 0.0.0.0/8, multicast, broadcast, reserved, or loopback from a
peer that is not itself on loopback); decode; our own key; a record about the
sender itself (that is what the own field is for); freshness (at most
`max_age` old, at most `max_skew` in the future); the run (a beacon of an older
run of that key than one already accepted is a replay); a beacon already
verified (same bytes) needs no second check; then the global verification
budget, the only way to the RSA signature check. Dropped records are counted
by reason; those an honest peer never sends (a bad address, a bad signature,
malformed bytes, a flood, someone else's own beacon) also count as hostile.

Nothing learned from a record is ever passed on: a peer relays only the own
beacons its session peers sent it themselves, over their own sessions.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Final

from crypto_utils import Identity, verify_signature
from peerchat.errors import ProtocolError
from peerchat.limits import (
    BEACON_MAX_SKEW,
    PEX_MAX_AGE,
    PEX_MAX_RECORDS,
    PEX_OWN_PER_MINUTE,
    PEX_RECORDS_PER_MINUTE,
    PEX_SELF_INTERVAL,
    PEX_VERIFY_PER_MINUTE,
)
from peerchat.protocol.beacon import Beacon, TokenBucket, decode_beacon, encode_beacon
from peerchat.protocol.messages import PeerExchange, PexRecord

# Why a record or an own beacon was dropped (keys of PeerExchangeState.counts).
NO_SESSION: Final = "no session"  # from a peer the node has not reported as connected
RATE_LIMITED: Final = "rate limited"
BAD_ADDRESS: Final = "bad address"
MALFORMED: Final = "malformed"
SELF: Final = "self"
ABOUT_SENDER: Final = "about the sender"
FOREIGN_OWN: Final = "own beacon of another key"
STALE: Final = "stale"
REPLAY: Final = "replay"
BAD_SIGNATURE: Final = "bad signature"
# Counted too, but not drops.
ACCEPTED: Final = "accepted"
DUPLICATE: Final = "duplicate"  # same bytes as a record already verified: accepted, not re-checked

HOSTILE: Final = frozenset(
    {RATE_LIMITED, BAD_ADDRESS, MALFORMED, ABOUT_SENDER, FOREIGN_OWN, BAD_SIGNATURE}
)

MAX_TRACKED_KEYS: Final = 1024
RELAY_HOLD: Final = 2.0  # seconds the peer with the larger fingerprint waits before relaying
MAX_VERIFIED_DIGESTS: Final = 4096
SEND_SHARE: Final = 0.75  # of the receiver's per-peer budget an honest sender uses
RELAY_MARGIN: Final = 15.0  # seconds of max_age kept for transit and clock skew

_THIS_NETWORK: Final = ipaddress.IPv4Network("0.0.0.0/8")
_RESERVED: Final = ipaddress.IPv4Network("240.0.0.0/4")  # 255.255.255.255 included


def address_problem(host: str, sender_host: str, refused: Collection[str] = ()) -> str | None:
    """Why `host` is no address to dial for a peer, as passed on by a peer at `sender_host`.

    `refused` holds further addresses never to dial (this host's directed
    broadcast addresses). None if it may be tried.
    """
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        return "not an IPv4 address"
    if ip in _THIS_NETWORK:
        return "unspecified address"
    if ip.is_multicast:
        return "multicast address"
    if ip in _RESERVED or host in refused:
        return "broadcast or reserved address"
    if ip.is_loopback and not _is_loopback(sender_host):
        return "loopback address from a peer not on loopback"
    return None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.IPv4Address(host).is_loopback
    except ValueError:
        return False


class OwnBeacon:
    """This peer's beacon, signed afresh on each call: one instance per run, seq + 1 each time."""

    def __init__(self, identity: Identity, name: str, tcp_port: int, instance: bytes) -> None:
        self._identity = identity
        self._name = name
        self._port = tcp_port
        self._instance = instance
        self._seq = 0

    @property
    def instance(self) -> bytes:
        return self._instance

    def sign(self, now: float) -> bytes:
        data = encode_beacon(self._identity, self._name, self._port, self._instance, self._seq, now)
        self._seq += 1
        return data


@dataclass(frozen=True)
class PexHint:
    """A verified record: the key of `fingerprint` may be reached at host:port, says `via`."""

    fingerprint: str
    name: str
    host: str
    port: int
    instance: bytes  # the run of that peer the beacon comes from
    via: str  # fingerprint of the session peer that passed it on


@dataclass
class _Session:
    host: str  # the address the node holds for this peer (passed on to others as the hint)
    port: int
    own_sent_at: float | None = None
    first_sent_at: float | None = None
    sent: dict[str, bytes] = field(default_factory=dict)  # fingerprint -> instance passed on
    knows: set[str] = field(default_factory=set)  # peers it passed on to us: it has them
    out: TokenBucket | None = None


@dataclass
class _Relayable:
    beacon: Beacon
    raw: bytes
    digest: bytes


@dataclass
class _Run:
    instance: bytes
    timestamp: float  # of the newest beacon accepted from this run


class PeerExchangeState:
    """What to tell each session peer, and what to believe of what they tell; pure.

    `now` is wall-clock time everywhere (beacons carry it). The node reports
    sessions with `session_up`/`session_down`, passes every PeerExchange it
    receives to `receive`, and sends what `outgoing` returns (call it every
    second or so, and right after a session comes up).
    """

    def __init__(
        self,
        own_fingerprint: str,
        sign_own: Callable[[float], bytes],
        *,
        self_interval: float = PEX_SELF_INTERVAL,
        max_age: float = PEX_MAX_AGE,
        max_skew: float = BEACON_MAX_SKEW,
        max_records: int = PEX_MAX_RECORDS,
        records_per_minute: float = PEX_RECORDS_PER_MINUTE,
        own_per_minute: float = PEX_OWN_PER_MINUTE,
        verify_per_minute: float = PEX_VERIFY_PER_MINUTE,
        refused_addresses: Collection[str] = (),
        max_keys: int = MAX_TRACKED_KEYS,
    ) -> None:
        self._own = own_fingerprint
        self._sign_own = sign_own
        self._self_interval = self_interval
        self._max_age = max_age
        self._max_skew = max_skew
        self._max_records = max_records
        self._records_rate = records_per_minute / 60
        self._records_burst = records_per_minute
        self._own_rate = own_per_minute / 60
        self._own_burst = max(2.0, own_per_minute / 2)
        self._verify_rate = verify_per_minute / 60
        self._verify_burst = verify_per_minute / 6
        self._refused = frozenset(refused_addresses)
        self._max_keys = max_keys
        self._sessions: dict[str, _Session] = {}
        self._relayable: dict[str, _Relayable] = {}  # session peer -> its own latest beacon
        self._runs: OrderedDict[str, _Run] = OrderedDict()
        self._verified: OrderedDict[bytes, None] = OrderedDict()  # digests of checked beacons
        self._in_buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._own_buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._verify: TokenBucket | None = None
        self._own_raw: bytes | None = None
        self._own_signed_at = 0.0
        self.counts: dict[str, int] = {}

    # -- what the node reports -------------------------------------------------

    def session_up(self, fingerprint: str, host: str, port: int) -> None:
        """A session with `fingerprint` is established; host:port is where the node has it."""
        session = self._sessions.get(fingerprint)
        if session is None:
            self._sessions[fingerprint] = _Session(host, port)
        else:
            session.host, session.port = host, port

    def session_down(self, fingerprint: str) -> None:
        self._sessions.pop(fingerprint, None)
        self._relayable.pop(fingerprint, None)
        for session in self._sessions.values():
            session.sent.pop(fingerprint, None)
            session.knows.discard(fingerprint)

    @property
    def hostile(self) -> int:
        """Records and own beacons dropped for what an honest peer never sends."""
        return sum(n for reason, n in self.counts.items() if reason in HOSTILE)

    def relayable(self) -> list[str]:
        """Fingerprints whose own beacon this peer holds and may pass on."""
        return list(self._relayable)

    # -- receiving ---------------------------------------------------------------

    def receive(
        self, sender: str, sender_host: str, message: PeerExchange, now: float
    ) -> list[PexHint]:
        """The hints in a PeerExchange from session peer `sender` (seen at `sender_host`)."""
        if sender not in self._sessions:
            self._count(NO_SESSION, (1 if message.own_beacon else 0) + len(message.records))
            return []
        if message.own_beacon:
            self._receive_own(sender, message.own_beacon, now)
        hints: list[PexHint] = []
        rate, burst = self._records_rate, self._records_burst
        bucket = self._bucket(self._in_buckets, sender, rate, burst, now)
        for record in message.records:
            if not _take(bucket, now):
                self._count(RATE_LIMITED)
                continue
            verdict = self._judge(record, sender, sender_host, now)
            if isinstance(verdict, PexHint):
                hints.append(verdict)
                knows = self._sessions[sender].knows
                if len(knows) < self._max_keys:
                    knows.add(verdict.fingerprint)
            else:
                self._count(verdict)
        return hints

    def _receive_own(self, sender: str, data: bytes, now: float) -> None:
        try:
            beacon, signed, signature = decode_beacon(data)
        except ProtocolError:
            self._count(MALFORMED)
            return
        if beacon.fingerprint != sender:
            self._count(FOREIGN_OWN)
            return
        if not abs(now - beacon.timestamp) <= self._max_skew:
            self._count(STALE)
            return
        held = self._relayable.get(sender)
        if held is not None:
            if beacon.instance == held.beacon.instance:
                if beacon.seq <= held.beacon.seq:
                    self._count(REPLAY)
                    return
            elif beacon.timestamp <= held.beacon.timestamp:
                self._count(REPLAY)
                return
        bucket = self._bucket(self._own_buckets, sender, self._own_rate, self._own_burst, now)
        if not _take(bucket, now):
            self._count(RATE_LIMITED)
            return
        if not self._spend_verification(now):
            self._count(RATE_LIMITED)
            return
        if not verify_signature(beacon.identity_der, signature, signed):
            self._count(BAD_SIGNATURE)
            return
        digest = _digest(data)
        self._remember_verified(digest)
        self._note_run(beacon)
        self._relayable[sender] = _Relayable(beacon, data, digest)
        self._count(ACCEPTED)

    def _judge(self, record: PexRecord, sender: str, sender_host: str, now: float) -> PexHint | str:
        if address_problem(record.host, sender_host, self._refused) is not None:
            return BAD_ADDRESS
        try:
            beacon, signed, signature = decode_beacon(record.beacon)
        except ProtocolError:
            return MALFORMED
        fp = beacon.fingerprint
        if fp == self._own:
            return SELF
        if fp == sender:
            return ABOUT_SENDER
        if not -self._max_skew <= now - beacon.timestamp <= self._max_age:
            return STALE
        if self._from_older_run(beacon):
            return REPLAY
        digest = _digest(record.beacon)
        if digest in self._verified:
            self._verified.move_to_end(digest)
            self._count(DUPLICATE)
        else:
            if not self._spend_verification(now):
                return RATE_LIMITED
            if not verify_signature(beacon.identity_der, signature, signed):
                return BAD_SIGNATURE
            self._remember_verified(digest)
            self._count(ACCEPTED)
        self._note_run(beacon)
        return PexHint(fp, beacon.name, record.host, record.port, beacon.instance, sender)

    # -- sending -------------------------------------------------------------------

    def outgoing(self, now: float) -> list[tuple[str, PeerExchange]]:
        """(session peer, message) pairs to send now; empty when nothing is due."""
        sends: list[tuple[str, PeerExchange]] = []
        for fp, session in self._sessions.items():
            own = b""
            if session.own_sent_at is None or not (
                0 <= now - session.own_sent_at < self._self_interval
            ):
                own = self._fresh_own(now)
                session.own_sent_at = now
            records = self._records_for(fp, session, now)
            if own or records:
                sends.append((fp, PeerExchange(own, tuple(records))))
        return sends

    def _fresh_own(self, now: float) -> bytes:
        # One signature serves every session that is due within a short while, and
        # is young enough to pass the receiver's freshness check with room to spare.
        if self._own_raw is None or not 0 <= now - self._own_signed_at < self._max_skew / 2:
            self._own_raw = self._sign_own(now)
            self._own_signed_at = now
        return self._own_raw

    def _records_for(self, fp: str, session: _Session, now: float) -> list[PexRecord]:
        if session.first_sent_at is None:
            session.first_sent_at = now
        if self._own > fp and 0 <= now - session.first_sent_at < RELAY_HOLD:
            # Both ends of a new session would tell each other about the same peers
            # at once; one of them waits, and then skips those it was told about.
            return []
        if session.out is None:
            rate = self._records_rate * SEND_SHARE
            session.out = TokenBucket(rate, self._records_burst * SEND_SHARE, now)
        else:
            session.out.refill(now)
        records: list[PexRecord] = []
        for other, held in self._relayable.items():
            if other == fp or other in session.knows:
                continue
            if session.sent.get(other) == held.beacon.instance:
                continue
            if now - held.beacon.timestamp > self._max_age - RELAY_MARGIN:
                continue  # too old to be believed on arrival; its next own beacon will do
            where = self._sessions.get(other)
            if where is None or address_problem(where.host, session.host, self._refused):
                continue  # the receiver would refuse it (a loopback address, say)
            if len(records) >= self._max_records or session.out.tokens < 1:
                break
            session.out.tokens -= 1
            records.append(PexRecord(where.host, where.port, held.raw))
            session.sent[other] = held.beacon.instance
        return records

    # -- bookkeeping -----------------------------------------------------------------

    def _count(self, reason: str, n: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + n

    def _bucket(
        self,
        table: OrderedDict[str, TokenBucket],
        key: str,
        rate: float,
        burst: float,
        now: float,
    ) -> TokenBucket:
        bucket = table.get(key)
        if bucket is None:
            bucket = table[key] = TokenBucket(rate, burst, now)
            while len(table) > self._max_keys:
                table.popitem(last=False)
        else:
            table.move_to_end(key)
        return bucket

    def _spend_verification(self, now: float) -> bool:
        if self._verify is None:
            self._verify = TokenBucket(self._verify_rate, self._verify_burst, now)
        return _take(self._verify, now)

    def _remember_verified(self, digest: bytes) -> None:
        self._verified[digest] = None
        while len(self._verified) > MAX_VERIFIED_DIGESTS:
            self._verified.popitem(last=False)

    def _from_older_run(self, beacon: Beacon) -> bool:
        """Whether `beacon` is of another run of its key than the latest one accepted, and older.

        A new run (a restart) takes over only with a later timestamp, so an old
        run's beacons cannot come back once its successor has been seen.
        """
        run = self._runs.get(beacon.fingerprint)
        if run is None or beacon.instance == run.instance:
            return False
        return beacon.timestamp <= run.timestamp

    def _note_run(self, beacon: Beacon) -> None:
        run = self._runs.get(beacon.fingerprint)
        if run is None or beacon.instance != run.instance:
            if run is None or beacon.timestamp > run.timestamp:
                self._runs[beacon.fingerprint] = _Run(beacon.instance, beacon.timestamp)
        else:
            run.timestamp = max(run.timestamp, beacon.timestamp)
        self._runs.move_to_end(beacon.fingerprint)
        while len(self._runs) > self._max_keys:
            self._runs.popitem(last=False)


def _take(bucket: TokenBucket, now: float) -> bool:
    bucket.refill(now)
    if bucket.tokens < 1:
        return False
    bucket.tokens -= 1
    return True


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
