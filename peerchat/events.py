"""What the node tells the user interface, and what its calls return.

Plain data only: the menu formats these, the node produces them, and neither
needs the other's internals to do so. Names and texts in them are as the peer
sent them; `sanitize.display_safe` is the menu's job.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from peerchat.policy.transfer import TransferOutcome

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


# -- file transfers ------------------------------------------------------------


@dataclass(frozen=True)
class FileOffered:
    peer_name: str
    fingerprint: str
    file_name: str  # the offered name, made safe: what it will be saved as
    size: int


@dataclass(frozen=True)
class FileProgress:
    peer_name: str
    file_name: str
    outgoing: bool
    done: int
    size: int
    rate: float | None  # bytes per second, over the last few seconds
    seconds_left: float | None


@dataclass(frozen=True)
class FileTransferEnded:
    """Done, declined, failed or stalled: said once per transfer (stalled: once per stall)."""

    peer_name: str
    file_name: str
    outgoing: bool
    outcome: TransferOutcome
    size: int
    reason: str = ""
    saved_as: str | None = None  # received and saved: where
    kept: int = 0  # stalled or failed receiving: bytes kept for a resume


FileEvent = FileOffered | FileProgress | FileTransferEnded
FILE_EVENTS = (FileOffered, FileProgress, FileTransferEnded)

UiEvent = (
    MessageArrived
    | PeerDiscovered
    | PeerConnected
    | PeerOffline
    | KeyChanged
    | QueuedDelivered
    | QueuedExpired
    | Problem
    | FileEvent
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


# -- file transfer calls ---------------------------------------------------------


@dataclass(frozen=True)
class IncomingOffer:
    key: str  # what answer_offer() takes
    peer_name: str
    fingerprint: str
    file_name: str  # made safe
    size: int


class FileOutcome(enum.Enum):
    OFFERED = "offered"  # the peer has the offer and will answer
    QUEUED = "queued"  # the peer is away: the offer waits and goes out when it is back
    ACCEPTED = "accepted"
    DECLINED = "declined"
    NOT_SENT = "not sent"  # refused here: unreadable file, no space, cannot store
    UNKNOWN = "unknown"  # no such offer (any more)


@dataclass(frozen=True)
class FileResult:
    outcome: FileOutcome
    file_name: str
    peer_name: str = ""
    detail: str = ""
