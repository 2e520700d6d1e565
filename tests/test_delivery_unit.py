"""Exactly-once delivery from its parts: the receiver's dedupe, the sender's queue, the limits.

tests/test_storage.py and tests/test_outbox.py test each part alone; these
tests check what delivery needs from them together: a duplicate is still
recognised after a restart, a batch that was not stored is not remembered as
seen, a queue rebuilt from the database keeps its order and its age, and the
node's Delivery over these parts delivers every message exactly once and in
order whatever is lost or crashes. The last section runs a node in this
process with small limits to see the queue limits as the user sees them.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto_utils import Identity, Sealer, fingerprint_of
from peerchat.delivery import Delivery, outgoing_message, received_messages
from peerchat.errors import StorageError
from peerchat.events import Outcome, QueuedExpired
from peerchat.limits import MAX_QUEUED_AGE, MAX_QUEUED_PER_PEER
from peerchat.net.node import NodeConfig
from peerchat.policy.outbox import QueueFull
from peerchat.protocol.messages import Chat
from peerchat.ui.menu import describe_event, describe_send
from storage import DeliveryState, Direction, HistoryStore, StoredMessage
from tests.support import RunningNode, free_tcp_port, start_node

ALICE = fingerprint_of(b"alice's key")
BOB = fingerprint_of(b"bob's key")
CAROL = fingerprint_of(b"carol's key")


class Clock:
    """The injected clock: time moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def advance(self, seconds: float) -> None:
        self.now += seconds


def incoming(msg_id: str, text: str, peer: str = ALICE) -> StoredMessage:
    return StoredMessage(
        msg_id=msg_id,
        peer_fp=peer,
        peer_name="Alice",
        peer_host="127.0.0.1",
        peer_port=5000,
        direction=Direction.IN,
        text=text,
        sent_at=1000.0,
        stored_at=2000.0,
        state=DeliveryState.RECEIVED,
    )


def outgoing(msg_id: str, text: str, sent_at: float, peer: str = BOB) -> StoredMessage:
    return StoredMessage(
        msg_id=msg_id,
        peer_fp=peer,
        peer_name="Bob",
        peer_host="127.0.0.1",
        peer_port=5001,
        direction=Direction.OUT,
        text=text,
        sent_at=sent_at,
        stored_at=sent_at,
        state=DeliveryState.PENDING,
    )


def mid(n: int) -> str:
    return f"{n:032x}"


@pytest.fixture
def sealer() -> Sealer:
    return Sealer.generate()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "chat_history.db"


# -- the receiver: dedupe in add_incoming --------------------------------------------------


def test_a_duplicate_is_recognised_after_a_restart(db_path: Path, sealer: Sealer) -> None:
    with HistoryStore.open(db_path, sealer) as store:
        assert store.add_incoming([incoming(mid(1), "one"), incoming(mid(2), "two")]) == [
            True,
            True,
        ]
    # The receiver was restarted; the sender, never acknowledged, sends again.
    with HistoryStore.open(db_path, sealer) as store:
        resent = [incoming(mid(1), "one"), incoming(mid(3), "three"), incoming(mid(2), "two")]
        assert store.add_incoming(resent) == [False, True, False]
        assert [m.text for m in store.history()] == ["one", "two", "three"]


def test_an_incoming_id_equal_to_an_outgoing_one_is_a_new_message(
    db_path: Path, sealer: Sealer
) -> None:
    with HistoryStore.open(db_path, sealer) as store:
        store.add_outgoing([outgoing(mid(7), "mine", 1000.0, peer=ALICE)])
        assert store.add_incoming([incoming(mid(7), "theirs")]) == [True]
        assert store.add_incoming([incoming(mid(7), "theirs")]) == [False]
        assert [(m.direction, m.text) for m in store.history()] == [
            (Direction.OUT, "mine"),
            (Direction.IN, "theirs"),
        ]
        assert [m.text for m in store.pending_messages()] == ["mine"]


