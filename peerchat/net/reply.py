"""The answer to one call of the node's facade, handed from the loop thread to the caller.

The caller starts the work with `loop.call_soon_threadsafe` and waits on the
reply; the loop sets it from whatever callback finishes the work. Unlike
`run_coroutine_threadsafe` this needs no task and no chain of futures, each
of which costs the loop an iteration. A caller that stopped waiting cancels
the reply; what the loop sets after that is dropped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from typing import Generic, TypeVar

T = TypeVar("T")


class Reply(Generic[T]):
    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def done(self) -> bool:
        return self._future.done()

    def set_result(self, value: T) -> None:
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # the caller gave up
            self._future.set_result(value)

    def set_exception(self, exc: BaseException) -> None:
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            self._future.set_exception(exc)

    def follow(self, task: asyncio.Future[T]) -> None:
        """Answer with `task`'s outcome once it is done; a caller that gives up cancels it."""

        def copy(done: asyncio.Future[T]) -> None:
            if done.cancelled():
                self._future.cancel()
            elif (exc := done.exception()) is not None:
                self.set_exception(exc)
            else:
                self.set_result(done.result())

        def cancel(_: concurrent.futures.Future[T]) -> None:
            if self._future.cancelled():
                task.get_loop().call_soon_threadsafe(task.cancel)

        task.add_done_callback(copy)
        self._future.add_done_callback(cancel)

    def wait(self, timeout: float) -> T:
        """The answer (or the loop's exception); TimeoutError, and the reply is cancelled."""
        try:
            return self._future.result(timeout)
        except concurrent.futures.TimeoutError:
            self._future.cancel()
            raise
