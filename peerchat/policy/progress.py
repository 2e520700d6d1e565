"""Progress of a transfer: percent, rate, time left, and when to say so (pure, time passed in).

The rate is measured over the last RATE_WINDOW seconds, so it follows what the
link does now rather than an average since the start (a resumed transfer does
not count the bytes it already had). Lines are throttled: the first one after
`first_after` seconds, then one every `every` seconds, so short transfers say
only that they are done and long ones do not flood the screen.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

from peerchat.limits import PROGRESS_EVERY, PROGRESS_FIRST_AFTER

RATE_WINDOW: Final = 5.0  # seconds of samples behind the rate


@dataclass(frozen=True)
class ProgressReport:
    done: int
    size: int
    percent: float  # 0..100
    rate: float | None  # bytes per second; None until it can be measured
    seconds_left: float | None  # None while the rate is unknown or zero


class ProgressMeter:
    def __init__(
        self,
        size: int,
        done: int,
        now: float,
        *,
        first_after: float = PROGRESS_FIRST_AFTER,
        every: float = PROGRESS_EVERY,
    ) -> None:
        if size < 0 or not 0 <= done <= size:
            raise ValueError("progress needs 0 <= done <= size")
        self._size = size
        self._samples: deque[tuple[float, int]] = deque([(now, done)])
        self._every = every
        self._next_line = now + first_after

    @property
    def done(self) -> int:
        return self._samples[-1][1]

    def update(self, done: int, now: float) -> None:
        """Record that `done` bytes are through at `now` (done never goes past size)."""
        samples = self._samples
        done = max(0, min(done, self._size))
        if done < samples[-1][1]:  # started over: the old samples say nothing now
            samples.clear()
        samples.append((now, done))
        # Keep one sample at or before the window's start, so the rate spans the window.
        while len(samples) > 2 and samples[1][0] <= now - RATE_WINDOW:
            samples.popleft()

    def report(self) -> ProgressReport:
        first_at, first_done = self._samples[0]
        last_at, done = self._samples[-1]
        percent = 100.0 if self._size == 0 else 100.0 * done / self._size
        elapsed = last_at - first_at
        rate = (done - first_done) / elapsed if elapsed > 0 else None
        left = None
        if rate is not None and rate > 0:
            left = (self._size - done) / rate
        return ProgressReport(done, self._size, percent, rate, left)

    def line_due(self, now: float) -> bool:
        """Whether a progress line is due at `now`; if so, the next one is scheduled."""
        if now < self._next_line or self.done >= self._size:
            return False
        self._next_line = now + self._every
        return True


def format_size(size: int) -> str:
    """Bytes for people, in decimal units: 2.4 MB, 512 kB, 17 bytes."""
    if size < 1000:
        return f"{size} byte" + ("" if size == 1 else "s")
    value = float(size)
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        value /= 1000
        if value < 999.5 or unit == "PB":
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    raise AssertionError("unreachable")