def test_a_batch_that_was_not_stored_is_not_remembered_as_seen(
    db_path: Path, sealer: Sealer
) -> None:
    """Not stored means not acknowledged: the resend must then count as new, every message of it."""
    with HistoryStore.open(db_path, sealer) as store:
        store.add_incoming([incoming(mid(1), "before")])
        # Make the third insert of the next batch fail inside the transaction.
        with sqlite3.connect(db_path) as side:
            side.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON messages "
                f"WHEN NEW.msg_id = '{mid(4)}' BEGIN SELECT RAISE(ABORT, 'disk trouble'); END"
            )
        batch = [incoming(mid(2), "a"), incoming(mid(3), "b"), incoming(mid(4), "c")]
        with pytest.raises(StorageError):
            store.add_incoming(batch)
        assert [m.text for m in store.history()] == ["before"]
        with sqlite3.connect(db_path) as side:
            side.execute("DROP TRIGGER refuse")
        assert store.add_incoming([incoming(mid(1), "before"), *batch]) == [
            False,
            True,
            True,
            True,
        ]
        assert [m.text for m in store.history()] == ["before", "a", "b", "c"]


_copies = st.lists(
    st.tuples(
        st.booleans(),  # restart the receiver before this batch
        st.lists(st.tuples(st.sampled_from([ALICE, CAROL]), st.integers(0, 5)), max_size=6),
    ),
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(batches=_copies)
def test_dedupe_keeps_the_first_copy_of_each_message_across_restarts(
    batches: list[tuple[bool, list[tuple[str, int]]]],
) -> None:
    """Whatever the resends, batches and restarts: True exactly for the first copy."""
    sealer = Sealer.generate()
    seen: set[tuple[str, int]] = set()
    expected: list[str] = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "chat_history.db"
        store = HistoryStore.open(path, sealer)
        try:
            for number, (restart, batch) in enumerate(batches):
                if restart:
                    store.close()
                    store = HistoryStore.open(path, sealer)
                rows = [incoming(mid(n), f"{p[:4]}/{n}/copy {number}", p) for p, n in batch]
                mask = []
                for key in batch:
                    mask.append(key not in seen)
                    if key not in seen:
                        seen.add(key)
                        expected.append(f"{key[0][:4]}/{key[1]}/copy {number}")
                assert store.add_incoming(rows) == mask
            assert [m.text for m in store.history(limit=1000)] == expected
        finally:
            store.close()


# -- the sender: a queue rebuilt from the database ---------------------------------------


def test_a_reloaded_queue_keeps_its_order_and_its_age(db_path: Path, sealer: Sealer) -> None:
    clock = Clock()
    max_age = 100.0
    problems: list[str] = []
    with HistoryStore.open(db_path, sealer) as store:
        delivery = Delivery(store, problems.append, max_queued_age=max_age, max_in_flight=2)
        for n in range(1, 6):
            peer, name = (BOB, "Bob") if n != 3 else (CAROL, "Carol")
            row = outgoing_message(
                peer, name, "127.0.0.1", 5001, f"m{n}", state=DeliveryState.PENDING, now=clock.now
            )
            delivery.enqueue([row])
            clock.advance(10)
        sent = delivery.take_chats(BOB)
        assert [c.text for c in sent] == ["m1", "m2"]
        assert [r.text for r in delivery.acknowledge(BOB, [sent[0].msg_id])] == ["m1"]
        # Crash here: m2 was in flight, unacknowledged; m4, m5 waiting; m3 for Carol.

    clock.advance(59)  # the restart: m2 was queued 99 s ago, m3 89 s ago
    with HistoryStore.open(db_path, sealer) as store:
        delivery = Delivery(store, problems.append, max_queued_age=max_age, max_in_flight=2)
        delivery.load()
        assert delivery.expire(clock.now) == []
        clock.advance(1.5)  # m2 is now older than max_age, counted from when it was sent
        assert [r.text for r in delivery.expire(clock.now)] == ["m2"]
        assert [c.text for c in delivery.take_chats(BOB)] == ["m4", "m5"]
        assert [c.text for c in delivery.take_chats(CAROL)] == ["m3"]
        states = {m.text: (m.state, m.detail) for m in store.history()}
        assert states["m1"] == (DeliveryState.DELIVERED, None)
        assert states["m2"] == (DeliveryState.FAILED, "expired in the queue")
        assert [m.text for m in store.pending_messages()] == ["m3", "m4", "m5"]
    assert problems == []


def to_bob(text: str, now: float = 1000.0) -> StoredMessage:
    return outgoing_message(
        BOB, "Bob", "127.0.0.1", 5001, text, state=DeliveryState.PENDING, now=now
    )


def test_a_batch_over_the_queue_limit_is_refused_whole(db_path: Path, sealer: Sealer) -> None:
    problems: list[str] = []
    with HistoryStore.open(db_path, sealer) as store:
        delivery = Delivery(store, problems.append, max_queued_per_peer=3)
        delivery.enqueue([to_bob("one"), to_bob("two")])
        with pytest.raises(QueueFull):
            delivery.enqueue([to_bob("three"), to_bob("four")])
        assert [m.text for m in store.pending_messages()] == ["one", "two"]
        assert delivery.pending_count(BOB) == 2
        delivery.enqueue([to_bob("three")])
        assert [c.text for c in delivery.take_chats(BOB)] == ["one", "two", "three"]
    assert problems == []


def test_a_store_that_fails_to_record_a_delivery_keeps_the_message_pending(
    db_path: Path, sealer: Sealer
) -> None:
    problems: list[str] = []
    store = HistoryStore.open(db_path, sealer)
    delivery = Delivery(store, problems.append)
    delivery.enqueue([to_bob("hello")])
    [chat] = delivery.take_chats(BOB)
    store.close()  # every later write fails
    assert [r.text for r in delivery.acknowledge(BOB, [chat.msg_id])] == ["hello"]
    assert len(problems) == 1
    assert problems[0].startswith("Cannot record delivery: ")
    # Still pending on disk: sent again after a restart, and the receiver's dedupe drops it.
    with HistoryStore.open(db_path, sealer) as reopened:
        assert [m.text for m in reopened.pending_messages()] == ["hello"]


def test_a_message_the_store_refuses_is_not_queued(db_path: Path, sealer: Sealer) -> None:
    problems: list[str] = []
    store = HistoryStore.open(db_path, sealer)
    delivery = Delivery(store, problems.append)
    store.close()
    with pytest.raises(StorageError):
        delivery.enqueue([to_bob("lost?")])
    assert delivery.pending_count(BOB) == 0
    assert delivery.take_chats(BOB) == []
    assert problems == []


# -- the two together: the node's delivery algorithm over a link that loses things --------


@dataclass
class Sender:
    """The sending side: the node's Delivery over a store that may crash."""

    path: Path
    sealer: Sealer
    clock: Clock
    window: int
    store: HistoryStore = field(init=False)
    delivery: Delivery = field(init=False)
    problems: list[str] = field(default_factory=list)
    count: int = 0

    def __post_init__(self) -> None:
        self.start()

    def start(self) -> None:
        self.store = HistoryStore.open(self.path, self.sealer)
        self.delivery = Delivery(self.store, self.problems.append, max_in_flight=self.window)
        self.delivery.load()

    def crash(self) -> None:
        self.store.close()
        self.start()

    def send(self) -> str:
        self.count += 1
        text = f"m{self.count:03d}"
        row = outgoing_message(
            BOB, "Bob", "127.0.0.1", 5001, text, state=DeliveryState.PENDING, now=self.clock.now
        )
        self.delivery.enqueue([row])
        self.clock.advance(1)
        return text


@dataclass
class Receiver:
    """The receiving side as the node runs it: store the batch, then acknowledge all of it."""

    path: Path
    sealer: Sealer
    clock: Clock
    store: HistoryStore = field(init=False)

    def __post_init__(self) -> None:
        self.store = HistoryStore.open(self.path, self.sealer)

    def crash(self) -> None:
        self.store.close()
        self.store = HistoryStore.open(self.path, self.sealer)

    def on_chats(self, chats: list[Chat]) -> list[str]:
        rows = received_messages(ALICE, "Alice", "127.0.0.1", 5000, chats, now=self.clock.now)
        self.store.add_incoming(rows)
        return [chat.msg_id for chat in chats]


_steps = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(1, 12)),
        st.tuples(st.just("connect"), st.just(0)),
        st.tuples(st.just("deliver"), st.integers(0, 10)),  # acknowledgement arrives
        st.tuples(st.just("stored, then the session drops"), st.integers(1, 10)),
        st.tuples(st.just("session lost"), st.just(0)),
        st.tuples(st.just("sender crash"), st.just(0)),
        st.tuples(st.just("receiver crash"), st.just(0)),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(steps=_steps, window=st.integers(1, 4))
