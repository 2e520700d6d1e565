"""Limits on what legacy peers may cost us: connections and messages, per source and in all.

Pure (time passed in). A connection is admitted if the total and the source's
open connections are under their caps and both the source's and the global
connection buckets have a token; a message is shown if both the source's and
the global message buckets have one. The global buckets bound the work a
flood from many addresses can cause, which per-source limits alone do not.
Rates are remembered for a bounded number of sources (the least recently
seen is forgotten first); open-connection counts are bounded by the total cap.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from peerchat.limits import (
    LEGACY_CONNECT_BURST,
    LEGACY_CONNECT_GLOBAL_BURST,
    LEGACY_CONNECT_GLOBAL_RATE,
    LEGACY_CONNECT_RATE,
    LEGACY_MAX_CONNECTIONS,
    LEGACY_MAX_CONNECTIONS_PER_ADDRESS,
    LEGACY_MAX_TRACKED_SOURCES,
    LEGACY_MESSAGE_BURST,
    LEGACY_MESSAGE_GLOBAL_BURST,
    LEGACY_MESSAGE_GLOBAL_RATE,
    LEGACY_MESSAGE_RATE,
)
from peerchat.protocol.beacon import TokenBucket

TOO_MANY_CONNECTIONS = "too many legacy connections open"
TOO_MANY_FROM_SOURCE = "too many legacy connections open from that address"
TOO_FAST = "connecting too fast"


@dataclass(frozen=True)
class AdmissionLimits:
    max_connections: int = LEGACY_MAX_CONNECTIONS
    max_per_address: int = LEGACY_MAX_CONNECTIONS_PER_ADDRESS
    connect_rate: float = LEGACY_CONNECT_RATE
    connect_burst: float = LEGACY_CONNECT_BURST
    connect_global_rate: float = LEGACY_CONNECT_GLOBAL_RATE
    connect_global_burst: float = LEGACY_CONNECT_GLOBAL_BURST
    message_rate: float = LEGACY_MESSAGE_RATE
    message_burst: float = LEGACY_MESSAGE_BURST
    global_rate: float = LEGACY_MESSAGE_GLOBAL_RATE
    global_burst: float = LEGACY_MESSAGE_GLOBAL_BURST
    max_sources: int = LEGACY_MAX_TRACKED_SOURCES


class _Source:
    __slots__ = ("connects", "messages")

    def __init__(self, limits: AdmissionLimits, now: float) -> None:
        self.connects = TokenBucket(limits.connect_rate, limits.connect_burst, now)
        self.messages = TokenBucket(limits.message_rate, limits.message_burst, now)


def _take_both(own: TokenBucket, shared: TokenBucket, now: float) -> bool:
    """One token from each bucket, or none from either."""
    own.refill(now)
    shared.refill(now)
    if own.tokens < 1 or shared.tokens < 1:
        return False
    own.tokens -= 1
    shared.tokens -= 1
    return True


class LegacyAdmission:
    def __init__(self, limits: AdmissionLimits | None = None) -> None:
        self.limits = limits or AdmissionLimits()
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self._open: dict[str, int] = {}
        self._open_total = 0
        self._connects: TokenBucket | None = None  # all sources together
        self._messages: TokenBucket | None = None

    @property
    def open_connections(self) -> int:
        return self._open_total

    @property
    def tracked_sources(self) -> int:
        return len(self._sources)

    def admit(self, ip: str, now: float) -> str | None:
        """None if a new connection from `ip` may proceed (it is then counted), else why not."""
        if self._open_total >= self.limits.max_connections:
            return TOO_MANY_CONNECTIONS
        if self._open.get(ip, 0) >= self.limits.max_per_address:
            return TOO_MANY_FROM_SOURCE
        shared = self._connects
        if shared is None:
            limits = self.limits
            shared = TokenBucket(limits.connect_global_rate, limits.connect_global_burst, now)
            self._connects = shared
        if not _take_both(self._source(ip, now).connects, shared, now):
            return TOO_FAST
        self._open[ip] = self._open.get(ip, 0) + 1
        self._open_total += 1
        return None

    def release(self, ip: str) -> None:
        """An admitted connection from `ip` has closed."""
        count = self._open.get(ip, 0)
        if count <= 0:
            return
        self._open_total -= 1
        if count == 1:
            del self._open[ip]
        else:
            self._open[ip] = count - 1

    def allow_message(self, ip: str, now: float) -> bool:
        """Whether one more message from `ip` may be shown now (spends a token if so)."""
        shared = self._messages
        if shared is None:
            limits = self.limits
            shared = self._messages = TokenBucket(limits.global_rate, limits.global_burst, now)
        return _take_both(self._source(ip, now).messages, shared, now)

    def _source(self, ip: str, now: float) -> _Source:
        source = self._sources.get(ip)
        if source is None:
            source = self._sources[ip] = _Source(self.limits, now)
            while len(self._sources) > self.limits.max_sources:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(ip)
        return source
