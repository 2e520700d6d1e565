"""Who is active: peers heard by beacon or session, until they leave or fall silent.

Pure: `now` is the loop's monotonic clock (liveness), `wall` the wall clock
(the "last seen" a user reads); whether a listed peer is verified under the
name it uses is asked of `is_verified` (again when the name changes). The rules:

- A beacon or an authenticated session lists a peer; any sign of life keeps it.
- A peer that said goodbye is not brought back by beacons of the same run
  (same beacon instance); a new run, or a new session, lists it again.
- A peer that sent "exit" is removed until its next sign of life: a beacon or
  traffic on its session lists it again, as the original did.
- A peer silent for longer than the timeout is removed, and its next beacon is
  announced again as a discovery.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from peerchat.events import ActivePeer
from peerchat.policy.liveness import Liveness

_AWAY_KEPT = 1024  # peers that said "exit", remembered until heard again


class BeaconNews(enum.Enum):
    IGNORED = "ignored"  # a departed peer's run: not listed again
    SEEN = "seen"  # listed (again); nothing to say
    ANNOUNCE = "announce"  # a run not announced yet: say it was discovered


class Presence:
    def __init__(self, timeout: float, is_verified: Callable[[str, str], bool]) -> None:
        self._liveness = Liveness(timeout)
        self._is_verified = is_verified
        self._active: dict[str, ActivePeer] = {}
        self._announced: dict[str, bytes] = {}  # fingerprint -> beacon instance announced
        self._departed: dict[str, bytes | None] = {}  # said goodbye: its beacon instance
        self._away: dict[str, ActivePeer] = {}  # said "exit": listed again when next heard

    def beacon(
        self, fp: str, name: str, host: str, port: int, instance: bytes, *, now: float, wall: float
    ) -> BeaconNews:
        self._away.pop(fp, None)
        if fp in self._departed:
            if self._departed[fp] == instance:
                return BeaconNews.IGNORED  # it said goodbye; the same run does not come back
            del self._departed[fp]
        self._list(fp, name, host, port, now=now, wall=wall)
        if self._announced.get(fp) == instance:
            return BeaconNews.SEEN
        self._announced[fp] = instance
        return BeaconNews.ANNOUNCE

    def session_up(
        self, fp: str, name: str, host: str, port: int, *, now: float, wall: float
    ) -> bool:
        """An authenticated session lists the peer, departed or not; True if newly listed."""
        self._departed.pop(fp, None)
        self._away.pop(fp, None)
        return self._list(fp, name, host, port, now=now, wall=wall)

    def heard(self, fp: str, now: float, wall: float) -> None:
        """Session traffic from a peer: it is alive (and listed again after an "exit")."""
        away = self._away.pop(fp, None)
        if away is not None and fp not in self._active:
            self._list(fp, away.name, away.host, away.port, now=now, wall=wall)
            return
        peer = self._active.get(fp)
        if peer is not None:
            peer.last_seen = wall
            self._liveness.heard(fp, now)

    def depart(self, fp: str, *, until_heard: bool = False) -> ActivePeer | None:
        """The peer left on purpose: unlisted; returns what was listed.

        A goodbye keeps beacons of the same run from listing it again; with
        `until_heard` ("exit") any next sign of life lists it again.
        """
        self._liveness.forget(fp)
        peer = self._active.pop(fp, None)
        if not until_heard:
            self._departed[fp] = self._announced.get(fp)
        elif peer is not None:
            self._away[fp] = peer
            while len(self._away) > _AWAY_KEPT:
                del self._away[next(iter(self._away))]
        return peer

    def expire(self, now: float) -> list[tuple[str, ActivePeer | None]]:
        """Remove the peers silent too long; their return will be news again."""
        gone: list[tuple[str, ActivePeer | None]] = []
        for fp in self._liveness.expire(now):
            self._announced.pop(fp, None)
            gone.append((fp, self._active.pop(fp, None)))
        return gone

    def next_due(self) -> float | None:
        """When `expire` will next remove someone (None: nobody is listed)."""
        return self._liveness.next_expiry()

    def set_verified(self, fp: str, verified: bool) -> None:
        peer = self._active.get(fp)
        if peer is not None:
            peer.verified = verified

    def get(self, fp: str) -> ActivePeer | None:
        return self._active.get(fp)

    def __contains__(self, fp: object) -> bool:
        return fp in self._active

    def listing(self) -> list[ActivePeer]:
        """Copies of the listed peers, by name, then address."""
        peers = [
            ActivePeer(p.fingerprint, p.name, p.host, p.port, p.verified, p.last_seen)
            for p in self._active.values()
        ]
        return sorted(peers, key=lambda p: (p.name.casefold(), p.host, p.port))

    def fingerprint_at(self, host: str, port: int) -> str | None:
        for fp, peer in self._active.items():
            if (peer.host, peer.port) == (host, port):
                return fp
        return None

    def _list(self, fp: str, name: str, host: str, port: int, *, now: float, wall: float) -> bool:
        record = self._active.get(fp)
        if record is None:
            self._active[fp] = ActivePeer(fp, name, host, port, self._is_verified(fp, name), wall)
        else:
            if record.name != name:
                record.verified = self._is_verified(fp, name)
            record.name, record.host, record.port = name, host, port
            record.last_seen = wall
        self._liveness.heard(fp, now)
        return record is None
