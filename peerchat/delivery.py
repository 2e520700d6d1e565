"""Exactly-once delivery between the history store and the wire (no sockets, no loop, no clock).

The sender stores a message as pending before it is queued, so a crash after
`enqueue` still sends it; the acknowledgement marks it delivered; a message
that waits longer than the queue age is marked failed. At start the queue is
rebuilt from the store's pending messages. `Outbox` decides the order and the
window; `Delivery` keeps the store in step with it.

The receiver stores a batch (one transaction) before it acknowledges it, and
acknowledges duplicates too: a duplicate is a resend whose acknowledgement was
lost, and only an acknowledgement stops the sender from sending it again.
`receive_chats` is that rule, run by the node for every batch it reads.

Time is passed in. A store that fails while the queue moves on (marking a
message delivered or failed) is reported through `report_problem` and the
queue goes on: the message stays pending in the store and is sent again after
a restart, which the receiver's dedupe makes harmless. A store that fails
before a message is queued raises StorageError, and nothing is queued.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from peerchat import limits
from peerchat.errors import StorageError
from peerchat.policy.outbox import Outbox, OutgoingItem, QueueFull
from peerchat.protocol.messages import Ack, Chat, new_msg_id
from storage import DeliveryState, Direction, HistoryStore, StoredMessage


def outgoing_message(
    peer_fp: str | None,
    peer_name: str,
    host: str,
    port: int,
    text: str,
    *,
    state: DeliveryState,
    now: float,
) -> StoredMessage:
    """A new message from this peer, with a fresh id, as the history stores it."""
    return StoredMessage(
        msg_id=new_msg_id(now),
        peer_fp=peer_fp,
        peer_name=peer_name,
        peer_host=host,
        peer_port=port,
        direction=Direction.OUT,
        text=text,
        sent_at=now,
        stored_at=now,
        state=state,
    )


_OLDEST_QUEUED: Final = limits.MAX_QUEUE_DAYS * 86_400.0 + limits.MAX_CLOCK_SKEW


def plausible_sent_at(sent_at: float, now: float) -> float:
    """`sent_at` if a sender's clock and queue could explain it, else `now` (its arrival)."""
    if now - _OLDEST_QUEUED <= sent_at <= now + limits.MAX_CLOCK_SKEW:
        return sent_at
    return now


def received_messages(
    peer_fp: str, peer_name: str, host: str, port: int, chats: Sequence[Chat], *, now: float
) -> list[StoredMessage]:
    """The rows a received batch is stored as, before it is acknowledged.

    The sender's time is only a claim: one more than a day ahead of `now`, or
    older than any sender's queue can keep a message, is replaced by `now`.
    """
    return [
        StoredMessage(
            msg_id=chat.msg_id,
            peer_fp=peer_fp,
            peer_name=peer_name,
            peer_host=host,
            peer_port=port,
            direction=Direction.IN,
            text=chat.text,
            sent_at=plausible_sent_at(chat.sent_at, now),
            stored_at=now,
            state=DeliveryState.RECEIVED,
        )
        for chat in chats
    ]


@dataclass(frozen=True)
class Received:
    """What to do with a batch once it is stored."""

    ack_ids: tuple[str, ...]  # every id of the batch, duplicates included, in order
    fresh: tuple[Chat, ...]  # the messages never stored before: the ones to show

    def acks(self, per_ack: int = limits.MAX_IN_FLIGHT) -> list[Ack]:
        """The acknowledgements to send, `per_ack` ids each."""
        ids = self.ack_ids
        return [Ack(ids[i : i + per_ack]) for i in range(0, len(ids), per_ack)]


