"""Delivery completion: who waits for which acknowledgement, and what is news."""

from __future__ import annotations

import asyncio

import pytest

from peerchat.completion import Completion


def test_a_waiter_completes_on_its_acknowledgement_and_is_no_news() -> None:
    async def scenario() -> None:
        c = Completion()
        waiter = c.expect("m1")
        assert c.acknowledged(["m1"]) == 0
        await asyncio.wait_for(waiter, 1)

    asyncio.run(scenario())


def test_an_acknowledgement_nobody_waits_for_is_counted_as_news() -> None:
    async def scenario() -> None:
        c = Completion()
        c.expect("m1")
        c.give_up("m1")  # option 1 stopped waiting: the later acknowledgement is news
        c.submitted(["m2"])
        assert c.acknowledged(["m1", "m2", "m3"]) == 2

    asyncio.run(scenario())


def test_a_refused_session_fails_its_waiters_with_the_reason() -> None:
    async def scenario() -> None:
        c = Completion()
        waiter = c.expect("m1")
        c.refused(["m1", "unknown"], RuntimeError("key not trusted"))
        with pytest.raises(RuntimeError, match="key not trusted"):
            await waiter

    asyncio.run(scenario())


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
