"""One asyncio loop on a thread of its own, and calls into it from other threads, bounded in time.

The loop's thread owns everything that runs in the loop. Another thread never
touches that state: it hands the loop a coroutine (`call`), a function
(`call_fn`) or a callback that settles a `Reply` (`call_with_reply`), and
waits for the result for a bounded time, so a stuck loop gives NotAnswering
instead of a hang. Before `start`, the owner may run start-up steps on its
own thread (`run_until_complete`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from peerchat.errors import NotAnswering
from peerchat.net.reply import Reply

log = logging.getLogger(__name__)

T = TypeVar("T")

NOT_ANSWERING = "the network part of this peer is not answering"


class LoopThread:
    def __init__(self, name: str, *, slack: float) -> None:
        """`slack`: how long a call waits for the loop beyond the time it may take on its own."""
        self.loop = asyncio.new_event_loop()
        self._slack = slack
        self._first: Callable[[], None] = _nothing
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def run_until_complete(self, coro: Coroutine[Any, Any, T]) -> T:
        """A start-up step on the calling thread, before `start`; if it fails, the loop closes."""
        try:
            return self.loop.run_until_complete(coro)
        except BaseException:
            self.close_now()
            raise

    def start(self, first: Callable[[], None]) -> None:
        """Run the loop on its thread; `first` runs there before anything else."""
        self._first = first
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], takes: float = 0.0) -> T:
        """Run `coro` on the loop and wait at most `takes` plus the slack for its result."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(takes + self._slack)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise NotAnswering(NOT_ANSWERING) from None

    def call_with_reply(self, start: Callable[[Reply[T]], None], takes: float = 0.0) -> T:
        """Like `call`, for work the loop starts from a plain callback and answers later.

        No task and no chain of futures: `start` runs in the loop's next iteration
        and whatever callback finishes the work settles `reply`.
        """
        reply: Reply[T] = Reply()
        self.loop.call_soon_threadsafe(_start_guarded, start, reply)
        try:
            return reply.wait(takes + self._slack)
        except TimeoutError:
            raise NotAnswering(NOT_ANSWERING) from None

    def call_fn(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the loop (it must not block) and wait, as `call` does, for its result."""
        return self.call(_run_fn(fn))

    def stop(self, last: Callable[[], Coroutine[Any, Any, None]], timeout: float) -> None:
        """Run `last()` on the loop, then stop the loop and wait for its thread (each bounded)."""
        if not self._thread.is_alive():
            self.close_now()
            return
        future = asyncio.run_coroutine_threadsafe(last(), self.loop)
        with contextlib.suppress(Exception):
            future.result(timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)

    def close_now(self) -> None:
        """Cancel what is left and close the loop, unless it runs (then its thread does)."""
        with contextlib.suppress(Exception):
            if not self.loop.is_closed() and not self.loop.is_running():
                for task in asyncio.all_tasks(self.loop):
                    task.cancel()
                self.loop.run_until_complete(asyncio.sleep(0))
                self.loop.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.set_exception_handler(_log_loop_exception)
        self._first()
        try:
            self.loop.run_forever()
        finally:
            self.close_now()


def _nothing() -> None:
    pass


def _start_guarded(start: Callable[[Reply[T]], None], reply: Reply[T]) -> None:
    """Run `start` on the loop; what it raises is the caller's answer."""
    if reply.done():  # the caller gave up before the loop got to it
        return
    try:
        start(reply)
    except Exception as exc:
        reply.set_exception(exc)


async def _run_fn(fn: Callable[[], T]) -> T:
    return fn()


def _log_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    log.error("event loop: %s", context.get("message"), exc_info=exc)
