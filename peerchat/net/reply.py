"""The answer to one call of the node's facade, handed from the loop thread to the caller.

The caller starts the work with `loop.call_soon_threadsafe` and waits on the
reply; the loop sets it from whatever callback finishes the work. Unlike
`run_coroutine_threadsafe` this needs no task and no chain of futures, each
of which costs the loop an iteration, and the hand-over is one lock released
by the loop and taken by the caller. A caller that stopped waiting cancels
the reply: what the loop sets after that is dropped, and a task it follows
is cancelled.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Generic, TypeVar

T = TypeVar("T")

_PENDING, _DONE, _CANCELLED = range(3)


class Reply(Generic[T]):
    __slots__ = ("_error", "_ready", "_state", "_task", "_value")

    def __init__(self) -> None:
        self._ready = threading.Lock()
        self._ready.acquire()  # released once, by whoever settles the reply
        self._state = _PENDING
        self._value: T | None = None
        self._error: BaseException | None = None
        self._task: asyncio.Future[T] | None = None

    def done(self) -> bool:
        """Answered, or given up by the caller (loop thread)."""
        return self._state != _PENDING

    def set_result(self, value: T) -> None:
        if self._state == _PENDING:
            self._value = value
            self._state = _DONE
            self._ready.release()

    def set_exception(self, exc: BaseException) -> None:
        if self._state == _PENDING:
            self._error = exc
            self._state = _DONE
            self._ready.release()

    def follow(self, task: asyncio.Future[T]) -> None:
        """Answer with `task`'s outcome once it is done (loop thread)."""
        self._task = task
        task.add_done_callback(self._copy)
        if self._state == _CANCELLED:  # the caller gave up before the task was made
            task.cancel()

    def _copy(self, task: asyncio.Future[T]) -> None:
        if task.cancelled():
            self.set_exception(asyncio.CancelledError())
        elif (exc := task.exception()) is not None:
            self.set_exception(exc)
        else:
            self.set_result(task.result())

    def wait(self, timeout: float) -> T:
        """The answer (or the loop's exception); TimeoutError, and the reply is cancelled."""
        if not self._ready.acquire(timeout=max(timeout, 0.0)):
            self._state = _CANCELLED
            task = self._task
            if task is not None:
                task.get_loop().call_soon_threadsafe(task.cancel)
            raise TimeoutError
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]  # set with _DONE and no error