def test_every_message_arrives_once_in_order_whatever_is_lost(
    steps: list[tuple[str, int]], window: int
) -> None:
    """Sessions drop, acknowledgements are lost, either side crashes: still exactly once."""
    sealer_a, sealer_b, clock = Sealer.generate(), Sealer.generate(), Clock()
    with tempfile.TemporaryDirectory() as folder:
        sender = Sender(Path(folder) / "a.db", sealer_a, clock, window)
        receiver = Receiver(Path(folder) / "b.db", sealer_b, clock)
        wire: list[Chat] | None = None  # frames on the way; None: no session
        sent: list[str] = []

        def pump() -> None:
            if wire is not None:
                wire.extend(sender.delivery.take_chats(BOB))

        def deliver(count: int, ack_lost: bool) -> None:
            assert wire is not None
            batch, wire[:] = wire[:count], wire[count:]
            if batch:
                acks = receiver.on_chats(batch)
                if not ack_lost:
                    sender.delivery.acknowledge(BOB, acks)
            pump()

        try:
            for step, n in steps:
                if step == "send":
                    sent += [sender.send() for _ in range(n)]
                    pump()
                elif step == "connect" and wire is None:
                    wire = []
                    pump()
                elif step == "deliver" and wire is not None:
                    deliver(n, ack_lost=False)
                elif step == "stored, then the session drops" and wire is not None:
                    deliver(n, ack_lost=True)  # TCP loses an acknowledgement only this way
                    wire = None
                    sender.delivery.session_lost(BOB)
                elif step in ("session lost", "receiver crash"):
                    if step == "receiver crash":
                        receiver.crash()
                    wire = None
                    sender.delivery.session_lost(BOB)
                elif step == "sender crash":
                    wire = None
                    sender.crash()
            # Then the link heals (or the session goes on) and stays up.
            if wire is None:
                wire = []
                pump()
            for _ in range(len(sent) + 2):
                deliver(len(wire), ack_lost=False)
            assert wire == []
            received = [m.text for m in receiver.store.history(limit=10_000)]
            assert received == sent
            assert sender.store.pending_messages() == []
            assert sender.delivery.peers_with_pending() == []
            assert sender.problems == []
            assert {m.state for m in sender.store.history(limit=10_000)} <= {
                DeliveryState.DELIVERED
            }
        finally:
            sender.store.close()
            receiver.store.close()


