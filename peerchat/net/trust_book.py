"""Trust in peer keys: the pins, the key conflicts, re-trust and verification.

The one write path for what the user trusts: a handshake pins a new name's
key, a changed key becomes a conflict (said once, bounded, kept until the user
re-trusts it or the pinned key proves itself again), and option 6 verifies or
re-trusts through here, so the store and every cached copy change together.
The decisions are `policy.trust`'s and `policy.conflicts`'.

Only a handshake can raise a conflict, and it refuses the *new* key: a beacon
is a claim anyone can make about a name, so one under a pinned name with
another key is dropped without a word and blocks nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from peerchat.errors import StorageError
from peerchat.events import KeyChanged, KeyConflict, PeerRenamed, Problem, UiEvent
from peerchat.policy import trust
from peerchat.policy.conflicts import ConflictBook
from peerchat.protocol.channel import PeerHello
from storage import HistoryStore

log = logging.getLogger(__name__)


class TrustBook:
    def __init__(
        self,
        store: HistoryStore,
        emit: Callable[[UiEvent], None],
        peers_changed: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._emit = emit
        self._peers_changed = peers_changed
        self._clock = clock
        self._pins: dict[str, str] = {}
        self._conflicts = ConflictBook()
        self._verified: set[str] = set()  # keys the user checked
        self._names: dict[str, str] = {}  # key -> the name it last used

    def load(self) -> None:
        self._pins = self._store.pins()
        for record in self._store.known_peers():
            self._names[record.fingerprint] = record.name
            if record.verified:
                self._verified.add(record.fingerprint)

    def admit_hello(
        self, hello: PeerHello, host: str, port: int, *, worked: bool = True
    ) -> KeyConflict | None:
        """Judge a peer that completed a handshake; pin and record it unless its key changed.

        The store keeps host:port as the peer's address only if it `worked`
        (we dialled it and this key answered); otherwise the last one is kept.
        """
        fp = hello.fingerprint
        decision = trust.decide(self._pins, hello.name, fp)
        if decision.verdict is trust.Verdict.CHANGED:
            assert decision.pinned_fingerprint is not None
            conflict = KeyConflict(
                hello.name, host, port, decision.pinned_fingerprint, fp, hello.identity_der
            )
            self._report(conflict)
            return conflict
        for cleared in self._conflicts.pinned_seen(fp):
            log.info(
                "%s [%s] proved its key again: the other key %s is not offered any more",
                cleared.name,
                fp[:8],
                cleared.presented_fingerprint[:8],
            )
        self._note_name(fp, hello.name, host, port)
        try:
            if decision.verdict is trust.Verdict.NEW:
                self._store.pin(hello.name, fp)
                self._pins[trust.pin_key(hello.name)] = fp
            self._store.upsert_peer(
                fp,
                hello.name,
                hello.identity_der,
                host if worked else None,
                port if worked else None,
                time.time(),
            )
        except StorageError as exc:
            self._emit(Problem(f"Cannot record peer {hello.name}: {exc}"))
        self._peers_changed()
        return None

    def admit_beacon(self, name: str, fp: str, host: str, port: int, identity_der: bytes) -> bool:
        """Whether a beacon's key may be listed under its name.

        A beacon under a name pinned to another key is dropped, with no
        warning and no conflict: anyone can send one, and it must not make the
        user doubt, or be offered to replace, the key they trust.
        """
        decision = trust.decide(self._pins, name, fp)
        if decision.verdict is trust.Verdict.CHANGED:
            log.debug("beacon from %s: %s [%s] is not the pinned key", host, name, fp[:8])
            return False
        self._note_name(fp, name, host, port)
        return True

    def is_verified(self, fp: str, name: str) -> bool:
        """Verified: the user checked this key, and it is the key pinned to this name."""
        return fp in self._verified and self._pins.get(trust.pin_key(name)) == fp

    def pinned_to_another(self, name: str, fp: str) -> bool:
        """Whether `name` is pinned to a key other than `fp` (asks only; reports nothing)."""
        return trust.decide(self._pins, name, fp).verdict is trust.Verdict.CHANGED

    def conflicts(self) -> list[KeyConflict]:
        return self._conflicts.conflicts()

    def conflict_pinned_to(self, fp: str) -> KeyConflict | None:
        """A conflict over the name `fp` is pinned under (a handshake presented another key)."""
        return next((c for c in self.conflicts() if c.pinned_fingerprint == fp), None)

    def conflicts_not_listed(self) -> int:
        return self._conflicts.not_listed()

    def retrust(self, presented: str) -> KeyConflict | None:
        """Accept a changed key: pin it and record the peer; the conflict it settles."""
        conflict = self._conflicts.pop(presented)
        if conflict is None:
            return None
        self._store.pin(conflict.name, presented)
        # Its address is not recorded: only a handshake where we dialled confirms one.
        self._store.upsert_peer(
            presented, conflict.name, conflict.public_der, None, None, time.time()
        )
        self._pins[trust.pin_key(conflict.name)] = presented
        self._names[presented] = conflict.name
        self._peers_changed()
        return conflict

    def verify(self, fp: str, verified: bool, name: str | None = None) -> None:
        """Mark a key checked by the user; under `name` too if no key is pinned to it yet."""
        if verified and name is not None and trust.pin_key(name) not in self._pins:
            self._store.pin(name, fp)
            self._pins[trust.pin_key(name)] = fp
        self._store.set_verified(fp, verified)
        if verified:
            self._verified.add(fp)
        else:
            self._verified.discard(fp)

    def _note_name(self, fp: str, name: str, host: str, port: int) -> None:
        """Announce a known key that now uses another name (said once per change)."""
        old = self._names.get(fp)
        self._names[fp] = name
        if old is not None and old != name:
            self._emit(PeerRenamed(old, name, host, port, fp, fp in self._verified))

    def _report(self, conflict: KeyConflict) -> None:
        warning = self._conflicts.add(conflict, self._clock())
        if warning is None:
            return
        log.warning(
            "refused %s at %s:%d: key %s is not the pinned %s%s",
            conflict.name,
            conflict.host,
            conflict.port,
            conflict.presented_fingerprint[:8],
            conflict.pinned_fingerprint[:8],
            f" (and {warning.more} more new keys under that name)" if warning.more else "",
        )
        self._emit(
            KeyChanged(
                conflict.name,
                conflict.host,
                conflict.port,
                conflict.pinned_fingerprint,
                conflict.presented_fingerprint,
                was_verified=conflict.pinned_fingerprint in self._verified,
                more=warning.more,
            )
        )
