"""The open connections of a node and the one session kept per peer.

Pure: it holds session objects but never reads or writes them; the caller
closes what it says to close. Three rules live here:

- admission: a connection from outside is refused beyond the total and per
  address limits (our own connections only count); room for a new one among
  the pending handshakes is made by dropping the oldest pending connection
  (from the same address if it holds its share), never by refusing the new
  one, so idle connections cannot keep a legitimate peer out;
- one session per peer key: a second authenticated session with the same
  peer is a duplicate, and one of the two is dropped;
- the tie-break: each end keeps the session initiated by the peer with the
  smaller fingerprint, so two ends that connect to each other at once close
  the same one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from peerchat.limits import MAX_PENDING_PER_ADDRESS
from peerchat.protocol.channel import Role


class TableSession(Protocol):
    @property
    def role(self) -> Role: ...

    @property
    def remote_ip(self) -> str: ...

    @property
    def established(self) -> bool: ...


S = TypeVar("S", bound=TableSession)


@dataclass(frozen=True)
class AdmissionLimits:
    max_connections: int
    max_per_address: int
    max_pending_handshakes: int
    max_pending_per_address: int = MAX_PENDING_PER_ADDRESS


@dataclass(frozen=True)
class Settled(Generic[S]):
    """Which session now stands for a peer, and which one (if any) must be closed as a duplicate."""

    kept: S
    dropped: S | None = None


def preferred(a_initiator: str, b_initiator: str) -> bool:
    """Whether to keep the first of two sessions, given each one's initiator fingerprint."""
    if a_initiator == b_initiator:
        return True  # same initiator twice: keep the older
    return a_initiator < b_initiator


class SessionTable(Generic[S]):
    def __init__(self, own_fingerprint: str, limits: AdmissionLimits) -> None:
        self._own = own_fingerprint
        self._limits = limits
        self._connections: dict[S, None] = {}  # in the order they came
        self._per_address: dict[str, int] = {}
        self._by_peer: dict[str, S] = {}  # fingerprint -> the one live session

    def admit(self, session: S) -> str | None:
        """Count a new connection; None if it fits, else why it is refused (not counted)."""
        ip = session.remote_ip
        if session.role is Role.RESPONDER:
            limits = self._limits
            if len(self._connections) >= limits.max_connections:
                return f"{len(self._connections)} connections open"
            if self._per_address.get(ip, 0) >= limits.max_per_address:
                return "too many connections from that address"
            pending = sum(1 for s in self._connections if not s.established)
            if pending >= limits.max_pending_handshakes:
                return f"{pending} handshakes pending"
        self._connections[session] = None
        self._per_address[ip] = self._per_address.get(ip, 0) + 1
        return None

    def make_room(self, session: S) -> list[S]:
        """Before admitting `session`: the pending connections to drop for it (forgotten here).

        The oldest pending handshake from its address if that address holds
        its share, else, if all pending slots are taken, the oldest from the
        address holding the most.
        """
        if session.role is not Role.RESPONDER:
            return []
        pending = [s for s in self._connections if s.role is Role.RESPONDER and not s.established]
        same = [s for s in pending if s.remote_ip == session.remote_ip]
        victim: S | None = None
        if len(same) >= self._limits.max_pending_per_address:
            victim = same[0]
        elif pending and len(pending) >= self._limits.max_pending_handshakes:
            counts: dict[str, int] = {}
            for s in pending:
                counts[s.remote_ip] = counts.get(s.remote_ip, 0) + 1
            busiest = max(counts, key=lambda ip: counts[ip])
            victim = next(s for s in pending if s.remote_ip == busiest)
        if victim is None:
            return []
        self.remove(victim, None)
        return [victim]

    def settle(self, fingerprint: str, session: S) -> Settled[S]:
        """`session` has authenticated as `fingerprint`: which one to keep, which to drop."""
        existing = self._by_peer.get(fingerprint)
        if existing is None or existing is session or not existing.established:
            self._by_peer[fingerprint] = session
            return Settled(session)
        if preferred(self._initiator(existing, fingerprint), self._initiator(session, fingerprint)):
            return Settled(existing, dropped=session)
        self._by_peer[fingerprint] = session
        return Settled(session, dropped=existing)

    def remove(self, session: S, fingerprint: str | None) -> bool:
        """Forget a closed connection; True if it was the live session of `fingerprint`."""
        if self._connections.pop(session, 0) is None:  # counted once, even if removed twice
            ip = session.remote_ip
            left = self._per_address.get(ip, 1) - 1
            if left > 0:
                self._per_address[ip] = left
            else:
                self._per_address.pop(ip, None)
        if fingerprint is not None and self._by_peer.get(fingerprint) is session:
            del self._by_peer[fingerprint]
            return True
        return False

    def get(self, fingerprint: str) -> S | None:
        return self._by_peer.get(fingerprint)

    def is_live(self, fingerprint: str, session: S) -> bool:
        return self._by_peer.get(fingerprint) is session

    def __contains__(self, fingerprint: object) -> bool:
        return fingerprint in self._by_peer

    def __len__(self) -> int:
        """Peers with a live session."""
        return len(self._by_peer)

    def live(self) -> list[tuple[str, S]]:
        return list(self._by_peer.items())

    def connections(self) -> list[S]:
        return list(self._connections)

    def _initiator(self, session: S, fingerprint: str) -> str:
        return self._own if session.role is Role.INITIATOR else fingerprint