# -- the limits, through a node with small ones -----------------------------------------------


@pytest.fixture(scope="module")
def bob_identity() -> Identity:
    return Identity.generate(2048)


class Running(RunningNode):
    def wait_for_expired(self, timeout: float = 10.0) -> QueuedExpired:
        with self.changed:
            assert self.changed.wait_for(
                lambda: any(isinstance(e, QueuedExpired) for e in self.events), timeout
            ), self.events
            return next(e for e in self.events if isinstance(e, QueuedExpired))


@pytest.fixture
def start_alice(
    tmp_path: Path, bob_identity: Identity
) -> Iterator[tuple[list[Running], Path, str]]:
    """Alice knows Bob (pinned, last seen at a loopback port where nobody listens)."""
    started: list[Running] = []
    yield started, tmp_path / "alice.db", bob_identity.fingerprint
    for running in started:
        running.close()


def run_alice(
    started: list[Running],
    path: Path,
    bob: Identity,
    sealer: Sealer,
    *,
    max_queued_per_peer: int = MAX_QUEUED_PER_PEER,
    max_queued_age: float = MAX_QUEUED_AGE,
) -> Running:
    store = HistoryStore.open(path, sealer)
    store.pin("Bob", bob.fingerprint)
    store.upsert_peer(bob.fingerprint, "Bob", bob.public_der, "127.0.0.1", free_tcp_port(), 1.0)
    config = NodeConfig(
        name="Alice",
        port=free_tcp_port(),
        data_dir=path.parent,
        bind="127.0.0.1",
        discovery=False,
        max_queued_per_peer=max_queued_per_peer,
        max_queued_age=max_queued_age,
    )
    running = start_node(config, Identity.generate(2048), store, Running)
    started.append(running)
    return running