def receive_chats(  # noqa: PLR0917 (received_messages' arguments, after the store)
    store: HistoryStore,
    peer_fp: str,
    peer_name: str,
    host: str,
    port: int,
    chats: Sequence[Chat],
    *,
    now: float,
) -> Received:
    """Store a received batch, then say what to acknowledge (all of it) and what to show.

    StorageError if the batch could not be stored: then nothing may be
    acknowledged, and the sender keeps every message of it and sends it again.
    """
    fresh = store.add_incoming(received_messages(peer_fp, peer_name, host, port, chats, now=now))
    return Received(
        ack_ids=tuple(chat.msg_id for chat in chats),
        fresh=tuple(chat for chat, is_new in zip(chats, fresh, strict=True) if is_new),
    )


class Delivery:
    """The sender's queue of chat messages, kept in step with the history store."""

    def __init__(
        self,
        store: HistoryStore,
        report_problem: Callable[[str], None],
        *,
        max_queued_per_peer: int = limits.MAX_QUEUED_PER_PEER,
        max_queued_age: float = limits.MAX_QUEUED_AGE,
        max_in_flight: int = limits.MAX_IN_FLIGHT,
    ) -> None:
        self._store = store
        self._report_problem = report_problem
        self.max_queued_per_peer = max_queued_per_peer
        self.max_queued_age = max_queued_age
        self._outbox = Outbox(
            max_per_peer=max_queued_per_peer, max_age=max_queued_age, max_in_flight=max_in_flight
        )
        self._queued: dict[str, StoredMessage] = {}  # msg_id -> its row, until acked or expired

    def load(self) -> None:
        """Queue the store's pending messages again, oldest first (at start)."""
        for row in self._store.pending_messages():
            if row.peer_fp is None:
                continue
            try:
                self._outbox.enqueue(OutgoingItem(row.msg_id, row.peer_fp, row.text, row.sent_at))
            except QueueFull:
                self._store.mark_failed([row.msg_id], "queue full")
                continue
            self._queued[row.msg_id] = row

    def enqueue(self, rows: Sequence[StoredMessage]) -> None:
        """Store as pending, then queue.

        All or nothing: a batch that does not fit in a peer's queue raises
        QueueFull before anything is stored, so no message is pending outside
        the queue; a StorageError leaves the queue as it was.
        """
        wanted: dict[str, int] = {}
        for row in rows:
            if row.peer_fp is None:
                raise ValueError("a queued message needs a recipient's fingerprint")
            wanted[row.peer_fp] = wanted.get(row.peer_fp, 0) + 1
        for fp, count in wanted.items():
            if self._outbox.pending_count(fp) + count > self.max_queued_per_peer:
                raise QueueFull(fp)
        self._store.add_outgoing(rows)
        for row in rows:
            assert row.peer_fp is not None  # checked above
            self._outbox.enqueue(OutgoingItem(row.msg_id, row.peer_fp, row.text, row.sent_at))
            self._queued[row.msg_id] = row

    def record_failed(self, row: StoredMessage) -> None:
        """Keep a message that was never queued in the history (its state says why not)."""
        self._store.add_outgoing([row])

    def queue_full_detail(self) -> str:
        return f"the queue for this peer is full ({self.max_queued_per_peer:,} messages waiting)"

    def has_waiting(self, peer_fp: str) -> bool:
        """Whether messages to this peer wait to go on the wire (in flight ones do not)."""
        return self._outbox.has_waiting(peer_fp)

    def take_chats(self, peer_fp: str) -> list[Chat]:
        """The next messages to put on the wire to this peer, within the window."""
        return [
            Chat(item.msg_id, item.created_at, item.text)
            for item in self._outbox.take_sendable(peer_fp)
        ]

    def acknowledge(self, peer_fp: str, msg_ids: Iterable[str]) -> list[StoredMessage]:
        """Mark what the peer acknowledged as delivered; returns the rows, none twice."""
        return self.record_delivered(self.out_of_window(peer_fp, msg_ids))

    def out_of_window(self, peer_fp: str, msg_ids: Iterable[str]) -> list[str]:
        """The first half of `acknowledge`: what the peer acknowledged leaves the window
        (room for the next messages); returns those ids, none twice. `record_delivered`
        must follow with them."""
        return [item.msg_id for item in self._outbox.acknowledge(peer_fp, msg_ids)]

    def record_delivered(self, done: Sequence[str]) -> list[StoredMessage]:
        """The second half of `acknowledge`: `done` (from `out_of_window`) marked
        delivered in the store; returns their rows."""
        if not done:
            return []
        try:
            self._store.mark_delivered(done)
        except StorageError as exc:
            self._report_problem(f"Cannot record delivery: {exc}")
        return [row for msg_id in done if (row := self._queued.pop(msg_id, None)) is not None]

    def session_lost(self, peer_fp: str) -> None:
        """Whatever was in flight to this peer goes back to the head of its queue."""
        self._outbox.session_lost(peer_fp)

    def expire(self, now: float) -> list[StoredMessage]:
        """Mark the messages that waited too long as failed; returns their rows."""
        expired = self._outbox.expire(now)
        if not expired:
            return []
        ids = [item.msg_id for item in expired]
        try:
            self._store.mark_failed(ids, "expired in the queue")
        except StorageError as exc:
            self._report_problem(f"Cannot record expired messages: {exc}")
        return [row for msg_id in ids if (row := self._queued.pop(msg_id, None)) is not None]

    def queued_ids(self, peer_fp: str) -> list[str]:
        """Every message to this peer that is not acknowledged yet, in flight or waiting."""
        return [msg_id for msg_id, row in self._queued.items() if row.peer_fp == peer_fp]

    def is_queued(self, msg_id: str) -> bool:
        return msg_id in self._queued

    def pending_count(self, peer_fp: str) -> int:
        return self._outbox.pending_count(peer_fp)

    def peers_with_pending(self) -> list[str]:
        return self._outbox.peers_with_pending()

    def next_expiry(self) -> float | None:
        """A wall-clock time no later than the next `expire` finds something (None: empty)."""
        return self._outbox.next_expiry()


