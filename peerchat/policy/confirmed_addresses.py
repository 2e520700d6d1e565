"""Which key is where: addresses a handshake confirmed, apart from what the network claims.

Pure. A peer is its key; an address only points at one, and only a handshake
completed *at that address* says which:

- confirmed: we dialled host:port and the handshake there completed as key K.
  Each key keeps the address that last worked for it, and an address belongs
  to the key whose last worked address it is (the latest to be confirmed
  there, if several). Only these resolve an address to a key, and only these
  are dialled without the user typing them.
- claims: what the network says about a key's address (a beacon's source
  address and port, the listening port in a hello). Kept as hints, never
  used to resolve an address or to dial on our own.

Memory is bounded: the least recently confirmed keys are forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

Address = tuple[str, int]

MAX_KEYS: Final = 4096  # keys whose last worked address is remembered
MAX_CLAIMS_PER_KEY: Final = 4  # most recent claims kept per key


class ConfirmedAddresses:
    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self._max_keys = max_keys
        self._worked: OrderedDict[str, Address] = OrderedDict()  # key -> last worked address
        self._owner: dict[Address, str] = {}  # address -> the key it last worked for
        self._claims: OrderedDict[str, list[tuple[Address, str]]] = OrderedDict()

    def confirm(self, fingerprint: str, address: Address) -> None:
        """We dialled `address` and the handshake there completed as `fingerprint`."""
        old = self._worked.pop(fingerprint, None)
        if old is not None and self._owner.get(old) == fingerprint:
            del self._owner[old]
        self._worked[fingerprint] = address
        self._owner[address] = fingerprint
        while len(self._worked) > self._max_keys:
            gone, where = self._worked.popitem(last=False)
            if self._owner.get(where) == gone:
                del self._owner[where]

    def key_at(self, address: Address) -> str | None:
        """The key a handshake last confirmed at `address`, if that is still its address."""
        return self._owner.get(address)

    def may_confirm(self, fingerprint: str, address: Address) -> bool:
        """Whether a handshake as `fingerprint` at `address` may take that address.

        Not when the address belongs to another key: the user is asked, never
        silently moved to a different key.
        """
        owner = self._owner.get(address)
        return owner is None or owner == fingerprint

    def last_worked(self, fingerprint: str) -> Address | None:
        return self._worked.get(fingerprint)

    def claim(self, fingerprint: str, address: Address, source: str) -> None:
        """A hint from the network (`source` says which kind): kept, never trusted."""
        claims = self._claims.pop(fingerprint, [])
        claims = [(a, s) for a, s in claims if a != address][: MAX_CLAIMS_PER_KEY - 1]
        self._claims[fingerprint] = [(address, source), *claims]
        while len(self._claims) > self._max_keys:
            self._claims.popitem(last=False)

    def claims(self, fingerprint: str) -> list[tuple[Address, str]]:
        """Claimed addresses of a key with their sources, newest first."""
        return list(self._claims.get(fingerprint, []))