def states(store: HistoryStore) -> dict[str, tuple[DeliveryState, str | None]]:
    return {m.text: (m.state, m.detail) for m in store.history(limit=1000)}


def test_a_full_queue_refuses_the_next_message_and_says_so(
    start_alice: tuple[list[Running], Path, str], bob_identity: Identity, sealer: Sealer
) -> None:
    started, path, bob = start_alice
    alice = run_alice(started, path, bob_identity, sealer, max_queued_per_peer=3)
    results = [alice.node.send_to_peer(bob, f"q{n}") for n in range(4)]
    assert [r.outcome for r in results] == [Outcome.QUEUED] * 3 + [Outcome.NOT_SENT]
    shown = describe_send(results[3])
    assert shown.startswith(f"Message to Bob (127.0.0.1:{results[3].port}) not sent:")
    assert "queue for this peer is full (3 messages waiting)" in shown
    assert "queued for delivery" not in shown
    assert "queued for delivery" in describe_send(results[0])
    assert states(alice.store) == {
        "q0": (DeliveryState.PENDING, None),
        "q1": (DeliveryState.PENDING, None),
        "q2": (DeliveryState.PENDING, None),
        "q3": (DeliveryState.FAILED, "queue full"),
    }


def test_a_batch_beyond_the_queue_limit_leaves_nothing_pending_outside_the_queue(
    start_alice: tuple[list[Running], Path, str], bob_identity: Identity, sealer: Sealer
) -> None:
    """A message the queue refused must not stay pending: a restart would send it anyway."""
    started, path, bob = start_alice
    alice = run_alice(started, path, bob_identity, sealer, max_queued_per_peer=3)
    with pytest.raises(QueueFull):
        alice.node.submit(bob, ["s1", "s2", "s3", "s4", "s5"])
    pending = [m.text for m in alice.store.pending_messages()]
    assert len(pending) <= 3
    assert not {"s4", "s5"} & set(pending), states(alice.store)


def test_a_message_queued_too_long_is_marked_failed_and_said(
    start_alice: tuple[list[Running], Path, str], bob_identity: Identity, sealer: Sealer
) -> None:
    started, path, bob = start_alice
    alice = run_alice(started, path, bob_identity, sealer, max_queued_age=0.3)
    assert alice.node.send_to_peer(bob, "too late").outcome is Outcome.QUEUED
    expired = alice.wait_for_expired()
    assert (expired.name, expired.count) == ("Bob", 1)
    assert describe_event(expired) == (
        "1 queued message(s) to Bob expired undelivered: marked failed."
    )
    assert states(alice.store) == {"too late": (DeliveryState.FAILED, "expired in the queue")}


def test_the_age_of_a_queued_message_counts_from_when_it_was_sent_across_restarts(
    start_alice: tuple[list[Running], Path, str], bob_identity: Identity, sealer: Sealer
) -> None:
    started, path, bob = start_alice
    with HistoryStore.open(path, sealer) as store:
        now = time.time()
        store.add_outgoing(
            [
                outgoing(mid(1), "queued two minutes ago", now - 120, peer=bob),
                outgoing(mid(2), "queued just now", now, peer=bob),
            ]
        )
    alice = run_alice(started, path, bob_identity, sealer, max_queued_age=60.0)
    expired = alice.wait_for_expired()
    assert expired.count == 1
    assert states(alice.store) == {
        "queued two minutes ago": (DeliveryState.FAILED, "expired in the queue"),
        "queued just now": (DeliveryState.PENDING, None),
    }
