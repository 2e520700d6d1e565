"""What a message costs, step by step: each step of its path timed alone, in CPU time.

The steps are the node's own code and objects (rows, the history store, an
established SecureChannel pair, the outbox), driven from this one thread
without an event loop, so that each can be timed by itself: bench_messages
says what a whole message costs, this says where it goes. What is left out
is the event loop's own work and the thread hop (compare with the floor of
the design in bench_messages).

Each step is timed over a batch of fresh messages with time.thread_time and
repeated; the figure is the smallest per-message time of the repeats (the
one least disturbed by other work on the machine), the spread is over the
repeats. The stores are real HistoryStores on disk (WAL, background
checkpoints), filled first so that their indexes have some depth.

Two paths: one message at a time (option 1: every step handles one message,
every write is a transaction of its own) and pipelined (the window of 256 at
once: one transaction, one frame write, one acknowledgement for the batch).

    python -m bench.bench_costs [--quick]
"""

from __future__ import annotations

import contextlib
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from bench.clients import session_identities
from bench.harness import Row, figure_row, summarize
from bench.peers import TEXT
from bench.registry import module_main
from crypto_utils import Sealer
from peerchat.delivery import outgoing_message, received_messages
from peerchat.events import MessageArrived
from peerchat.limits import MAX_IN_FLIGHT
from peerchat.policy.outbox import Outbox, OutgoingItem
from peerchat.protocol.channel import Credentials, MessageReceived, Role, SecureChannel
from peerchat.protocol.messages import Ack, Chat
from peerchat.ui.menu import describe_event
from storage import DeliveryState, HistoryStore, StoredMessage

PEER = "b" * 64  # the receiver, as the sender's rows name it
SENDER = "a" * 64  # the sender, as the receiver's rows name it
WINDOW = MAX_IN_FLIGHT  # what the sender puts on the wire at once
T = TypeVar("T")


@dataclass(frozen=True)
class Sizes:
    repeats: int  # timed repeats of each step; the figure is the fastest
    messages: int  # messages per repeat (one window each when pipelined)
    prefill: int  # rows in each store before anything is timed


FULL = Sizes(repeats=7, messages=WINDOW, prefill=20_000)
QUICK = Sizes(repeats=3, messages=64, prefill=2_000)


def _rows(count: int) -> list[StoredMessage]:
    now = time.time()
    return [
        outgoing_message(PEER, "B", "127.0.0.1", 5001, TEXT, state=DeliveryState.PENDING, now=now)
        for _ in range(count)
    ]


def _chats(rows: list[StoredMessage]) -> list[Chat]:
    return [Chat(row.msg_id, row.sent_at, row.text) for row in rows]


def _incoming(chats: list[Chat]) -> list[StoredMessage]:
    return received_messages(SENDER, "A", "127.0.0.1", 5000, chats, now=time.time())


def _channels() -> tuple[SecureChannel, SecureChannel]:
    """An established channel pair (sender, receiver): the handshake done in memory."""
    alice, bob = session_identities(2)
    a = SecureChannel(Role.INITIATOR, Credentials.create(alice, "A", 5000))
    b = SecureChannel(Role.RESPONDER, Credentials.create(bob, "B", 5001))
    while (to_b := a.data_to_send()) or (to_a := b.data_to_send()):
        if to_b:
            b.receive_data(to_b)
        else:
            a.receive_data(to_a)
    return a, b


@contextlib.contextmanager
def _store(path: Path, prefill: int) -> Iterator[HistoryStore]:
    store = HistoryStore.open(path, Sealer.generate())
    try:
        for start in range(0, prefill, 1000):
            rows = _rows(min(1000, prefill - start))
            store.add_outgoing(rows)
            store.mark_delivered([row.msg_id for row in rows])
        yield store
    finally:
        store.close()


