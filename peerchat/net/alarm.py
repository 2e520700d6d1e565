"""One timer for the whole node, armed at the earliest time any part needs attention.

Each timed part says when it next needs attention (`next_due`, on the loop's
clock, None for never) and does what is due in `handle_timer(now)`, the way
a sans-I/O protocol object exposes its timer. A part whose due
time may have moved earlier calls `poke()`; the alarm looks again once the
current callback is done. An idle node therefore sleeps until something is
due, and a part that answers early costs one wake-up that finds nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

log = logging.getLogger(__name__)

# Fired this long after a due time, so that a strict "longer than" test at `now` holds.
SLACK = 0.001


class Timed(Protocol):
    def next_due(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...


def earliest(times: Sequence[float | None]) -> float | None:
    return min((t for t in times if t is not None), default=None)


class Alarm:
    def __init__(self, loop: asyncio.AbstractEventLoop, parts: Sequence[Timed] = ()) -> None:
        self._loop = loop
        self._parts = list(parts)
        self._handle: asyncio.TimerHandle | None = None
        self._poked = False
        self._stopped = False

    def attach(self, *parts: Timed) -> None:
        """Handle these parts too, after those already attached."""
        self._parts.extend(parts)

    @property
    def when(self) -> float | None:
        """The loop time the timer is armed for (None: nothing is due, ever)."""
        return None if self._handle is None else self._handle.when()

    def poke(self) -> None:
        """Something may be due earlier than the timer is armed for: look again soon."""
        if not self._poked and not self._stopped:
            self._poked = True
            self._loop.call_soon(self._rearm)

    def due_by(self, when: float) -> None:
        """Something is due at `when`: make sure the timer fires by then (cheap, no look)."""
        at = when + SLACK
        if self._stopped or (self._handle is not None and self._handle.when() <= at):
            return
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_at(at, self._fire)

    def stop(self) -> None:
        self._stopped = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        now = self._loop.time()
        for part in self._parts:
            try:
                part.handle_timer(now)
            except Exception:
                log.exception("timer of %s failed", type(part).__name__)
        self._rearm()

    def _rearm(self) -> None:
        self._poked = False
        if self._stopped:
            return
        due = earliest([part.next_due() for part in self._parts])
        at = None if due is None else due + SLACK
        if self._handle is not None:
            if at is not None and self._handle.when() == at:
                return
            self._handle.cancel()
            self._handle = None
        if at is not None:
            self._handle = self._loop.call_at(at, self._fire)
