"""Every hard limit of peer_chat in one place, with its default.

Each limit is enforced before the work it guards is done (a length prefix is
checked before the body is buffered, a beacon's rate before its signature is
verified). docs/PROTOCOL.md and docs/LIMITS.md list the same values.
"""

from __future__ import annotations

from typing import Final

PROTOCOL_VERSION: Final = 1

# Wire
FRAME_HEADER_SIZE: Final = 4  # big-endian unsigned length prefix
MAX_FRAME_SIZE: Final = 128 * 1024  # bytes of one frame body (ciphertext)
MAX_MESSAGE_BYTES: Final = 64 * 1024  # UTF-8 bytes of one chat message's text
MAX_HANDSHAKE_PAYLOAD: Final = 4096  # bytes of identity payload in a handshake message

# Names and fields
MAX_NAME_CHARS: Final = 32
MAX_REASON_CHARS: Final = 200
MAX_IDENTITY_KEY_BYTES: Final = 600  # DER of an identity key (RSA-4096 with e = 65537: 550)
MAX_SIGNATURE_BYTES: Final = 512  # an RSA-4096 signature

# Times from the network
MAX_TIMESTAMP: Final = 32_503_680_000.0  # 3000-01-01 UTC: later is refused on decode
MAX_CLOCK_SKEW: Final = 86_400.0  # a chat dated further ahead of our clock is clamped
MAX_QUEUE_DAYS: Final = 3650  # --queue-days at most; an older chat time is clamped too

# Sessions
HANDSHAKE_TIMEOUT: Final = 5.0  # seconds a connection may take to authenticate
IDLE_SESSION_TIMEOUT: Final = 600.0  # seconds without chat traffic before a session is closed
PING_INTERVAL: Final = 5.0  # seconds of silence on a session before it is pinged
MAX_CONNECTIONS: Final = 2048  # open TCP connections in total
MAX_CONNECTIONS_PER_ADDRESS: Final = 64  # open TCP connections from one source address
MAX_PENDING_HANDSHAKES: Final = 128  # connections not yet authenticated
MAX_PENDING_PER_ADDRESS: Final = 32  # ... from one source address (the oldest is dropped)
FIRST_MESSAGE_TIMEOUT: Final = 1.0  # seconds before a new connection must start its handshake
MAX_IN_FLIGHT: Final = 256  # chat messages sent and not yet acknowledged, per session

# Delivery
MAX_QUEUED_PER_PEER: Final = 10_000  # undelivered messages kept for one peer
MAX_QUEUED_AGE: Final = 7 * 24 * 3600.0  # seconds before a queued message is marked failed
QUOTA_MESSAGES_PER_HOUR: Final = 10_000  # messages stored per peer per hour (--quota-messages)
QUOTA_BYTES_PER_HOUR: Final = (
    16 * 1024 * 1024
)  # ... and bytes of text (--quota-mb); x10 if verified
SEND_WAIT: Final = 5.0  # seconds option 1 waits for an acknowledgement
NAME_DISCOVERY_WAIT: Final = 5.0  # seconds options 1 and 4 wait for a name not discovered yet
RECONNECT_MIN: Final = 1.0  # seconds before reconnecting to a peer with messages waiting
RECONNECT_MAX: Final = 10.0  # ... doubling with each attempt up to this

# Discovery: defaults of --broadcast, --discovery-port, --beacon-interval, --peer-timeout
LIMITED_BROADCAST: Final = "255.255.255.255"  # plus each interface's directed broadcast
DISCOVERY_PORT: Final = 54545
BEACON_INTERVAL: Final = 5.0  # seconds between beacons
PEER_TIMEOUT: Final = 15.0  # seconds of silence before a peer is offline (three beacons)

# Discovery: limits
BEACON_MAX_SIZE: Final = 2048  # bytes of one beacon datagram
BEACON_MAX_SKEW: Final = 30.0  # seconds a beacon's timestamp may differ from ours
BEACON_VERIFY_RATE: Final = 5.0  # signature checks per second per source address
BEACON_VERIFY_BURST: Final = 10
BEACON_VERIFY_GLOBAL_RATE: Final = 200.0  # signature checks per second from all sources
BEACON_VERIFY_KNOWN_RATE: Final = 100.0  # ... plus these, reserved for keys already accepted

