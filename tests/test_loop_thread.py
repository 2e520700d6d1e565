"""The loop's own thread: calls into it come back, a stuck loop answers NotAnswering in time."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from peerchat.errors import NotAnswering
from peerchat.net.loop_thread import LoopThread
from peerchat.net.reply import Reply


def test_calls_run_on_the_loop_thread_and_return_their_result() -> None:
    runner = LoopThread("test-loop", slack=5.0)
    first: list[str] = []
    runner.start(lambda: first.append(threading.current_thread().name))

    async def doubled(n: int) -> int:
        await asyncio.sleep(0)
        return 2 * n

    try:
        assert runner.call(doubled(21)) == 42
        assert runner.call_fn(lambda: threading.current_thread().name) == "test-loop"
        assert first == ["test-loop"]  # `first` ran there, before any call
    finally:
        runner.stop(_nothing, 2.0)
    assert runner.loop.is_closed()


def test_a_stuck_loop_gives_not_answering_within_the_slack() -> None:
    runner = LoopThread("test-loop", slack=0.2)
    runner.start(lambda: None)
    released = threading.Event()
    try:
        runner.loop.call_soon_threadsafe(released.wait, 10)  # the loop hangs in a callback
        started = time.monotonic()
        with pytest.raises(NotAnswering, match="not answering"):
            runner.call_fn(lambda: None)
        assert time.monotonic() - started < 5
    finally:
        released.set()
        runner.stop(_nothing, 2.0)


def test_a_reply_is_settled_later_by_the_loop_and_what_start_raises_is_the_answer() -> None:
    runner = LoopThread("test-loop", slack=5.0)
    runner.start(lambda: None)

    def answer_later(reply: Reply[str]) -> None:
        # Settled from a later callback on the loop, as a send's acknowledgement is.
        runner.loop.call_later(0.01, reply.set_result, threading.current_thread().name)

    def refuse(reply: Reply[str]) -> None:
        raise ValueError("no such peer")

    try:
        assert runner.call_with_reply(answer_later) == "test-loop"
        with pytest.raises(ValueError, match="no such peer"):
            runner.call_with_reply(refuse)
    finally:
        runner.stop(_nothing, 2.0)


def test_a_reply_the_stuck_loop_never_settles_gives_not_answering() -> None:
    runner = LoopThread("test-loop", slack=0.2)
    runner.start(lambda: None)
    try:
        started = time.monotonic()
        with pytest.raises(NotAnswering, match="not answering"):
            runner.call_with_reply(lambda reply: None)  # nothing ever answers
        assert time.monotonic() - started < 5
    finally:
        runner.stop(_nothing, 2.0)


def test_stop_runs_the_last_step_on_the_loop_then_ends_the_thread() -> None:
    runner = LoopThread("test-loop", slack=5.0)
    runner.start(lambda: None)
    ran_on: list[str] = []

    async def last() -> None:
        ran_on.append(threading.current_thread().name)

    runner.stop(last, 2.0)
    assert ran_on == ["test-loop"]
    assert runner.loop.is_closed()


def test_a_failed_start_up_step_closes_the_loop_and_raises() -> None:
    runner = LoopThread("test-loop", slack=5.0)

    async def fails() -> None:
        raise OSError("port in use")

    with pytest.raises(OSError, match="port in use"):
        runner.run_until_complete(fails())
    assert runner.loop.is_closed()


def test_stop_before_start_closes_the_loop_without_a_thread() -> None:
    runner = LoopThread("test-loop", slack=5.0)
    assert runner.run_until_complete(_answer()) == 42  # start-up steps run on this thread
    runner.stop(_nothing, 2.0)
    assert runner.loop.is_closed()


async def _nothing() -> None:
    pass


async def _answer() -> int:
    return 42
