"""Delivery completion: who waits for which acknowledgement, and what is news."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from peerchat.completion import Completion, NotAcknowledged


def test_a_waiter_completes_on_its_acknowledgement_and_is_no_news() -> None:
    c = Completion()
    calls: list[Exception | None] = []
    c.expect("m1", calls.append, until=10.0)
    assert c.acknowledged(["m1"]) == 0
    assert calls == [None]
    assert c.acknowledged(["m1"]) == 1  # told once; a second acknowledgement is news
    assert calls == [None]


def test_an_acknowledgement_nobody_waits_for_is_counted_as_news() -> None:
    c = Completion()
    calls: list[Exception | None] = []
    c.expect("m1", calls.append, until=10.0)
    c.handle_timer(10.0)  # option 1 stopped waiting: the later acknowledgement is news
    assert len(calls) == 1 and isinstance(calls[0], NotAcknowledged)
    c.submitted(["m2"])
    assert c.acknowledged(["m1", "m2", "m3"]) == 2
    assert len(calls) == 1


def test_a_wait_ends_at_its_deadline_not_before_and_only_if_still_open() -> None:
    c = Completion()
    told: list[tuple[str, Exception | None]] = []

    def waiter(msg_id: str) -> Callable[[Exception | None], None]:
        return lambda why: told.append((msg_id, why))

    for msg_id, until in (("late", 30.0), ("early", 10.0), ("answered", 5.0)):
        c.expect(msg_id, waiter(msg_id), until)
    c.acknowledged(["answered"])
    assert c.next_due() == 10.0  # the answered wait no longer counts
    c.handle_timer(9.999)
    assert [m for m, _ in told] == ["answered"]
    c.handle_timer(10.0)
    assert [m for m, _ in told] == ["answered", "early"]
    assert isinstance(told[1][1], NotAcknowledged)
    assert c.next_due() == 30.0
    c.acknowledged(["late"])
    assert c.next_due() is None
    c.handle_timer(100.0)
    assert [m for m, why in told] == ["answered", "early", "late"]
    assert told[2][1] is None  # acknowledged in time: told once, never timed out


def test_a_refused_session_fails_its_waiters_with_the_reason() -> None:
    c = Completion()
    calls: list[Exception | None] = []
    c.expect("m1", calls.append, until=10.0)
    c.refused(["m1", "unknown"], RuntimeError("key not trusted"))
    assert len(calls) == 1
    assert isinstance(calls[0], RuntimeError)
    assert str(calls[0]) == "key not trusted"
    c.acknowledged(["m1"])  # the wait ended with the refusal
    assert len(calls) == 1


def test_wait_all_ends_when_the_last_one_is_acknowledged_or_times_out() -> None:
    async def scenario() -> None:
        c = Completion()
        queued = {"m1", "m2"}
        assert await c.wait_all(["gone"], queued.__contains__, 0.01) is True
        waiting = asyncio.ensure_future(c.wait_all(["m1", "m2"], queued.__contains__, 5))
        await asyncio.sleep(0)
        c.acknowledged(["m1"])
        await asyncio.sleep(0)
        assert not waiting.done()
        c.acknowledged(["m2"])
        assert await waiting is True
        assert await c.wait_all(["m1"], queued.__contains__, 0.01) is False

    asyncio.run(scenario())


def test_an_expired_submission_is_forgotten() -> None:
    async def scenario() -> None:
        c = Completion()
        c.submitted(["m1"])
        c.expired(["m1"])
        assert c.acknowledged(["m1"]) == 1  # should it come back after all, it is news

    asyncio.run(scenario())