class Path_:
    """The parts one message passes through, and each step over a batch of messages.

    Each step takes what was made for it before the timing and returns how many
    messages it handled; `one` says one message per call, else the batch at once.
    """

    def __init__(self, a_store: HistoryStore, b_store: HistoryStore, news: IO[str]) -> None:
        self.a_store, self.b_store, self._news = a_store, b_store, news
        # A channel's frames must be read in the order they were sealed: one pair for
        # each way frames are made and then read (or made and thrown away).
        self.a, self.b = _channels()  # frames made and thrown away
        self.chats_out, self.chats_in = _channels()
        self.acks_out, self.acks_in = _channels()[::-1]
        self.bytes_out, _ = _channels()
        self.wire_a, self.wire_b = socket.socketpair()
        self._count = 0  # messages in the frames last made

    def close(self) -> None:
        self.wire_a.close()
        self.wire_b.close()

    @staticmethod
    def _parts(items: list[T], one: bool) -> list[list[T]]:
        return [[item] for item in items] if one else [items]

    # -- the sender

    def stored(self, rows: list[StoredMessage], one: bool) -> int:
        for part in self._parts(rows, one):
            self.a_store.add_outgoing(part)
        return len(rows)

    def queued(self, rows: list[StoredMessage], one: bool) -> int:
        outbox = _outbox()
        for row in rows:
            outbox.enqueue(OutgoingItem(row.msg_id, PEER, row.text, row.sent_at))
        return len(rows)

    def framed(self, outboxes: list[Outbox], one: bool) -> int:
        """Out of the queue, encoded, encrypted, framed: the bytes for the socket."""
        done = 0
        for outbox in outboxes:
            items = outbox.take_sendable(PEER)
            self.a.send_messages([Chat(i.msg_id, i.created_at, i.text) for i in items])
            self.a.data_to_send()
            done += len(items)
        return done

    def ack_received(self, frames: list[bytes], one: bool) -> int:
        acks = [
            event.message
            for frame in frames
            for event in self.acks_in.receive_data(frame)
            if isinstance(event, MessageReceived) and isinstance(event.message, Ack)
        ]
        return sum(len(ack.msg_ids) for ack in acks)

    def marked(self, ids: list[str], one: bool) -> int:
        for part in self._parts(ids, one):
            self.a_store.mark_delivered(part)
        return len(ids)

    def dequeued(self, flight: tuple[Outbox, list[str]], one: bool) -> int:
        outbox, ids = flight
        for part in self._parts(ids, one):
            outbox.acknowledge(PEER, part)
        return len(ids)

    # -- between them

    def through_socket(self, frames: list[bytes], one: bool) -> int:
        """The kernel's part: the sender's write and the receiver's read of each frame."""
        for frame in frames:
            self.wire_a.sendall(frame)
            need = len(frame)
            while need:
                need -= len(self.wire_b.recv(need))
        return len(frames) if one else self._count

    # -- the receiver

    def received(self, frames: list[bytes], one: bool) -> int:
        """Decrypted and decoded, one event per Chat."""
        return sum(len(self.chats_in.receive_data(frame)) for frame in frames)

    def stored_in(self, chats: list[Chat], one: bool) -> int:
        for part in self._parts(chats, one):
            self.b_store.add_incoming(_incoming(part))
        return len(chats)

    def acknowledged(self, chats: list[Chat], one: bool) -> int:
        for part in self._parts(chats, one):
            self.b.send_messages([Ack(tuple(c.msg_id for c in part))])
            self.b.data_to_send()
        return len(chats)

    def shown(self, chats: list[Chat], one: bool) -> int:
        """The news line of each, as the menu formats it, written to a file."""
        for chat in chats:
            event = MessageArrived("A", "127.0.0.1", 5000, SENDER, chat.text)
            self._news.write(describe_event(event) + "\n")
            if one:
                self._news.flush()
        self._news.flush()
        return len(chats)

    # -- what the steps need, made before they are timed

    def chat_frames(self, count: int, one: bool) -> list[bytes]:
        return self._frames(self.chats_out, count, one)

    def socket_frames(self, count: int, one: bool) -> list[bytes]:
        self._count = count
        return self._frames(self.bytes_out, count, one)

    def _frames(self, channel: SecureChannel, count: int, one: bool) -> list[bytes]:
        frames = []
        for part in self._parts(_chats(_rows(count)), one):
            channel.send_messages(part)
            frames.append(channel.data_to_send())
        return frames

    def ack_frames(self, count: int, one: bool) -> list[bytes]:
        frames = []
        for part in self._parts([row.msg_id for row in _rows(count)], one):
            self.acks_out.send_messages([Ack(tuple(part))])
            frames.append(self.acks_out.data_to_send())
        return frames

    def pending_ids(self, count: int, one: bool) -> list[str]:
        rows = _rows(count)
        self.a_store.add_outgoing(rows)
        return [row.msg_id for row in rows]

    @staticmethod
    def waiting(count: int, one: bool) -> list[Outbox]:
        """Queues holding `count` messages: one each (option 1), or all in one."""
        rows = _rows(count)
        outboxes = []
        for part in Path_._parts(rows, one):
            outbox = _outbox(len(part))
            for row in part:
                outbox.enqueue(OutgoingItem(row.msg_id, PEER, row.text, row.sent_at))
            outboxes.append(outbox)
        return outboxes

    @staticmethod
    def flying(count: int, one: bool) -> tuple[Outbox, list[str]]:
        [outbox] = Path_.waiting(count, False)
        return outbox, [item.msg_id for item in outbox.take_sendable(PEER)]


