"""Who is waiting for which message to be acknowledged, and who is told when it is.

Beside delivery.py, which keeps queue and store in step: this keeps the
waiters in step with the acknowledgements. A message sent by option 1 has a
waiter (the menu waits a few seconds for it); a batch from `submit` is
followed by `wait_all`; anything else that gets acknowledged was queued
earlier with nobody waiting, and is counted as "unattended" so the user is
told about it. Loop thread only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable


class Completion:
    def __init__(self) -> None:
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._submitted: set[str] = set()
        self._watches: list[tuple[set[str], asyncio.Future[None]]] = []

    def expect(self, msg_id: str) -> asyncio.Future[None]:
        """A future that completes when `msg_id` is acknowledged (or fails if it is refused)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[msg_id] = waiter
        return waiter

    def give_up(self, msg_id: str) -> None:
        """Nobody waits for `msg_id` any more: its acknowledgement will be news."""
        self._waiters.pop(msg_id, None)

    def submitted(self, msg_ids: Iterable[str]) -> None:
        """These will be followed with `wait_all`: their acknowledgement is no news."""
        self._submitted.update(msg_ids)

    def acknowledged(self, msg_ids: Iterable[str]) -> int:
        """Complete whoever waits for these; returns how many had nobody waiting."""
        ids = list(msg_ids)
        unattended = 0
        for msg_id in ids:
            waiter = self._waiters.pop(msg_id, None)
            if waiter is not None:
                if not waiter.done():
                    waiter.set_result(None)
            elif msg_id in self._submitted:
                self._submitted.discard(msg_id)  # its caller follows it with wait_all()
            else:
                unattended += 1
        if self._watches:
            acked = set(ids)
            for remaining, done in self._watches:
                remaining.difference_update(acked)
                if not remaining and not done.done():
                    done.set_result(None)
        return unattended

    def refused(self, msg_ids: Iterable[str], exc: Exception) -> None:
        """The peer refused the session: whoever waits for these learns why."""
        for msg_id in msg_ids:
            waiter = self._waiters.get(msg_id)
            if waiter is not None and not waiter.done():
                waiter.set_exception(exc)
                waiter.exception()

    def expired(self, msg_ids: Iterable[str]) -> None:
        self._submitted.difference_update(msg_ids)

    async def wait_all(
        self, msg_ids: Iterable[str], is_queued: Callable[[str], bool], timeout: float
    ) -> bool:
        """Whether every one of `msg_ids` still queued is acknowledged within `timeout`."""
        remaining = {m for m in msg_ids if is_queued(m)}
        if not remaining:
            return True
        watch = (remaining, asyncio.get_running_loop().create_future())
        self._watches.append(watch)
        try:
            await asyncio.wait_for(watch[1], timeout)
        except TimeoutError:
            return False
        finally:
            self._watches.remove(watch)
        return True
