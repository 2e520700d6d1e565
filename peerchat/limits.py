"""Every hard limit of peer_chat in one place, with its default.

Each limit is enforced before the work it guards is done (a length prefix is
checked before the body is buffered, a beacon's rate before its signature is
verified). docs/PROTOCOL.md and the README list the same values.
"""

from __future__ import annotations

from typing import Final

PROTOCOL_VERSION: Final = 1

# Wire
FRAME_HEADER_SIZE: Final = 4  # big-endian unsigned length prefix
MAX_FRAME_SIZE: Final = 128 * 1024  # bytes of one frame body (ciphertext)
MAX_MESSAGE_BYTES: Final = 64 * 1024  # UTF-8 bytes of one chat message's text
MAX_HANDSHAKE_PAYLOAD: Final = 4096  # bytes of identity payload in a handshake message
MAX_TIMESTAMP: Final = 253_402_214_400.0  # a chat's sent_at: 9999-12-31, the last day shown

# Names and fields
MAX_NAME_CHARS: Final = 32
MAX_REASON_CHARS: Final = 200

# Sessions
HANDSHAKE_TIMEOUT: Final = 5.0  # seconds a connection may take to authenticate
IDLE_SESSION_TIMEOUT: Final = 600.0  # seconds without chat traffic before a session is closed
PING_INTERVAL: Final = 5.0  # seconds of silence on a session before it is pinged
MAX_CONNECTIONS: Final = 2048  # open TCP connections in total
MAX_CONNECTIONS_PER_ADDRESS: Final = 64  # open TCP connections from one source address
MAX_PENDING_HANDSHAKES: Final = 128  # connections not yet authenticated
MAX_IN_FLIGHT: Final = 256  # chat messages sent and not yet acknowledged, per session

# Delivery
MAX_QUEUED_PER_PEER: Final = 10_000  # undelivered messages kept for one peer
MAX_QUEUED_AGE: Final = 7 * 24 * 3600.0  # seconds before a queued message is marked failed
SEND_WAIT: Final = 5.0  # seconds option 1 waits for an acknowledgement
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
