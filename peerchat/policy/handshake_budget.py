"""Failed handshakes per source address: a source that keeps failing is refused at accept.

Pure, time passed in, bounded memory. A handshake that fails after the peer's
first message was answered (so it cost us the key exchange, and perhaps an
identity check) is charged to its source address, never to a key: before the
handshake ends nothing says which key is there. The rules:

- Each address has a bucket of `burst` failures, refilled at `rate` a second.
  A new connection is admitted while its address has at least one failure
  left; below that it is refused before a byte is read (the cool-down), until
  the bucket has refilled to one. A successful handshake costs nothing.
- Several handshakes can be under way when the last failure is spent, so a
  bucket may go into debt (down to -burst): the cool-down then lasts longer,
  and an address gets about `rate` failed handshakes a second however many it
  keeps in flight.
- An address where a key we already knew completed a handshake has a
  reserve: even in its cool-down, one connection every `reserve_interval`
  seconds is admitted, so a known peer sharing an address with a failing
  source (a host, a NAT) keeps a way in, at a cost of at most one failed
  handshake per interval. (Our own dials to it are never refused.)
- Only addresses that failed or earned a reserve are remembered, at most
  `max_sources` of them; the least recently touched is forgotten first, and a
  forgotten address starts again with a full bucket: forgetting only forgives.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from peerchat.limits import (
    HANDSHAKE_FAILURE_BURST,
    HANDSHAKE_FAILURE_RATE,
    HANDSHAKE_MAX_TRACKED_SOURCES,
    HANDSHAKE_RESERVE_INTERVAL,
)


@dataclass(frozen=True)
class FailureLimits:
    burst: float = HANDSHAKE_FAILURE_BURST
    rate: float = HANDSHAKE_FAILURE_RATE  # failures forgiven per second
    reserve_interval: float = HANDSHAKE_RESERVE_INTERVAL
    max_sources: int = HANDSHAKE_MAX_TRACKED_SOURCES


@dataclass(frozen=True)
class Admitted:
    """A connection may go on; `refused`: connections refused in the cool-down it ends."""

    refused: int = 0
    reserve: bool = False  # admitted from the reserve, during a cool-down


@dataclass(frozen=True)
class CoolingDown:
    """A connection refused at accept: the `count`th of this cool-down, `wait` seconds left."""

    count: int
    wait: float

    @property
    def first(self) -> bool:
        return self.count == 1


class _Source:
    __slots__ = ("known", "next_reserve", "refused", "stamp", "tokens")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens = tokens
        self.stamp = now
        self.known = False  # a key we knew completed a handshake from here
        self.next_reserve = now
        self.refused = 0  # connections refused since the last one admitted


class HandshakeBudget:
    def __init__(self, limits: FailureLimits | None = None) -> None:
        self._limits = limits or FailureLimits()
        self._sources: OrderedDict[str, _Source] = OrderedDict()

    @property
    def tracked_sources(self) -> int:
        return len(self._sources)

    def admit(self, ip: str, now: float) -> Admitted | CoolingDown:
        """Whether a new connection from `ip` may start a handshake."""
        source = self._sources.get(ip)
        if source is None:
            return Admitted()
        self._sources.move_to_end(ip)  # a source still knocking stays remembered
        self._refill(source, now)
        if source.tokens < 1:
            if not source.known or now < source.next_reserve:
                source.refused += 1
                return CoolingDown(source.refused, self._wait(source, now))
            source.next_reserve = now + self._limits.reserve_interval
            return Admitted(reserve=True)  # the cool-down goes on, and its count
        refused, source.refused = source.refused, 0
        return Admitted(refused)

    def failed(self, ip: str, now: float) -> None:
        """A handshake from `ip` failed after it cost us the key exchange."""
        source = self._touch(ip, now)
        source.tokens = max(-self._limits.burst, source.tokens - 1)

    def succeeded(self, ip: str, *, known: bool, now: float) -> None:
        """A handshake from (or to) `ip` completed; `known`: with a key we knew before it."""
        if known:
            self._touch(ip, now).known = True

    def _touch(self, ip: str, now: float) -> _Source:
        source = self._sources.get(ip)
        if source is None:
            source = self._sources[ip] = _Source(self._limits.burst, now)
            while len(self._sources) > self._limits.max_sources:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(ip)
            self._refill(source, now)
        return source

    def _refill(self, source: _Source, now: float) -> None:
        # The loop's clock is monotonic; a step back would only refill nothing.
        elapsed = max(0.0, now - source.stamp)
        source.tokens = min(self._limits.burst, source.tokens + elapsed * self._limits.rate)
        source.stamp = now

    def _wait(self, source: _Source, now: float) -> float:
        """Seconds until `source` is admitted again (its reserve, if it has one, may come first)."""
        rate = self._limits.rate
        wait = (1 - source.tokens) / rate if rate > 0 else math.inf
        if source.known:
            wait = min(wait, max(0.0, source.next_reserve - now))
        return wait