class ReconnectSchedule:
    """When to try again to reach each peer that has messages waiting (time passed in).

    A peer asked for `at_once` (just discovered, or messages just submitted) is
    due now and its delay starts again from `shortest`; otherwise it is due
    after its current delay, which doubles with every attempt up to `longest`.
    """

    def __init__(
        self, shortest: float = limits.RECONNECT_MIN, longest: float = limits.RECONNECT_MAX
    ) -> None:
        self._shortest = shortest
        self._longest = longest
        self._next_at: dict[str, float] = {}
        self._delay: dict[str, float] = {}

    def want(self, peer: str, now: float, *, at_once: bool = False) -> None:
        if at_once:
            self._next_at[peer] = now
            self._delay[peer] = self._shortest
        elif self._next_at.get(peer, 0.0) <= now:
            delay = self._delay.setdefault(peer, self._shortest)
            self._next_at[peer] = now + delay

    def drop(self, peer: str) -> None:
        self._next_at.pop(peer, None)
        self._delay.pop(peer, None)

    def peers(self) -> list[str]:
        return list(self._next_at)

    def due(self, now: float) -> list[str]:
        return [peer for peer, at in self._next_at.items() if at <= now]

    def attempted(self, peer: str, now: float) -> None:
        """An attempt was started: the next one waits the delay, and the delay doubles."""
        delay = self._delay.get(peer, self._shortest)
        self._next_at[peer] = now + delay
        self._delay[peer] = min(delay * 2, self._longest)

    def next_due(self, skip: Collection[str] = ()) -> float | None:
        """When the first peer not in `skip` is due (None: none is waiting)."""
        return min((at for peer, at in self._next_at.items() if peer not in skip), default=None)

    def postpone(self, peer: str, now: float) -> None:
        """Nothing to try now (no address known): look again after the longest delay."""
        self._next_at[peer] = now + self._longest
