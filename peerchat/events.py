"""What the node tells the user interface, and what its calls return.

Plain data only: the menu formats these, the node produces them, and neither
needs the other's internals to do so. Names and texts in them are as the peer
sent them; `sanitize.display_safe` is the menu's job.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# -- news, as it happens -------------------------------------------------------


@dataclass(frozen=True)
class MessageArrived:
    name: str
    host: str
    port: int
    fingerprint: str
    text: str


@dataclass(frozen=True)
class PeerDiscovered:
    name: str
    host: str
    port: int


@dataclass(frozen=True)
class PeerConnected:
    name: str
    host: str
    port: int


@dataclass(frozen=True)
class PeerOffline:
    name: str
    host: str
    port: int
    reason: str


@dataclass(frozen=True)
class KeyChanged:
    name: str
    host: str
    port: int
    pinned_fingerprint: str
    presented_fingerprint: str


@dataclass(frozen=True)
class QueuedDelivered:
    name: str
    host: str
    port: int
    count: int


@dataclass(frozen=True)
class QueuedExpired:
    name: str
    count: int


@dataclass(frozen=True)
class Problem:
    text: str


@dataclass(frozen=True)
class DiscoveryBlocked:
    """Beacons to `address` cannot be sent (said once, until a send works again)."""

    address: str
    port: int
    reason: str


@dataclass(frozen=True)
class DiscoveryQuiet:
    """No other peer's beacon accepted for `seconds` (said once per silence)."""

    port: int
    seconds: float


DiscoveryTrouble = DiscoveryBlocked | DiscoveryQuiet

UiEvent = (
    MessageArrived
    | PeerDiscovered
    | PeerConnected
    | PeerOffline
    | KeyChanged
    | QueuedDelivered
    | QueuedExpired
    | Problem
    | DiscoveryBlocked
    | DiscoveryQuiet
)


@dataclass
class ActivePeer:
    fingerprint: str
    name: str
    host: str
    port: int
    verified: bool
    last_seen: float  # wall clock, for display


@dataclass(frozen=True)
class KeyConflict:
    name: str
    host: str
    port: int
    pinned_fingerprint: str
    presented_fingerprint: str
    public_der: bytes


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    QUEUED = "queued"
    PENDING = "pending"
    FAILED = "failed"  # the peer could not be reached (and could not be queued for)
    NOT_SENT = "not sent"  # refused here: the queue is full, or it cannot be stored
    KEY_CHANGED = "key changed"
    REFUSED = "refused"


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    host: str
    port: int
    name: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class ConnectResult:
    ok: bool
    host: str
    port: int
    name: str | None = None
    detail: str = ""
