"""Key conflicts, bounded: throwaway keys under a pinned name cannot flood the screen or option 6.

Pure, time passed in. A conflict is a handshake that proved a key other than
the one pinned to its name (beacons never raise one). The rules:

- Per name at most MAX_PER_NAME conflicts are kept (the most recent; a key
  seen again counts as recent); the others are counted, so option 6 can say
  "and N more".
- At most MAX_NAMES names are tracked; the one quiet longest is dropped.
- A warning is said at once for a name's first changed key, then at most once
  per WARNING_INTERVAL per name, and never more than WARNINGS_PER_INTERVAL
  in all per interval; one said after others were held back says how many.
- The pinned key seen again (a handshake) clears the conflicts over it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from peerchat.events import KeyConflict
from peerchat.policy.trust import pin_key

MAX_PER_NAME: Final = 3
MAX_NAMES: Final = 64
WARNING_INTERVAL: Final = 60.0  # seconds between two warnings about one name
WARNINGS_PER_INTERVAL: Final = 5  # warnings about all names together in that time


@dataclass(frozen=True)
class Warning:
    """Say that `conflict` happened; `more` other new keys for the name were not said."""

    conflict: KeyConflict
    more: int


class _Name:
    __slots__ = ("kept", "last_warned", "unsaid", "untracked")

    def __init__(self) -> None:
        self.kept: OrderedDict[str, KeyConflict] = OrderedDict()  # presented fp -> conflict
        self.untracked = 0  # conflicts pushed out of `kept`
        self.unsaid = 0  # new keys since the last warning, not warned about
        self.last_warned: float | None = None


class ConflictBook:
    def __init__(self) -> None:
        self._names: OrderedDict[str, _Name] = OrderedDict()
        self._warned_at: list[float] = []  # times of recent warnings, all names

    def add(self, conflict: KeyConflict, now: float) -> Warning | None:
        """Keep `conflict`; the warning to show now, if any."""
        key = pin_key(conflict.name)
        entry = self._names.pop(key, None) or _Name()
        self._names[key] = entry
        while len(self._names) > MAX_NAMES:
            self._names.popitem(last=False)
        presented = conflict.presented_fingerprint
        known = entry.kept.pop(presented, None) is not None
        entry.kept[presented] = conflict
        if len(entry.kept) > MAX_PER_NAME:
            entry.kept.popitem(last=False)
            entry.untracked += 1
        if known:
            return None  # said already
        if not self._may_warn(entry, now):
            entry.unsaid += 1
            return None
        more, entry.unsaid = entry.unsaid, 0
        entry.last_warned = now
        self._warned_at.append(now)
        return Warning(conflict, more)

    def conflicts(self) -> list[KeyConflict]:
        return [c for entry in self._names.values() for c in entry.kept.values()]

    def not_listed(self) -> int:
        """Conflicts no longer kept (beyond MAX_PER_NAME for their name)."""
        return sum(entry.untracked for entry in self._names.values())

    def pop(self, presented: str) -> KeyConflict | None:
        for entry in self._names.values():
            conflict = entry.kept.pop(presented, None)
            if conflict is not None:
                return conflict
        return None

    def pinned_seen(self, pinned: str) -> list[KeyConflict]:
        """The pinned key proved itself again: the conflicts over it are settled."""
        cleared: list[KeyConflict] = []
        for key in list(self._names):
            entry = self._names[key]
            for presented, conflict in list(entry.kept.items()):
                if conflict.pinned_fingerprint == pinned:
                    del entry.kept[presented]
                    cleared.append(conflict)
            if cleared and not entry.kept:
                del self._names[key]
        return cleared

    def _may_warn(self, entry: _Name, now: float) -> bool:
        self._warned_at = [t for t in self._warned_at if now - t < WARNING_INTERVAL]
        if len(self._warned_at) >= WARNINGS_PER_INTERVAL:
            return False
        return entry.last_warned is None or now - entry.last_warned >= WARNING_INTERVAL