# Code comparison (verification): see docs/PROTOCOL.md, "Comparing a code"
VERIFY_CODE_WAIT: Final = 10.0  # seconds for both sides' nonces to be exchanged
VERIFY_EXPIRY: Final = 120.0  # seconds from a request until it expires unanswered
VERIFY_FREE_FAILURES: Final = 3  # failed comparisons with one peer before any wait
VERIFY_BACKOFF: Final = 30.0  # seconds of wait after the next failure, doubling with each
VERIFY_BACKOFF_MAX: Final = 900.0  # ... up to this
VERIFY_FAILURE_MEMORY: Final = 3600.0  # seconds after the last failure when the count resets
VERIFY_PEERS_TRACKED: Final = 1024  # peers whose failures are remembered (oldest dropped)
SAFETY_NUMBER_ITERATIONS: Final = 5200  # hash iterations per side of a safety number
# Legacy bridge (--legacy-port): plain-text and shared-key peers, never the secure port
LEGACY_IDLE_TIMEOUT: Final = 2.0  # seconds without a byte before a legacy connection is closed
LEGACY_MAX_CONNECTION_TIME: Final = 30.0  # seconds a legacy connection may stay open at most
LEGACY_MAX_MESSAGE_BYTES: Final = 64 * 1024  # UTF-8 bytes of one legacy message's text
LEGACY_MAX_LINE_BYTES: Final = 96 * 1024  # bytes of one line (a Fernet token of the above)
LEGACY_MAX_CONNECTION_BYTES: Final = 256 * 1024  # bytes read from one legacy connection
LEGACY_MAX_CONNECTIONS: Final = 128  # open legacy connections in total
LEGACY_MAX_CONNECTIONS_PER_ADDRESS: Final = 8  # open legacy connections from one source address
LEGACY_CONNECT_RATE: Final = 5.0  # new legacy connections per second per source address
LEGACY_CONNECT_BURST: Final = 20
LEGACY_CONNECT_GLOBAL_RATE: Final = 100.0  # new legacy connections per second from all sources
LEGACY_CONNECT_GLOBAL_BURST: Final = 200
LEGACY_MESSAGE_RATE: Final = 5.0  # legacy messages shown per second per source address
LEGACY_MESSAGE_BURST: Final = 20
LEGACY_MESSAGE_GLOBAL_RATE: Final = 50.0  # legacy messages shown per second from all sources
LEGACY_MESSAGE_GLOBAL_BURST: Final = 100
LEGACY_MAX_TRACKED_SOURCES: Final = 1024  # source addresses whose rates are remembered
LEGACY_MAX_PEERS: Final = 256  # entries of the legacy peer list
LEGACY_MAX_PEERS_PER_ADDRESS: Final = 16  # entries of the legacy peer list at one IP
LEGACY_PEER_TTL: Final = 600.0  # seconds a legacy peer heard by message stays listed
LEGACY_MAX_TEAM_CHARS: Final = MAX_NAME_CHARS  # characters of a team name kept from the wire
LEGACY_ORIGINAL_READ: Final = 1024  # bytes the original reads of one message or beacon
LEGACY_CONNECT_TIMEOUT: Final = 3.0  # seconds to connect to a legacy peer
LEGACY_SEND_LINGER: Final = 1.0  # seconds a sent message waits for the peer to close
LEGACY_BEACON_RATE: Final = 5.0  # legacy beacons decrypted per second per source address
LEGACY_BEACON_BURST: Final = 10
# Reach: peer exchange (over sessions), seed peers, mDNS
PEX_MAX_RECORDS: Final = 16  # relayed records in one PeerExchange message
PEX_RECORDS_PER_MINUTE: Final = 64  # relayed records taken from one peer; more are dropped
PEX_VERIFY_PER_MINUTE: Final = 600  # signature checks of relayed records, all peers together
PEX_OWN_PER_MINUTE: Final = 6  # a session peer's own beacons checked (it sends one per interval)
PEX_SELF_INTERVAL: Final = 30.0  # seconds between this peer's own beacon on each session
PEX_MAX_AGE: Final = 90.0  # seconds a relayed beacon may be old (interval + relay + clock skew)
MAX_SEEDS: Final = 32  # seed peers remembered in the profile
SEED_RESOLVE_TIMEOUT: Final = 5.0  # seconds to resolve a seed's host name at start
MDNS_MAX_SERVICES: Final = 256  # DNS-SD instances tracked at once
MDNS_HINTS_PER_SECOND: Final = 20.0  # hints reported from mDNS; more are dropped

# File transfer (kinds 0x28-0x2F on the wire; docs/PROTOCOL.md, "File transfer")
MAX_FILE_SIZE: Final = 4 * 1024**3  # default of --max-file-size: largest file accepted
MAX_TRANSFER_SIZE: Final = 2**62  # largest size an offer may announce at all (decode bound)
MAX_OFFERED_NAME_BYTES: Final = 1024  # UTF-8 bytes of an offered file name (decode bound)
MAX_SAVED_NAME_BYTES: Final = 200  # a saved name is cut to this, leaving room for " (N)"
CHUNK_BYTES: Final = 124 * 1024  # file bytes per chunk frame (a multiple of 4 KiB)
TRANSFER_WINDOW: Final = 8  # chunks sent and not yet acknowledged, per peer
TRANSFER_ACK_EVERY: Final = 2  # the receiver acknowledges every this many chunks
MAX_OFFERS_PER_PEER: Final = 16  # undecided offers kept from one peer; more are declined
MAX_OFFERS: Final = 64  # undecided offers kept from everyone
TRANSFER_STALL_TIMEOUT: Final = 30.0  # seconds without a chunk before a transfer is stalled
MAX_TRANSFER_RESTARTS: Final = 2  # times a receiver starts over when its partial file differs
TRANSFER_MAX_AGE: Final = MAX_QUEUED_AGE  # seconds an unfinished transfer waits, like a message
FREE_SPACE_RESERVE: Final = 64 * 1024**2  # bytes left free on the downloads disk after a file
PROGRESS_FIRST_AFTER: Final = 3.0  # seconds before a transfer's first progress line
PROGRESS_EVERY: Final = 5.0  # seconds between its progress lines
