"""Where each key can be reached: claims from the network, and addresses a handshake confirmed.

Pure (time is passed in) and bounded. The node's one answer to "where is key K".

A **claim** says "key K is at host:port" and comes with its source: a
broadcast beacon, an mDNS record, a peer-exchange record (via a named session
peer), an inbound session (the hello's listening port is the peer's word), or
the user typing an address. Anyone on the network can claim anything, so a
claim is never an answer to "where is K": it is only a place to try.

A **confirmed** address is one where a handshake we initiated was completed by
K. Only `confirm` adds one: the session owner after such a handshake, and the
directory at start for the addresses the store says last worked.
`addresses(K)` and `key_at(address)` answer from confirmed addresses alone.
When another key completes a handshake at an address confirmed for K, the
address moves to that key and `confirm` says so (`Displaced`), so the node
tells the user; no claim can move it.

**Seeds** are addresses the user gave (`--peer HOST:PORT`): they may be dialled
without a key, and are kept trying with backoff while their peer is away.

Automatic dialling (`due`) goes only to seeds, to confirmed addresses, and to
claims *for confirmation*: each claim a few times with growing gaps, all of
them within one rate budget, never while the key is connected. So a flood of
claims cannot make this peer dial without bound, and a claim for a key that
never answers costs a few attempts, then nothing for a long while.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Final

from peerchat.limits import MAX_SEEDS, RECONNECT_MAX, RECONNECT_MIN

Address = tuple[str, int]

MAX_KEYS: Final = 1024
MAX_CONFIRMED_PER_KEY: Final = 4
CLAIM_TTL: Final = 120.0  # seconds a claim counts as "the key is around" after it was heard
CLAIM_ATTEMPTS: Final = 3  # confirmation dials per claim before it rests
CLAIM_REST: Final = 600.0  # seconds a claim that never confirmed rests before new attempts
DIAL_RATE: Final = 2.0  # automatic dials per second, all kinds together
DIAL_BURST: Final = 32.0


class Found(enum.Enum):
    """How an address was learned; what option 2 says."""

    BROADCAST = "broadcast"
    MDNS = "mDNS"
    SEED = "seed"
    EXCHANGE = "via"  # peer exchange: `Source.via_name` passed it on
    INBOUND = "connected to us"
    TYPED = "by address"  # the user typed it (options 1 and 4)
    STORED = "earlier"  # confirmed in an earlier run: the store's address that last worked


# Claims dialled by themselves to confirm them. A peer never dials an address
# the user did not give or a handshake did not confirm: a beacon's source
# address and an mDNS record are anyone's to forge, so they are only listed or
# dialled when the user names the peer. A peer-exchange record is the key's own
# signed beacon, passed on by a peer authenticated by its session, with the
# address at which that peer reached it.
SELF_CONFIRMED_SOURCES: Final = frozenset({Found.EXCHANGE})

# Claims kept per key and kind: enough for a peer with a few interfaces,
# too few for a flood from one kind to push out the others.
_CLAIMS_PER_KIND: Final = {kind: 2 for kind in Found} | {Found.EXCHANGE: 4}


@dataclass(frozen=True)
class Source:
    kind: Found
    via: str | None = None  # EXCHANGE: the fingerprint of the peer that passed it on
    via_name: str | None = None  # ... and its name then

    def describe(self) -> str:
        if self.kind is Found.EXCHANGE:
            return f"via {self.via_name or (self.via or '?')[:8]}"
        return str(self.kind.value)


class DialKind(enum.Enum):
    SEED = "seed"  # an address the user gave
    RECONNECT = "reconnect"  # a confirmed address of a key that is around but not connected
    CONFIRM = "confirm"  # a claim, dialled to see whether the key answers there


@dataclass(frozen=True)
class Dial:
    address: Address
    fingerprint: str | None  # the key expected there; None for a seed never reached
    kind: DialKind


@dataclass(frozen=True)
class Displaced:
    """A handshake at `address` was completed by `current`, where `previous` was confirmed."""

    address: Address
    previous: str
    current: str


@dataclass
class _Claim:
    source: Source
    last_seen: float
    attempts: int = 0
    next_try: float = 0.0


@dataclass
class _Confirmed:
    source: Source
    last_worked: float


@dataclass
class _Entry:
    name: str | None = None
    claims: dict[tuple[Address, Found, str | None], _Claim] = field(default_factory=dict)
    confirmed: dict[Address, _Confirmed] = field(default_factory=dict)
    attempts: int = 0  # reconnect attempts to confirmed addresses since it last worked
    next_try: float = 0.0


@dataclass
class _Seed:
    fingerprint: str | None = None  # the key that last completed a handshake there
    attempts: int = 0
    next_try: float = 0.0
    said_down: bool = False


def _backoff(attempts: int) -> float:
    """RECONNECT_MIN, doubling with each attempt, up to RECONNECT_MAX (the node's backoff)."""
    return float(min(RECONNECT_MAX, RECONNECT_MIN * 2 ** max(0, attempts - 1)))


class AddressBook:
    def __init__(
        self,
        *,
        max_keys: int = MAX_KEYS,
        max_confirmed_per_key: int = MAX_CONFIRMED_PER_KEY,
        max_seeds: int = MAX_SEEDS,
        claim_ttl: float = CLAIM_TTL,
        claim_attempts: int = CLAIM_ATTEMPTS,
        claim_rest: float = CLAIM_REST,
        dial_rate: float = DIAL_RATE,
        dial_burst: float = DIAL_BURST,
    ) -> None:
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently touched first
        self._at: dict[Address, str] = {}  # confirmed address -> key
        self._seeds: dict[Address, _Seed] = {}
        self._max_keys = max_keys
        self._max_confirmed = max_confirmed_per_key
        self._max_seeds = max_seeds
        self._claim_ttl = claim_ttl
        self._claim_attempts = claim_attempts
        self._claim_rest = claim_rest
        self._dial_rate = dial_rate
        self._dial_burst = dial_burst
        self._tokens = dial_burst
        self._stamp: float | None = None

    # -- claims -------------------------------------------------------------------

    def claim(
        self,
        fingerprint: str,
        address: Address,
        source: Source,
        now: float,
        name: str | None = None,
    ) -> bool:
        """Record that `source` says `fingerprint` is at `address`; True if that is news."""
        entry = self._touch(fingerprint)
        if name is not None:
            entry.name = name
        key = (address, source.kind, source.via)
        known = entry.claims.get(key)
        if known is not None:
            known.last_seen = now
            known.source = source
            return False
        if source.kind is Found.EXCHANGE:
            # One address per key from each peer that passes it on: a newer word replaces its older.
            for old in [k for k in entry.claims if k[1] is Found.EXCHANGE and k[2] == source.via]:
                del entry.claims[old]
        same_kind = [k for k in entry.claims if k[1] is source.kind]
        while len(same_kind) >= _CLAIMS_PER_KIND[source.kind]:
            oldest = min(same_kind, key=lambda k: entry.claims[k].last_seen)
            del entry.claims[oldest]
            same_kind.remove(oldest)
        entry.claims[key] = _Claim(source, now)
        self._evict()
        return fingerprint in self._entries

    # -- confirmation (the node, after a handshake it initiated) -------------------

    def confirm(
        self, fingerprint: str, address: Address, now: float, source: Source | None = None
    ) -> Displaced | None:
        """A handshake we initiated to `address` was completed by `fingerprint`.

        `source` says how the address was learned when the node knows better
        than the claims (TYPED for an address the user typed); otherwise the
        claim or seed that led here is kept as the source.
        """
        displaced = None
        previous = self._at.get(address)
        if previous is not None and previous != fingerprint:
            old = self._entries.get(previous)
            if old is not None:
                old.confirmed.pop(address, None)
            displaced = Displaced(address, previous, fingerprint)
        for other_fp, other in self._entries.items():
            if other_fp != fingerprint:  # whoever else was said to be here is not
                for key in [k for k in other.claims if k[0] == address]:
                    del other.claims[key]
        entry = self._touch(fingerprint)
        how = source or self._source_of(entry, address)
        known = entry.confirmed.get(address)
        if known is None:
            entry.confirmed[address] = _Confirmed(how, now)
        else:
            known.last_worked = now
            if source is not None:
                known.source = source
        for key in [k for k in entry.claims if k[0] == address]:
            del entry.claims[key]
        entry.attempts, entry.next_try = 0, 0.0
        self._at[address] = fingerprint
        while len(entry.confirmed) > self._max_confirmed:
            stale = min(entry.confirmed, key=lambda a: entry.confirmed[a].last_worked)
            del entry.confirmed[stale]
            self._at.pop(stale, None)
        seed = self._seeds.get(address)
        if seed is not None:
            seed.fingerprint = fingerprint
            seed.attempts, seed.next_try, seed.said_down = 0, 0.0, False
        self._evict()
        return displaced

    def dial_failed(self, address: Address) -> bool:
        """A dial that `due` returned for `address` ended without a handshake.

        (`due` has counted the attempt already.) True only for the first
        failure of a seed since it last answered, so that the node says "not
        reachable" once, not on every retry.
        """
        seed = self._seeds.get(address)
        if seed is None or seed.said_down:
            return False
        seed.said_down = True
        return True

    def _claim_tried(self, claim: _Claim, now: float) -> None:
        claim.attempts += 1
        if claim.attempts >= self._claim_attempts:
            claim.attempts = 0
            claim.next_try = now + self._claim_rest
        else:
            claim.next_try = now + _backoff(claim.attempts) * 2

    # -- answers --------------------------------------------------------------------

    def key_at(self, address: Address) -> str | None:
        """The key a handshake last confirmed at `address`; claims never answer this."""
        return self._at.get(address)

    def addresses(self, fingerprint: str) -> list[Address]:
        """Confirmed addresses of a key, the one that last worked first."""
        entry = self._entries.get(fingerprint)
        if entry is None:
            return []
        return sorted(entry.confirmed, key=lambda a: entry.confirmed[a].last_worked, reverse=True)

    def best(self, fingerprint: str) -> Address | None:
        found = self.addresses(fingerprint)
        return found[0] if found else None

    def claimed(self, fingerprint: str) -> list[tuple[Address, Source]]:
        """What the network says about a key, most recent first (not to be believed)."""
        entry = self._entries.get(fingerprint)
        if entry is None:
            return []
        claims = sorted(entry.claims.items(), key=lambda kv: kv[1].last_seen, reverse=True)
        return [(key[0], claim.source) for key, claim in claims]

    def name(self, fingerprint: str) -> str | None:
        entry = self._entries.get(fingerprint)
        return entry.name if entry is not None else None

    def sources(self, fingerprint: str) -> list[Source]:
        """How a key was found: confirmed addresses' sources first, then the claims'."""
        entry = self._entries.get(fingerprint)
        if entry is None:
            return []
        confirmed = sorted(entry.confirmed.values(), key=lambda c: c.last_worked, reverse=True)
        claims = sorted(entry.claims.values(), key=lambda c: c.last_seen, reverse=True)
        return [c.source for c in confirmed] + [c.source for c in claims]

    def found_by(self, fingerprint: str) -> list[str]:
        """How a key was found, for option 2: confirmed sources first, then claims."""
        said: list[str] = []
        for source in self.sources(fingerprint):
            text = source.describe()
            if text not in said:
                said.append(text)
        return said

    def forget(self, fingerprint: str) -> None:
        entry = self._entries.pop(fingerprint, None)
        if entry is not None:
            for address in entry.confirmed:
                if self._at.get(address) == fingerprint:
                    del self._at[address]

    def __len__(self) -> int:
        return len(self._entries)

    # -- seeds -------------------------------------------------------------------------

    def add_seed(self, address: Address) -> bool:
        """An address the user gave; False when MAX_SEEDS are already kept."""
        if address in self._seeds:
            return True
        if len(self._seeds) >= self._max_seeds:
            return False
        self._seeds[address] = _Seed(fingerprint=self._at.get(address))
        return True

    def remove_seed(self, address: Address) -> None:
        self._seeds.pop(address, None)

    def seeds(self) -> list[tuple[Address, str | None]]:
        """Each seed and the key that last answered there (None: never reached)."""
        return [(address, seed.fingerprint) for address, seed in self._seeds.items()]

    # -- automatic dialling ------------------------------------------------------------

    def due(self, now: float, connected: Collection[str]) -> list[Dial]:
        """What to dial now: seeds, confirmed addresses, claims to confirm; within the budget.

        Nothing for a key in `connected` (it has a session). Each returned dial
        is counted as attempted: report how it went with `confirm` or
        `dial_failed`; one that is never reported waits its backoff all the same.
        """
        self._refill(now)
        dials: list[Dial] = []
        for address, seed in self._seeds.items():
            if seed.next_try > now or seed.fingerprint in connected:
                continue
            if not self._spend():
                return dials
            seed.attempts += 1
            seed.next_try = now + _backoff(seed.attempts)
            dials.append(Dial(address, seed.fingerprint, DialKind.SEED))
        seeded = {d.address for d in dials}
        for fp, entry in self._entries.items():
            if fp in connected or not self._around(entry, now):
                continue
            dial = self._next_dial(fp, entry, now, seeded, connected)
            if dial is None:
                continue
            if not self._spend():
                return dials
            dials.append(dial)
        return dials

    def next_due(self, now: float, connected: Collection[str]) -> float | None:
        """The earliest time `due` may return a dial (None: nothing will be due by itself).

        Like `due`, it leaves out keys in `connected`, keys nobody spoke of
        lately, claims too old to count and claims at an address already
        confirmed (for that key, or for a connected one): nothing is reported
        due that `due` would skip, so the caller never wakes in a loop.
        """
        times = [s.next_try for s in self._seeds.values() if s.fingerprint not in connected]
        for fp, entry in self._entries.items():
            if fp in connected or not self._around(entry, now):
                continue
            if entry.confirmed:
                times.append(entry.next_try)
            for key, claim in entry.claims.items():
                if key[1] not in SELF_CONFIRMED_SOURCES:
                    continue
                there = self._at.get(key[0])
                if there == fp or (there is not None and there in connected):
                    continue
                if now - claim.last_seen <= self._claim_ttl:
                    times.append(claim.next_try)
        if not times:
            return None
        due = min(times)
        if self._tokens < 1 and self._stamp is not None:
            due = max(due, self._stamp + (1 - self._tokens) / self._dial_rate)
        return due

    def _around(self, entry: _Entry, now: float) -> bool:
        """Whether anyone said lately that this key is there."""
        return any(now - claim.last_seen <= self._claim_ttl for claim in entry.claims.values())

    def _next_dial(
        self,
        fp: str,
        entry: _Entry,
        now: float,
        busy: set[Address],
        connected: Collection[str],
    ) -> Dial | None:
        """One dial for a key that is around and not connected, or None if none is due.

        Its confirmed address that last worked first; between those attempts,
        the claims at other addresses (the peer may have moved).
        """
        if entry.confirmed and entry.next_try <= now:
            address = max(entry.confirmed, key=lambda a: entry.confirmed[a].last_worked)
            if address not in busy:
                entry.attempts += 1
                entry.next_try = now + _backoff(entry.attempts)
                return Dial(address, fp, DialKind.RECONNECT)
        fresh = [
            (key[0], claim)
            for key, claim in entry.claims.items()
            if key[1] in SELF_CONFIRMED_SOURCES
            and claim.next_try <= now
            and now - claim.last_seen <= self._claim_ttl
        ]
        for address, claim in sorted(fresh, key=lambda item: item[1].last_seen, reverse=True):
            there = self._at.get(address)
            if address in busy or there == fp or (there is not None and there in connected):
                continue  # a seed dial is on its way, or it is confirmed, or another key is there
            self._claim_tried(claim, now)
            return Dial(address, fp, DialKind.CONFIRM)
        return None

    def _refill(self, now: float) -> None:
        if self._stamp is not None:
            elapsed = max(0.0, now - self._stamp)
            self._tokens = min(self._dial_burst, self._tokens + elapsed * self._dial_rate)
        self._stamp = now

    def _spend(self) -> bool:
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    # -- memory --------------------------------------------------------------------------

    def _touch(self, fingerprint: str) -> _Entry:
        entry = self._entries.get(fingerprint)
        if entry is None:
            entry = self._entries[fingerprint] = _Entry()
        else:
            self._entries.move_to_end(fingerprint)
        return entry

    def _evict(self) -> None:
        """Over the cap: drop the least recently touched key known by claims only, else any."""
        while len(self._entries) > self._max_keys:
            victim = next((fp for fp, e in self._entries.items() if not e.confirmed), None)
            if victim is None:
                victim = next(iter(self._entries))
            self.forget(victim)

    def _source_of(self, entry: _Entry, address: Address) -> Source:
        claims = [c for key, c in entry.claims.items() if key[0] == address]
        if claims:
            return max(claims, key=lambda c: c.last_seen).source
        known = entry.confirmed.get(address)
        if known is not None:
            return known.source
        if address in self._seeds:
            return Source(Found.SEED)
        return Source(Found.TYPED)


def sources_text(sources: Iterable[str]) -> str:
    """Option 2's "Found" cell: "broadcast, via Bob"."""
    return ", ".join(sources) or "-"
