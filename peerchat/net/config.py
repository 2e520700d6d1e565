"""What a node is told at start: its name and port, where to keep data, and its limits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from peerchat import limits
from peerchat.net.legacy_service import LegacyConfig
from peerchat.net.transfers import TransferSettings
from peerchat.policy.quota import QuotaLimits
from peerchat.policy.session_table import AdmissionLimits
from peerchat.policy.upkeep import UpkeepLimits

# How long the menu waits for the loop beyond the time a call may take on its own.
CALL_SLACK = 5.0


@dataclass(frozen=True)
class NodeConfig:
    name: str
    port: int
    data_dir: Path
    bind: str = "0.0.0.0"
    broadcast: str = limits.LIMITED_BROADCAST
    discovery_port: int = limits.DISCOVERY_PORT
    beacon_interval: float = limits.BEACON_INTERVAL
    peer_timeout: float = limits.PEER_TIMEOUT
    discovery: bool = True
    peer_exchange: bool = True  # tell session peers about each other (--no-peer-exchange)
    mdns: bool = False  # DNS-SD on the discovery interfaces; peer_chat turns it on (--no-mdns)
    handshake_timeout: float = limits.HANDSHAKE_TIMEOUT
    idle_timeout: float = limits.IDLE_SESSION_TIMEOUT
    ping_interval: float = limits.PING_INTERVAL
    connect_timeout: float = 3.0
    send_wait: float = limits.SEND_WAIT
    max_connections: int = limits.MAX_CONNECTIONS
    max_connections_per_address: int = limits.MAX_CONNECTIONS_PER_ADDRESS
    max_pending_handshakes: int = limits.MAX_PENDING_HANDSHAKES
    max_pending_per_address: int = limits.MAX_PENDING_PER_ADDRESS
    first_message_timeout: float = limits.FIRST_MESSAGE_TIMEOUT
    max_queued_per_peer: int = limits.MAX_QUEUED_PER_PEER
    max_queued_age: float = limits.MAX_QUEUED_AGE
    quota_messages_per_hour: int = limits.QUOTA_MESSAGES_PER_HOUR
    quota_bytes_per_hour: int = limits.QUOTA_BYTES_PER_HOUR
    call_slack: float = CALL_SLACK
    legacy: LegacyConfig | None = None  # --legacy-port: a second, unencrypted listener
    transfers: TransferSettings | None = None  # None: a downloads folder in data_dir

    def transfer_settings(self) -> TransferSettings:
        return self.transfers or TransferSettings(downloads=self.data_dir / "downloads")

    def admission(self) -> AdmissionLimits:
        return AdmissionLimits(
            self.max_connections,
            self.max_connections_per_address,
            self.max_pending_handshakes,
            self.max_pending_per_address,
        )

    def quota(self) -> QuotaLimits:
        return QuotaLimits(self.quota_messages_per_hour, self.quota_bytes_per_hour)

    def upkeep(self) -> UpkeepLimits:
        return UpkeepLimits(self.peer_timeout, self.idle_timeout, self.ping_interval)
