"""The node's one timer: armed at the earliest due time of its parts, never polling."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from peerchat.net.alarm import SLACK, Alarm


@dataclass
class FakeHandle:
    at: float
    callback: Callable[[], None]
    cancelled: bool = False

    def when(self) -> float:
        return self.at

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class FakeLoop:
    """A loop whose clock moves only when the test says so."""

    now: float = 0.0
    timers: list[FakeHandle] = field(default_factory=list)
    soon: list[Callable[[], None]] = field(default_factory=list)

    def time(self) -> float:
        return self.now

    def call_at(self, at: float, callback: Callable[[], None]) -> FakeHandle:
        handle = FakeHandle(at, callback)
        self.timers.append(handle)
        return handle

    def call_soon(self, callback: Callable[[], None]) -> None:
        self.soon.append(callback)

    def armed(self) -> list[float]:
        return [h.at for h in self.timers if not h.cancelled]

    def run_until(self, t: float) -> int:
        """Run what is due up to `t`; returns how many timers fired."""
        fired = 0
        while True:
            while self.soon:
                self.soon.pop(0)()
            due = sorted(
                (h for h in self.timers if not h.cancelled and h.at <= t), key=FakeHandle.when
            )
            if not due:
                self.now = t
                return fired
            handle = due[0]
            handle.cancelled = True
            self.now = handle.at
            fired += 1
            handle.callback()


@dataclass
class Part:
    due: float | None
    handled: list[float] = field(default_factory=list)
    then: float | None = None  # the next due time once handled

    def next_due(self) -> float | None:
        return self.due

    def handle_timer(self, now: float) -> None:
        if self.due is not None and now >= self.due:
            self.handled.append(now)
            self.due = self.then


def alarm_on(loop: FakeLoop, *parts: Part) -> Alarm:
    alarm = Alarm(cast(asyncio.AbstractEventLoop, cast(Any, loop)))
    alarm.attach(*parts)
    alarm.poke()
    loop.run_until(loop.now)
    return alarm


def test_the_timer_is_armed_at_the_earliest_part_and_nothing_fires_before() -> None:
    loop = FakeLoop()
    late, early = Part(due=30.0), Part(due=12.0, then=40.0)
    alarm = alarm_on(loop, late, early)
    assert loop.armed() == [12.0 + SLACK]
    assert alarm.when == 12.0 + SLACK
    assert loop.run_until(11.9) == 0
    assert loop.run_until(12.5) == 1
    assert early.handled == [12.0 + SLACK]
    assert loop.armed() == [30.0 + SLACK]


def test_an_idle_node_arms_no_timer_at_all() -> None:
    loop = FakeLoop()
    alarm = alarm_on(loop, Part(due=None), Part(due=None))
    assert alarm.when is None
    assert loop.run_until(1e9) == 0


def test_a_poke_brings_the_timer_forward_and_due_by_only_ever_forward() -> None:
    loop = FakeLoop()
    part = Part(due=100.0)
    alarm = alarm_on(loop, part)
    alarm.due_by(200.0)  # later than armed: no change
    assert alarm.when == 100.0 + SLACK
    alarm.due_by(50.0)
    assert alarm.when == 50.0 + SLACK
    # Fired early, the part has nothing to do: the timer goes back to its real due time.
    assert loop.run_until(60.0) == 1
    assert part.handled == []
    assert alarm.when == 100.0 + SLACK
    part.due = 70.0
    alarm.poke()
    loop.run_until(60.0)
    assert alarm.when == 70.0 + SLACK


def test_a_failing_part_does_not_stop_the_others_or_the_timer() -> None:
    loop = FakeLoop()

    class Broken(Part):
        def handle_timer(self, now: float) -> None:
            raise RuntimeError("bug")

    ok = Part(due=5.0, then=None)
    broken = Broken(due=5.0)
    alarm = alarm_on(loop, broken, ok)
    broken.due = 9.0
    loop.run_until(6.0)
    assert ok.handled == [5.0 + SLACK]
    assert alarm.when == 9.0 + SLACK


def test_a_stopped_alarm_fires_no_more() -> None:
    loop = FakeLoop()
    alarm = alarm_on(loop, Part(due=5.0))
    alarm.stop()
    alarm.poke()
    alarm.due_by(1.0)
    assert loop.run_until(10.0) == 0
    assert alarm.when is None
