"""The facade's hand-over from the loop thread to the caller (peerchat.net.reply)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from peerchat.net.reply import Reply


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_the_loop_answers_from_a_plain_callback(loop: asyncio.AbstractEventLoop) -> None:
    reply: Reply[str] = Reply()
    loop.call_soon_threadsafe(reply.set_result, "delivered")
    assert reply.wait(5) == "delivered"


def test_an_exception_on_the_loop_is_raised_to_the_caller(
    loop: asyncio.AbstractEventLoop,
) -> None:
    reply: Reply[str] = Reply()
    loop.call_soon_threadsafe(reply.set_exception, ValueError("unknown peer"))
    with pytest.raises(ValueError, match="unknown peer"):
        reply.wait(5)


def test_an_answer_after_the_caller_gave_up_is_dropped(loop: asyncio.AbstractEventLoop) -> None:
    reply: Reply[str] = Reply()
    with pytest.raises(TimeoutError):
        reply.wait(0.01)
    assert reply.done()  # the loop sees that nobody waits any more
    reply.set_result("too late")  # no error, nobody to tell
    reply.set_exception(RuntimeError("too late"))


def test_a_followed_task_gives_its_result(loop: asyncio.AbstractEventLoop) -> None:
    async def work() -> int:
        await asyncio.sleep(0)
        return 7

    reply: Reply[int] = Reply()
    loop.call_soon_threadsafe(lambda: reply.follow(loop.create_task(work())))
    assert reply.wait(5) == 7


def test_a_followed_task_is_cancelled_when_the_caller_gives_up(
    loop: asyncio.AbstractEventLoop,
) -> None:
    cancelled = threading.Event()

    async def stuck() -> int:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 0

    reply: Reply[int] = Reply()
    started = threading.Event()

    def start() -> None:
        reply.follow(loop.create_task(stuck()))
        started.set()

    loop.call_soon_threadsafe(start)
    assert started.wait(5)
    with pytest.raises(TimeoutError):
        reply.wait(0.05)
    assert cancelled.wait(5)
