"""Where a peer is: as listed now, else as last stored; and which key an address reaches.

One place to look it up, for sending, queueing and retrying. Listing and
display may use what the network claims; resolving an address to a key and
dialling on our own use only addresses a handshake confirmed there (the
node's one `policy.address_book.AddressBook`). The store keeps, per key, the
address that last worked, and `load` confirms those in the book at start, so
what was confirmed survives a restart.
"""

from __future__ import annotations

import contextlib

from peerchat.errors import StorageError
from peerchat.policy.address_book import Address, AddressBook, Found, Source
from peerchat.policy.presence import Presence
from storage import HistoryStore

_STORED = Source(Found.STORED)


class PeerDirectory:
    def __init__(self, presence: Presence, store: HistoryStore, book: AddressBook) -> None:
        self._presence = presence
        self._store = store
        self._book = book

    def load(self, now: float) -> None:
        """The addresses that last worked, as stored (oldest first, so the newest wins)."""
        with contextlib.suppress(StorageError):
            for record in reversed(self._store.known_peers()):
                if record.host and record.port:
                    self._book.confirm(record.fingerprint, (record.host, record.port), now, _STORED)

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

    def name_of(self, fp: str) -> str:
        return self.who(fp)[0]

    def address_of(self, fp: str) -> Address | None:
        """Where to dial a peer on our own: only the address that last worked for its key."""
        return self._book.best(fp)

    def addresses_to_try(self, fp: str) -> list[Address]:
        """Where to dial a peer the user chose: where it last worked, then where it is listed."""
        found: list[Address] = []
        worked = self._book.best(fp)
        if worked is not None:
            found.append(worked)
        peer = self._presence.get(fp)
        if peer is not None and (peer.host, peer.port) not in found:
            found.append((peer.host, peer.port))
        return found

    def known_fingerprint_at(self, host: str, port: int) -> str | None:
        """The key a handshake last confirmed at host:port (claims never answer this)."""
        return self._book.key_at((host, port))
