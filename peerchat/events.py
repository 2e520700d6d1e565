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
    # Whether the user verified this key: a verified sender is marked so, an
    # unverified one is shown with its short ID, since its name may only look
    # like a known one. None: not told (the original's plain line).
    verified: bool | None = None


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
    was_verified: bool = False  # the pinned key was verified: the loudest warning
    more: int = 0  # other new keys under this name since the last warning, not said


@dataclass(frozen=True)
class PeerRenamed:
    """A known key uses another name than it did."""

    old_name: str
    name: str
    host: str
    port: int
    fingerprint: str
    was_verified: bool  # the key is verified (under its pinned name, not this one)


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


# -- code comparison -------------------------------------------------------------


class Ending(enum.Enum):
    """How a code comparison ended, or why it could not start."""

    VERIFIED = "verified"  # both users saw the same code
    SAID_NO = "said no"  # this user saw a different code
    PEER_SAID_NO = "peer said no"
    BAD_REVEAL = "bad reveal"  # a nonce did not open its commitment
    CANCELLED = "cancelled"  # this user gave no yes or no
    PEER_CANCELLED = "peer cancelled"
    EXPIRED = "expired"  # nobody answered in time
    NO_RESPONSE = "no response"  # the peer did not take part
    RATE_LIMITED = "rate limited"  # too many failed comparisons with this peer here
    PEER_RATE_LIMITED = "peer rate limited"  # ... there
    NOT_CONNECTED = "not connected"
    SESSION_LOST = "session lost"  # the session it was bound to closed
    SUPERSEDED = "superseded"  # the peer started a new comparison
    UNEXPECTED = "unexpected"  # a message out of order
    IN_PROGRESS = "in progress"  # answered here already; waiting for the peer
    ENDED_EARLIER = "ended earlier"  # the comparison answered had already ended

    @property
    def warns_of_middle(self) -> bool:
        """The codes differed: someone may be in the middle."""
        return self in {Ending.SAID_NO, Ending.PEER_SAID_NO, Ending.BAD_REVEAL}


@dataclass(frozen=True)
class CodeRequested:
    """A peer asks this user to compare a code; its code is ready to be shown."""

    name: str
    fingerprint: str


@dataclass(frozen=True)
class VerificationEnded:
    name: str
    fingerprint: str
    ending: Ending


# Legacy peers (--legacy-port): unencrypted, unverified, never mixed with the above.


@dataclass(frozen=True)
class LegacyMessageArrived:
    host: str  # the connection's source address
    port: int  # the port the text names
    team: str
    text: str


@dataclass(frozen=True)
class LegacyPeerDiscovered:
    team: str
    host: str
    port: int


@dataclass(frozen=True)
class LegacyPeerLeft:
    team: str
    host: str
    port: int
    reason: str


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
    | PeerRenamed
    | KeyChanged
    | QueuedDelivered
    | QueuedExpired
    | Problem
    | CodeRequested
    | VerificationEnded
    | LegacyMessageArrived
    | LegacyPeerDiscovered
    | LegacyPeerLeft
    | DiscoveryBlocked
    | DiscoveryQuiet
    | FileEvent
)


@dataclass(frozen=True)
class CodeShown:
    """A code to show this user, and the attempt an answer about it belongs to."""

    fingerprint: str
    name: str
    code: str  # six digits
    attempt: bytes


@dataclass(frozen=True)
class CodeRefused:
    ending: Ending
    retry_after: float = 0.0  # seconds, for RATE_LIMITED


@dataclass
class ActivePeer:
    fingerprint: str
    name: str
    host: str
    port: int
    verified: bool
    last_seen: float  # wall clock, for display
    found: str = ""  # how it was found, for option 2 ("broadcast, via Bob")


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
    OTHER_KEY = "other key"  # another key answered at an address a handshake confirmed for one


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    host: str
    port: int
    name: str | None = None
    detail: str = ""
    fingerprint: str | None = None  # who acknowledged it (DELIVERED) or answered (OTHER_KEY)
    expected_name: str | None = None  # OTHER_KEY: the key last reached at that address ...
    expected_fingerprint: str | None = None


@dataclass(frozen=True)
class ConnectResult:
    ok: bool
    host: str
    port: int
    name: str | None = None
    detail: str = ""
    fingerprint: str | None = None  # who answered
    expected_name: str | None = None  # a different key was last reached at that address ...
    expected_fingerprint: str | None = None


@dataclass(frozen=True)
class LegacyPeer:
    """A row of the legacy peer list, as option 2 shows it."""

    team: str
    host: str
    port: int
    speaks: str  # how it writes, in words
    last_seen: float  # wall clock


class LegacyOutcome(enum.Enum):
    SENT = "sent"  # written and closed cleanly; nothing acknowledges a legacy message
    FAILED = "failed"
    REFUSED = "refused"  # not sent: the text cannot go to that peer


@dataclass(frozen=True)
class LegacySendResult:
    outcome: LegacyOutcome
    host: str
    port: int
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
