"""Trust in peer keys: the pins, the key conflicts, re-trust and verification.

The one write path for what the user trusts: a handshake pins a new name's
key, a changed key becomes a conflict (shown once, kept until the user
re-trusts it), and option 6 verifies or re-trusts through here, so the store
and every cached copy change together. The decisions are `policy.trust`'s.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

from peerchat.errors import StorageError
from peerchat.events import KeyChanged, KeyConflict, Problem, UiEvent
from peerchat.policy import trust
from peerchat.protocol.channel import PeerHello
from storage import HistoryStore

log = logging.getLogger(__name__)


class TrustBook:
    def __init__(
        self,
        store: HistoryStore,
        emit: Callable[[UiEvent], None],
        peers_changed: Callable[[], None],
    ) -> None:
        self._store = store
        self._emit = emit
        self._peers_changed = peers_changed
        self._pins: dict[str, str] = {}
        self._conflicts: dict[str, KeyConflict] = {}  # presented fingerprint -> conflict

    def load(self) -> None:
        self._pins = self._store.pins()

    def admit_hello(self, hello: PeerHello, host: str, port: int) -> KeyConflict | None:
        """Judge a peer that completed a handshake; pin and record it unless its key changed."""
        fp = hello.fingerprint
        decision = trust.decide(self._pins, hello.name, fp)
        if decision.verdict is trust.Verdict.CHANGED:
            assert decision.pinned_fingerprint is not None
            conflict = KeyConflict(
                hello.name, host, port, decision.pinned_fingerprint, fp, hello.identity_der
            )
            self._report(conflict)
            return conflict
        try:
            if decision.verdict is trust.Verdict.NEW:
                self._store.pin(hello.name, fp)
                self._pins[trust.pin_key(hello.name)] = fp
            self._store.upsert_peer(fp, hello.name, hello.identity_der, host, port, time.time())
        except StorageError as exc:
            self._emit(Problem(f"Cannot record peer {hello.name}: {exc}"))
        self._peers_changed()
        return None

    def admit_beacon(self, name: str, fp: str, host: str, port: int, identity_der: bytes) -> bool:
        """Whether a beacon's key may be listed under its name (a changed key is reported)."""
        decision = trust.decide(self._pins, name, fp)
        if decision.verdict is not trust.Verdict.CHANGED:
            return True
        assert decision.pinned_fingerprint is not None
        self._report(KeyConflict(name, host, port, decision.pinned_fingerprint, fp, identity_der))
        return False

    def pinned_to_another(self, name: str, fp: str) -> bool:
        """Whether `name` is pinned to a key other than `fp` (asks only; reports nothing)."""
        return trust.decide(self._pins, name, fp).verdict is trust.Verdict.CHANGED

    def conflicts(self) -> list[KeyConflict]:
        return list(self._conflicts.values())

    def conflict_pinned_to(self, fp: str) -> KeyConflict | None:
        """A conflict over the name `fp` is pinned under (someone else presents that name)."""
        return next((c for c in self._conflicts.values() if c.pinned_fingerprint == fp), None)

    def retrust(self, presented: str) -> KeyConflict | None:
        """Accept a changed key: pin it and record the peer; the conflict it settles."""
        conflict = self._conflicts.pop(presented, None)
        if conflict is None:
            return None
        self._store.pin(conflict.name, presented)
        self._store.upsert_peer(
            presented, conflict.name, conflict.public_der, conflict.host, conflict.port, time.time()
        )
        self._pins[trust.pin_key(conflict.name)] = presented
        self._peers_changed()
        return conflict

    def verify(self, fp: str, verified: bool) -> None:
        self._store.set_verified(fp, verified)

    def _report(self, conflict: KeyConflict) -> None:
        log.warning(
            "refused %s at %s:%d: key %s is not the pinned %s",
            conflict.name,
            conflict.host,
            conflict.port,
            conflict.presented_fingerprint[:8],
            conflict.pinned_fingerprint[:8],
        )
        known = self._conflicts.get(conflict.presented_fingerprint)
        self._conflicts[conflict.presented_fingerprint] = conflict
        if known is None:
            pinned = None
            with contextlib.suppress(StorageError):
                pinned = self._store.get_peer(conflict.pinned_fingerprint)
            self._emit(
                KeyChanged(
                    conflict.name,
                    conflict.host,
                    conflict.port,
                    conflict.pinned_fingerprint,
                    conflict.presented_fingerprint,
                    was_verified=pinned is not None and pinned.verified,
                )
            )