def _outbox(window: int = WINDOW) -> Outbox:
    return Outbox(max_per_peer=10**9, max_in_flight=window)


def _made(make: Callable[[int], object]) -> Callable[[Path_, int, bool], object]:
    return lambda path, count, one: make(count)


@dataclass(frozen=True)
class Step:
    side: str  # whose network thread does it
    what: str
    prepare: Callable[[Path_, int, bool], Any]
    run: Callable[[Path_, Any, bool], int]


STEPS: tuple[Step, ...] = (
    Step(
        "sender", "a new message: its id and its row", _made(int), lambda p, n, one: len(_rows(n))
    ),
    Step("sender", "stored as pending: sealed, INSERT, committed", _made(_rows), Path_.stored),
    Step("sender", "queued (outbox)", _made(_rows), Path_.queued),
    Step(
        "sender",
        "to the wire: out of the queue, encoded, encrypted, framed",
        lambda p, n, one: Path_.waiting(n, one),
        Path_.framed,
    ),
    Step("both", "a loopback socket: written, read", Path_.socket_frames, Path_.through_socket),
    Step("receiver", "received: decrypted, decoded", Path_.chat_frames, Path_.received),
    Step(
        "receiver",
        "stored: its row, sealed, INSERT OR IGNORE, committed",
        _made(lambda n: _chats(_rows(n))),
        Path_.stored_in,
    ),
    Step(
        "receiver",
        "acknowledged: the Ack encoded, encrypted, framed",
        _made(lambda n: _chats(_rows(n))),
        Path_.acknowledged,
    ),
    Step(
        "receiver",
        "shown: its news line formatted and written",
        _made(lambda n: _chats(_rows(n))),
        Path_.shown,
    ),
    Step(
        "sender",
        "the acknowledgement received: decrypted, decoded",
        Path_.ack_frames,
        Path_.ack_received,
    ),
    Step("sender", "marked delivered: UPDATE, committed", Path_.pending_ids, Path_.marked),
    Step(
        "sender",
        "taken off the queue (outbox)",
        lambda p, n, one: Path_.flying(n, one),
        Path_.dequeued,
    ),
)


def measure(sizes: Sizes, folder: Path) -> dict[bool, list[list[float]]]:
    """For one-at-a-time (True) and pipelined (False): each step's per-message samples."""
    results: dict[bool, list[list[float]]] = {True: [], False: []}
    with (
        _store(folder / "sender.db", sizes.prefill) as a_store,
        _store(folder / "receiver.db", sizes.prefill) as b_store,
        open(folder / "news.out", "w", encoding="utf-8") as news,
    ):
        path = Path_(a_store, b_store, news)
        try:
            for one in (True, False):
                for step in STEPS:
                    samples = []
                    for _ in range(sizes.repeats):
                        prepared = step.prepare(path, sizes.messages, one)
                        start = time.thread_time()
                        handled = step.run(path, prepared, one)
                        samples.append((time.thread_time() - start) * 1e6 / handled)
                    results[one].append(samples)
        finally:
            path.close()
    return results


def cost_rows(results: dict[bool, list[list[float]]], sizes: Sizes) -> list[Row]:
    rows: list[Row] = []
    for one, label in ((True, "one at a time"), (False, f"pipelined, {WINDOW} at once")):
        total = 0.0
        for step, samples in zip(STEPS, results[one], strict=True):
            summary = summarize(samples)
            total += summary.minimum
            rows.append(
                figure_row(
                    f"cost per message, {label}: {step.side}: {step.what}",
                    summary.minimum,
                    "us",
                    spread=f"min-max {summary.minimum:.3g}-{summary.maximum:.3g} (n={summary.n})",
                )
            )
        rows.append(figure_row(f"cost per message, {label}: sum of the steps", total, "us"))
    return rows


def run(quick: bool, *, sizes: Sizes | None = None) -> list[Row]:
    sizes = sizes or (QUICK if quick else FULL)
    with tempfile.TemporaryDirectory(prefix="bench-costs-") as tmp:
        return cost_rows(measure(sizes, Path(tmp)), sizes)


def main(argv: list[str] | None = None) -> int:
    return module_main(run, __doc__ or "costs", argv, entry="costs")


if __name__ == "__main__":
    sys.exit(main())
