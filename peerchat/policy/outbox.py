"""Per-peer queue of chat messages waiting to be delivered (pure: no I/O, no clock).

Each peer has one queue in enqueue order. `take_sendable` moves items from the
head of the waiting part into flight, never more than `max_in_flight` at once
(the window). An acknowledgement removes in-flight items; losing the session
puts every in-flight item back at the head, in its original order, so the next
session resends them first and the per-peer order holds. The receiver drops
duplicates by msg_id, so a resend after a lost acknowledgement is harmless.

Only items that are waiting can expire: an in-flight item is either
acknowledged or returned to the queue by `session_lost` first, so a message is
never reported both delivered and failed.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from peerchat.limits import MAX_IN_FLIGHT, MAX_QUEUED_AGE, MAX_QUEUED_PER_PEER


class OutgoingItem(NamedTuple):  # one per queued message: cheaper than a frozen dataclass
    msg_id: str
    peer_fp: str
    text: str
    created_at: float


class QueueFull(Exception):
    """The peer already has `max_per_peer` undelivered messages."""


@dataclass
class _PeerQueue:
    # Both keep insertion order; every in-flight item is older than every waiting one.
    in_flight: dict[str, OutgoingItem] = field(default_factory=dict)
    waiting: OrderedDict[str, OutgoingItem] = field(default_factory=OrderedDict)
    # No waiting item was created before this (it may be earlier than the oldest one still
    # waiting, never later). It lets expire() skip a long queue (a peer offline for days)
    # without reading it, and next_expiry() answer without reading any queue.
    oldest: float = math.inf

    def __len__(self) -> int:
        return len(self.in_flight) + len(self.waiting)


class Outbox:
    def __init__(
        self,
        *,
        max_per_peer: int = MAX_QUEUED_PER_PEER,
        max_age: float = MAX_QUEUED_AGE,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        if max_per_peer < 1 or max_in_flight < 1 or max_age < 0:
            raise ValueError("max_per_peer and max_in_flight must be >= 1, max_age >= 0")
        self._max_per_peer = max_per_peer
        self._max_age = max_age
        self._max_in_flight = max_in_flight
        self._queues: dict[str, _PeerQueue] = {}

    def enqueue(self, item: OutgoingItem) -> None:
        """Append `item` to its peer's queue.

        Raises QueueFull when the peer has `max_per_peer` undelivered items, and
        ValueError when an item with the same msg_id is already queued for that
        peer (it would be delivered twice).
        """
        queue = self._queues.get(item.peer_fp)
        if queue is None:
            queue = self._queues[item.peer_fp] = _PeerQueue()
        if len(queue) >= self._max_per_peer:
            raise QueueFull(
                f"{len(queue)} messages already waiting for {item.peer_fp[:8]} "
                f"(limit {self._max_per_peer})"
            )
        if item.msg_id in queue.waiting or item.msg_id in queue.in_flight:
            raise ValueError(f"message {item.msg_id} is already queued")
        queue.waiting[item.msg_id] = item
        queue.oldest = min(queue.oldest, item.created_at)

    def take_sendable(self, peer_fp: str) -> list[OutgoingItem]:
        """The next waiting items, oldest first, now in flight; at most the free window."""
        queue = self._queues.get(peer_fp)
        if queue is None:
            return []
        free = self._max_in_flight - len(queue.in_flight)
        taken: list[OutgoingItem] = []
        while free > 0 and queue.waiting:
            msg_id, item = queue.waiting.popitem(last=False)
            queue.in_flight[msg_id] = item
            taken.append(item)
            free -= 1
        return taken

    def acknowledge(self, peer_fp: str, msg_ids: Iterable[str]) -> list[OutgoingItem]:
        """Remove and return the acknowledged in-flight items of `peer_fp`.

        Ids that are not in flight for this peer (unknown, already acknowledged,
        or another peer's) are ignored: a peer can only confirm what it was sent.
        """
        queue = self._queues.get(peer_fp)
        if queue is None:
            return []
        removed: list[OutgoingItem] = []
        for msg_id in msg_ids:
            item = queue.in_flight.pop(msg_id, None)
            if item is not None:
                removed.append(item)
        self._drop_if_empty(peer_fp, queue)
        return removed

    def session_lost(self, peer_fp: str) -> None:
        """Put every in-flight item back at the head of the queue, in its original order."""
        queue = self._queues.get(peer_fp)
        if queue is None or not queue.in_flight:
            return
        for msg_id, item in reversed(queue.in_flight.items()):
            queue.waiting[msg_id] = item
            queue.waiting.move_to_end(msg_id, last=False)
            queue.oldest = min(queue.oldest, item.created_at)
        queue.in_flight.clear()

    def expire(self, now: float) -> list[OutgoingItem]:
        """Remove and return waiting items created more than `max_age` before `now`."""
        expired: list[OutgoingItem] = []
        for peer_fp, queue in list(self._queues.items()):
            if not now - queue.oldest > self._max_age:
                continue
            # created_at need not grow with queue order (clock changes, reloads), so scan all.
            old = [item for item in queue.waiting.values() if now - item.created_at > self._max_age]
            for item in old:
                del queue.waiting[item.msg_id]
            expired.extend(old)
            queue.oldest = min(
                (item.created_at for item in queue.waiting.values()), default=math.inf
            )
            self._drop_if_empty(peer_fp, queue)
        return expired

    def next_expiry(self) -> float | None:
        """A time (the clock of `created_at`) no later than the next expiry; None if none waits.

        It may be early (an item since put in flight), never late: `expire` at
        that time finds nothing or something, and the answer after it is exact.
        """
        oldest = min((queue.oldest for queue in self._queues.values()), default=math.inf)
        return None if oldest == math.inf else oldest + self._max_age

    def has_waiting(self, peer_fp: str) -> bool:
        """Whether `peer_fp` has items not yet in flight (the only ones `take_sendable` takes)."""
        queue = self._queues.get(peer_fp)
        return queue is not None and bool(queue.waiting)

    def pending_count(self, peer_fp: str) -> int:
        """Undelivered items of `peer_fp`: waiting plus in flight."""
        queue = self._queues.get(peer_fp)
        return 0 if queue is None else len(queue)

    def peers_with_pending(self) -> list[str]:
        """Peers with at least one undelivered item (waiting or in flight)."""
        return list(self._queues)

    def _drop_if_empty(self, peer_fp: str, queue: _PeerQueue) -> None:
        if not queue.in_flight and not queue.waiting:
            del self._queues[peer_fp]
