"""Who is waiting for which message to be acknowledged, and who is told when it is.

Beside delivery.py, which keeps queue and store in step: this keeps the
waiters in step with the acknowledgements. A message sent by option 1 has a
waiter (the menu waits a few seconds for it); a batch from `submit` is
followed by `wait_all`; anything else that gets acknowledged was queued
earlier with nobody waiting, and is counted as "unattended" so the user is
told about it. Loop thread only.

A waiter is a plain callback, called at once from the acknowledgement: a
future here would cost a loop iteration per hop before anyone is told. Its
wait has a deadline, kept here and served by the owner's one timer
(`next_due` / `handle_timer`, time passed in), not a timer per message.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable, Iterable

# Called with None once the message is acknowledged, or with why the peer refused it,
# or with NotAcknowledged when its deadline passed first.
Waiter = Callable[[Exception | None], None]


class NotAcknowledged(Exception):
    """The wait's deadline passed before the acknowledgement came (it may still come)."""


class Completion:
    def __init__(self) -> None:
        self._waiters: dict[str, Waiter] = {}
        # (deadline, msg_id) of every wait, answered or not: an answered one is
        # dropped when it reaches the front, cheaper than finding it on each answer.
        self._deadlines: list[tuple[float, str]] = []
        self._submitted: set[str] = set()
        self._watches: list[tuple[set[str], asyncio.Future[None]]] = []

    def expect(self, msg_id: str, waiter: Waiter, until: float) -> None:
        """Call `waiter` when `msg_id` is acknowledged (None), refused (the reason), or
        not acknowledged by `until` (NotAcknowledged, from `handle_timer`).

        It is called at most once: whichever comes first ends the wait.
        """
        self._waiters[msg_id] = waiter
        heapq.heappush(self._deadlines, (until, msg_id))

    def next_due(self) -> float | None:
        """The earliest deadline of a wait still open (None: nobody waits)."""
        deadlines, waiters = self._deadlines, self._waiters
        while deadlines and deadlines[0][1] not in waiters:
            heapq.heappop(deadlines)
        return deadlines[0][0] if deadlines else None

    def handle_timer(self, now: float) -> None:
        """End every wait whose deadline has passed by `now`: its waiter is told so."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, msg_id = heapq.heappop(deadlines)
            waiter = self._waiters.pop(msg_id, None)
            if waiter is not None:
                waiter(NotAcknowledged(msg_id))

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
                waiter(None)
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
            waiter = self._waiters.pop(msg_id, None)
            if waiter is not None:
                waiter(exc)

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
