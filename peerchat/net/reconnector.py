"""Reaching again, with backoff, the peers that have messages or other work waiting.

The schedule (`delivery.ReconnectSchedule`) says when; this role starts one
attempt at a time per peer when the alarm says one is due, and forgets a peer
once it has a session or nothing waits for it (`has_work`: anything besides
queued messages, such as a file transfer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from peerchat.delivery import Delivery, ReconnectSchedule


class Reconnector:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        delivery: Delivery,
        *,
        has_session: Callable[[str], bool],
        address_of: Callable[[str], tuple[str, int] | None],
        attempt: Callable[[str, int], Coroutine[Any, Any, None]],
        poke: Callable[[], None],
        has_work: Callable[[str], bool] = lambda fp: False,
    ) -> None:
        self._loop = loop
        self._delivery = delivery
        self._has_session = has_session
        self._address_of = address_of
        self._attempt = attempt
        self._poke = poke
        self._has_work = has_work
        self._schedule = ReconnectSchedule()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def want(self, fp: str, *, at_once: bool = False) -> None:
        """Keep trying to reach a peer that has queued messages (`at_once`: start over now)."""
        self._schedule.want(fp, self._loop.time(), at_once=at_once)
        self._poke()

    def wanted(self, fp: str) -> bool:
        """Whether anything waits for this peer: queued messages or other work."""
        return bool(self._delivery.pending_count(fp)) or self._has_work(fp)

    def drop(self, fp: str) -> None:
        self._schedule.drop(fp)

    def next_due(self) -> float | None:
        # A peer whose attempt is under way is due again only once that attempt ends.
        busy = [fp for fp, task in self._tasks.items() if not task.done()]
        return self._schedule.next_due(skip=busy)

    def handle_timer(self, now: float) -> None:
        for fp in self._schedule.peers():
            if self._has_session(fp) or not self.wanted(fp):
                self._schedule.drop(fp)
                self._tasks.pop(fp, None)  # an attempt under way may finish
        for fp in self._schedule.due(now):
            task = self._tasks.get(fp)
            if task is not None and not task.done():
                continue
            address = self._address_of(fp)
            if address is None:
                self._schedule.postpone(fp, now)
                continue
            task = self._loop.create_task(self._attempt(*address))
            task.add_done_callback(lambda _: self._poke())
            self._tasks[fp] = task
            self._schedule.attempted(fp, now)

    def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
