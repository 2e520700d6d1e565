"""Where a peer is: as listed now, else as last stored.

One place to look it up, for sending, queueing and retrying.
"""

from __future__ import annotations

import contextlib

from peerchat.errors import StorageError
from peerchat.policy.presence import Presence
from storage import HistoryStore


class PeerDirectory:
    def __init__(self, presence: Presence, store: HistoryStore) -> None:
        self._presence = presence
        self._store = store

    def who(self, fp: str) -> tuple[str, str, int]:
        """Name, host and port of a peer: as listed now, else as last stored ("?", 0)."""
        peer = self._presence.get(fp)
        if peer is not None:
            return peer.name, peer.host, peer.port
        record = None
        with contextlib.suppress(StorageError):
            record = self._store.get_peer(fp)
        if record is None:
            return "?", "?", 0
        return record.name, record.host or "?", record.port or 0

    def address_of(self, fp: str) -> tuple[str, int] | None:
        _, host, port = self.who(fp)
        return (host, port) if host != "?" and port else None

    def known_fingerprint_at(self, host: str, port: int) -> str | None:
        """The peer last stored at host:port, if any."""
        with contextlib.suppress(StorageError):
            record = self._store.peer_by_address(host, port)
            if record is not None:
                return record.fingerprint
        return None
