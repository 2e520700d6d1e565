"""The legacy peer list: who spoke a legacy format to us, where it listens, and how it writes.

An entry is keyed by (IP, port): the source address of the connection (or
beacon) with the port the peer's text names. Every value in it is a claim;
the list is never merged with keyed peers and nothing in it is ever dialled
except by the user. Pure: both clocks are passed in (`now` monotonic for
expiry, `wall` for display). Bounded in total and per IP; the entry heard
from longest ago makes room.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from peerchat.legacy.wire import PLAIN, Dialect
from peerchat.limits import LEGACY_MAX_PEERS, LEGACY_MAX_PEERS_PER_ADDRESS


@dataclass
class LegacyEntry:
    host: str
    port: int
    team: str
    dialect: Dialect
    last_seen: float  # wall clock, for display
    expires: float  # monotonic


class LegacyPeers:
    def __init__(
        self,
        max_peers: int = LEGACY_MAX_PEERS,
        max_per_address: int = LEGACY_MAX_PEERS_PER_ADDRESS,
    ) -> None:
        if max_peers < 1 or max_per_address < 1:
            raise ValueError("the legacy peer list needs room for one entry")
        self._max = max_peers
        self._max_per_address = max_per_address
        self._entries: OrderedDict[tuple[str, int], LegacyEntry] = OrderedDict()
        self._per_address: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def heard(
        self,
        host: str,
        port: int,
        team: str | None,
        dialect: Dialect | None,
        *,
        now: float,
        wall: float,
        ttl: float,
    ) -> tuple[LegacyEntry, bool]:
        """Record a peer heard now; (its entry, whether it is new). None keeps what is known."""
        key = (host, port)
        entry = self._entries.get(key)
        if entry is not None:
            if team is not None:
                entry.team = team
            if dialect is not None:
                entry.dialect = dialect
            entry.last_seen = wall
            entry.expires = max(entry.expires, now + ttl)
            self._entries.move_to_end(key)
            return entry, False
        if self._per_address.get(host, 0) >= self._max_per_address:
            oldest = next(k for k in self._entries if k[0] == host)
            self._drop(oldest)
        while len(self._entries) >= self._max:
            self._drop(next(iter(self._entries)))
        entry = LegacyEntry(host, port, team or "?", dialect or PLAIN, wall, now + ttl)
        self._entries[key] = entry
        self._per_address[host] = self._per_address.get(host, 0) + 1
        return entry, True

    def get(self, host: str, port: int) -> LegacyEntry | None:
        return self._entries.get((host, port))

    def remove(self, host: str, port: int) -> LegacyEntry | None:
        if (host, port) not in self._entries:
            return None
        return self._drop((host, port))

    def only_at(self, host: str) -> LegacyEntry | None:
        """The entry at `host` if it is the only one there (for a word with no port)."""
        if self._per_address.get(host) != 1:
            return None
        return next(e for (h, _), e in self._entries.items() if h == host)

    def next_expiry(self) -> float | None:
        """When the first entry falls silent for good (None: the list is empty)."""
        return min((entry.expires for entry in self._entries.values()), default=None)

    def expire(self, now: float) -> list[LegacyEntry]:
        gone = [key for key, entry in self._entries.items() if entry.expires <= now]
        return [self._drop(key) for key in gone]

    def entries(self) -> list[LegacyEntry]:
        """Copies, sorted by team then address, for display."""
        copies = [LegacyEntry(**vars(e)) for e in self._entries.values()]
        return sorted(copies, key=lambda e: (e.team.casefold(), e.host, e.port))

    def _drop(self, key: tuple[str, int]) -> LegacyEntry:
        entry = self._entries.pop(key)
        left = self._per_address[key[0]] - 1
        if left:
            self._per_address[key[0]] = left
        else:
            del self._per_address[key[0]]
        return entry
