"""Which peers are alive: a key is active from the moment it is heard until it has been
silent for longer than `timeout` or is forgotten.

Pure: the caller passes `now`, from a monotonic clock (the node uses loop.time()),
so a wall-clock step can neither expire every peer at once nor keep a dead one
listed.
"""

from __future__ import annotations


class Liveness:
    def __init__(self, timeout: float) -> None:
        if not timeout > 0:
            raise ValueError("liveness timeout must be positive")
        self._timeout = timeout
        self._last: dict[str, float] = {}

    @property
    def timeout(self) -> float:
        return self._timeout

    def heard(self, key: str, now: float) -> bool:
        """Record a sign of life; True when `key` was not active before."""
        new = key not in self._last
        self._last[key] = now
        return new

    def forget(self, key: str) -> bool:
        """Remove `key` at once (goodbye, exit); True if it was active."""
        return self._last.pop(key, None) is not None

    def expire(self, now: float) -> list[str]:
        """Remove and return the keys silent for more than `timeout`, longest silent first."""
        gone = sorted((t, k) for k, t in self._last.items() if now - t > self._timeout)
        for _, key in gone:
            del self._last[key]
        return [key for _, key in gone]

    def is_active(self, key: str) -> bool:
        return key in self._last

    def last_heard(self, key: str) -> float | None:
        return self._last.get(key)

    def next_expiry(self) -> float | None:
        """The time after which `expire` will remove the first key (None if none is active)."""
        if not self._last:
            return None
        return min(self._last.values()) + self._timeout

    def __len__(self) -> int:
        return len(self._last)
