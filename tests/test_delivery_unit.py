"""Exactly-once delivery from its parts: the receiver's dedupe, the sender's queue, the limits.

tests/test_storage.py and tests/test_outbox.py test each part alone; these
tests check what delivery needs from them together: a duplicate is still
recognised after a restart, a batch that was not stored is not remembered as
seen, a queue rebuilt from the database keeps its order and its age, and the
receiver's rule (`delivery.receive_chats`: store, then acknowledge the whole
batch, duplicates included) together with the sender's Delivery delivers every
message exactly once and in order whatever is lost or crashes (a Hypothesis
state machine, with the two classic cases spelled out). The last section runs
a node in this process with small limits to see the queue limits as the user
sees them.
"""

from __future__ import annotations

import enum
import functools
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import Phase, event, given, settings, target
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from crypto_utils import Identity, Sealer, fingerprint_of
from peerchat import delivery
from peerchat.delivery import Delivery, outgoing_message
from peerchat.errors import StorageError
from peerchat.events import Outcome, QueuedExpired
from peerchat.limits import MAX_IN_FLIGHT, MAX_QUEUED_AGE, MAX_QUEUED_PER_PEER
from peerchat.net.node import NodeConfig
from peerchat.policy.outbox import QueueFull
from peerchat.protocol.messages import Ack, Chat
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


def test_an_acknowledgement_frees_the_window_before_its_batch_is_recorded(
    db_path: Path, sealer: Sealer
) -> None:
    """The node sends the next window between the two halves: pending in the store
    until the second half, whatever the first half let go."""
    with HistoryStore.open(db_path, sealer) as store:
        delivery = Delivery(store, lambda _: None, max_in_flight=2)
        delivery.enqueue([to_bob(f"m{n}") for n in range(1, 5)])
        first = delivery.take_chats(BOB)
        assert delivery.take_chats(BOB) == []  # the window is full
        done = delivery.out_of_window(BOB, [c.msg_id for c in first] + ["unknown"])
        assert done == [c.msg_id for c in first]
        assert [c.text for c in delivery.take_chats(BOB)] == ["m3", "m4"]
        assert [m.text for m in store.pending_messages()] == ["m1", "m2", "m3", "m4"]
        assert [r.text for r in delivery.record_delivered(done)] == ["m1", "m2"]
        assert [m.text for m in store.pending_messages()] == ["m3", "m4"]
        assert delivery.out_of_window(BOB, done) == []  # none twice


def to_bob(text: str, now: float = 1000.0) -> StoredMessage:
    return outgoing_message(
        BOB, "Bob", "127.0.0.1", 5001, text, state=DeliveryState.PENDING, now=now
    )


def test_a_batch_over_the_queue_limit_is_refused_whole(db_path: Path, sealer: Sealer) -> None:
    problems: list[str] = []
    with HistoryStore.open(db_path, sealer) as store:
        delivery = Delivery(store, problems.append, max_queued_per_peer=3)
        delivery.enqueue([to_bob("one"), to_bob("two")])
        with pytest.raises(QueueFull, match=f"^{BOB}$"):  # it names the peer
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


def test_a_queue_reloaded_under_a_lower_limit_fails_what_no_longer_fits(
    db_path: Path, sealer: Sealer
) -> None:
    """Started again with a smaller --queue-limit: the oldest stay queued, the rest fail."""
    with HistoryStore.open(db_path, sealer) as store:
        store.add_outgoing(
            [outgoing(mid(n), f"b{n}", 1000.0 + n) for n in range(1, 6)]
            + [outgoing(mid(9), "c", 1010.0, peer=CAROL)]
        )
        problems: list[str] = []
        delivery = Delivery(store, problems.append, max_queued_per_peer=3)
        delivery.load()
        assert [c.text for c in delivery.take_chats(BOB)] == ["b1", "b2", "b3"]
        assert [c.text for c in delivery.take_chats(CAROL)] == ["c"]
        assert states(store) == {
            "b1": (DeliveryState.PENDING, None),
            "b2": (DeliveryState.PENDING, None),
            "b3": (DeliveryState.PENDING, None),
            "b4": (DeliveryState.FAILED, "queue full"),
            "b5": (DeliveryState.FAILED, "queue full"),
            "c": (DeliveryState.PENDING, None),
        }
        assert delivery.queued_ids(BOB) == [mid(1), mid(2), mid(3)]
        assert delivery.queued_ids(CAROL) == [mid(9)]
        assert delivery.is_queued(mid(3)) and not delivery.is_queued(mid(4))
    assert problems == []


def test_a_pending_row_without_a_recipient_key_is_left_out_of_the_queue(
    db_path: Path, sealer: Sealer
) -> None:
    with HistoryStore.open(db_path, sealer) as store:
        nobody = outgoing(mid(1), "to nobody", 1000.0)._replace(peer_fp=None)
        store.add_outgoing([nobody, outgoing(mid(2), "to Bob", 1001.0)])
        problems: list[str] = []
        delivery = Delivery(store, problems.append)
        delivery.load()
        assert [c.text for c in delivery.take_chats(BOB)] == ["to Bob"]
        assert not delivery.is_queued(mid(1))
    assert problems == []


def test_a_message_without_a_recipient_key_cannot_be_queued(db_path: Path, sealer: Sealer) -> None:
    with HistoryStore.open(db_path, sealer) as store:
        delivery = Delivery(store, lambda problem: None)
        nobody = to_bob("lost")._replace(peer_fp=None)
        with pytest.raises(ValueError, match=r"^a queued message needs a recipient's fingerprint$"):
            delivery.enqueue([nobody])
        assert store.history() == []


def test_a_store_that_fails_to_record_an_expiry_says_so_and_forgets_the_message(
    db_path: Path, sealer: Sealer
) -> None:
    problems: list[str] = []
    store = HistoryStore.open(db_path, sealer)
    delivery = Delivery(store, problems.append, max_queued_age=10.0)
    late = to_bob("late", now=1000.0)
    delivery.enqueue([late])
    store.close()  # every later write fails
    assert [r.text for r in delivery.expire(1011.0)] == ["late"]
    assert len(problems) == 1
    assert problems[0].startswith("Cannot record expired messages: ")
    assert not delivery.is_queued(late.msg_id)


# -- the receiver's rule: store, then acknowledge all of it, show only what is new ----------


def chat(n: int) -> Chat:
    return Chat(mid(n), 1000.0 + n, f"m{n}")


def receive(store: HistoryStore, chats: list[Chat], now: float = 2000.0) -> delivery.Received:
    return delivery.receive_chats(store, ALICE, "Alice", "127.0.0.1", 5000, chats, now=now)


def test_a_batch_is_acknowledged_whole_and_only_its_new_messages_are_shown(
    db_path: Path, sealer: Sealer
) -> None:
    with HistoryStore.open(db_path, sealer) as store:
        first = receive(store, [chat(1), chat(2)])
        assert first.ack_ids == (mid(1), mid(2))
        assert first.fresh == (chat(1), chat(2))
        # The acknowledgement was lost: both come again, with a new one between them.
        again = receive(store, [chat(1), chat(3), chat(2)], now=3000.0)
        assert again.ack_ids == (mid(1), mid(3), mid(2))
        assert again.fresh == (chat(3),)
        assert store.history() == [
            StoredMessage(
                msg_id=mid(n),
                peer_fp=ALICE,
                peer_name="Alice",
                peer_host="127.0.0.1",
                peer_port=5000,
                direction=Direction.IN,
                text=f"m{n}",
                sent_at=1000.0 + n,
                stored_at=stored_at,
                state=DeliveryState.RECEIVED,
            )
            for n, stored_at in ((1, 2000.0), (2, 2000.0), (3, 3000.0))
        ]


def test_a_batch_that_cannot_be_stored_is_not_acknowledged(db_path: Path, sealer: Sealer) -> None:
    store = HistoryStore.open(db_path, sealer)
    store.close()  # every write fails
    with pytest.raises(StorageError):
        receive(store, [chat(1)])
    with HistoryStore.open(db_path, sealer) as reopened:
        assert reopened.history() == []
        assert receive(reopened, [chat(1)]).fresh == (chat(1),)  # the resend is new


def test_acknowledgements_go_out_in_order_a_bounded_number_of_ids_each() -> None:
    received = delivery.Received(ack_ids=tuple(mid(n) for n in range(7)), fresh=())
    assert received.acks(3) == [
        Ack((mid(0), mid(1), mid(2))),
        Ack((mid(3), mid(4), mid(5))),
        Ack((mid(6),)),
    ]
    assert received.acks(7) == [Ack(tuple(mid(n) for n in range(7)))]
    assert delivery.Received(ack_ids=(), fresh=()).acks() == []
    many = delivery.Received(ack_ids=tuple(mid(n) for n in range(MAX_IN_FLIGHT + 1)), fresh=())
    assert [len(ack.msg_ids) for ack in many.acks()] == [MAX_IN_FLIGHT, 1]


# -- the two together: a state machine over sessions that drop and peers that crash -----------


@dataclass
class Sender:
    """Alice: the node's Delivery over a store that may crash."""

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


def _marks_failure(step: Callable[..., None]) -> Callable[..., None]:
    """A rule that raised leaves the machine broken: teardown then only cleans up."""

    @functools.wraps(step)
    def run(machine: ExactlyOnce, *args: object, **kwargs: object) -> None:
        try:
            step(machine, *args, **kwargs)
        except BaseException:
            machine.broken = True
            raise

    return run


# The machine opens and closes many small databases: in memory where the system offers it.
MEMORY_DIR = "/dev/shm" if Path("/dev/shm").is_dir() else None


class Trouble(enum.Enum):
    ALICE_CRASHES = "Alice crashes"
    BOB_CRASHES = "Bob crashes"
    BOBS_DISK_REFUSES = "Bob's disk refuses a batch"


class ExactlyOnce(RuleBasedStateMachine):
    """Alice sends to Bob; sessions drop with messages and acknowledgements in flight,
    Bob's disk refuses a batch, either peer crashes. Bob receives through the node's
    own rule (`delivery.receive_chats`) and Alice sends through the node's Delivery.

    After every step Bob has shown a prefix of what Alice sent, each message once,
    and Alice counts nothing as delivered that Bob has not stored. At the end the
    link heals and stays up: then everything sent arrives, once, in order, and
    Alice has nothing left pending.

    Hypothesis orders rules by their number of arguments, then by name, and
    favours the first enabled one. The rules without arguments make that
    favourite path the interesting one: Bob reads, the session drops before
    Alice reads his acknowledgement, the next session resends. Reading
    acknowledgements takes an argument, so they tend to stay on the wire a
    while; and any other trouble may strike right after Bob stored a batch.
    Each run also reports how many batches held a duplicate as a Hypothesis
    target, so generation leans towards runs that reach one.
    """

    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.TemporaryDirectory(dir=MEMORY_DIR)
        self.clock = Clock()
        self.bob_path = Path(self.folder.name) / "bob.db"
        self.bob_sealer = Sealer.generate()
        self.bob = HistoryStore.open(self.bob_path, self.bob_sealer)
        self.alice: Sender | None = None
        self.to_bob: list[Chat] | None = None  # chats on the wire; None: no session
        self.to_alice: list[Ack] = []  # acknowledgements on the wire
        self.sent: list[str] = []
        self.shown: list[str] = []  # what Bob's screen showed, in order
        self.duplicates = 0  # batches in which Bob received a message he already had
        self.broken = False

    @property
    def sender(self) -> Sender:
        assert self.alice is not None
        return self.alice

    def pump(self) -> None:
        if self.to_bob is not None:
            self.to_bob.extend(self.sender.delivery.take_chats(BOB))

    def session_lost(self) -> None:
        self.to_bob = None
        self.to_alice = []
        self.sender.delivery.session_lost(BOB)

    def restart_bob(self) -> None:
        self.bob.close()
        self.bob = HistoryStore.open(self.bob_path, self.bob_sealer)

    @initialize(window=st.integers(1, 4), first=st.integers(1, 6))
    @_marks_failure
    def start(self, window: int, first: int) -> None:
        path = Path(self.folder.name) / "alice.db"
        self.alice = Sender(path, Sealer.generate(), self.clock, window)
        self.alice_sends(first)
        self.connect()

    # -- steps that move messages forward --------------------------------------------

    @precondition(lambda self: bool(self.to_bob))
    @rule()
    @_marks_failure
    def bob_reads(self, count: int = 2) -> None:
        """Bob reads the next `count` chats as one batch (two when Hypothesis picks this rule)."""
        assert self.to_bob is not None
        batch, self.to_bob[:] = self.to_bob[:count], self.to_bob[count:]
        received = delivery.receive_chats(
            self.bob, ALICE, "Alice", "127.0.0.1", 5000, batch, now=self.clock.now
        )
        self.shown += [chat.text for chat in received.fresh]
        if len(received.fresh) < len(batch):
            self.duplicates += 1
        self.to_alice += received.acks()

    @precondition(lambda self: bool(self.to_alice))
    @rule(count=st.integers(1, 3))
    @_marks_failure
    def alice_reads_acks(self, count: int = 1) -> None:
        acks, self.to_alice = self.to_alice[:count], self.to_alice[count:]
        done = {
            row.msg_id for ack in acks for row in self.sender.delivery.acknowledge(BOB, ack.msg_ids)
        }
        if done:
            stored = {m.msg_id for m in self.bob.history(limit=10_000)}
            assert done <= stored, "delivered, but Bob never stored it"
        self.pump()

    @precondition(lambda self: self.to_bob is None)
    @rule()
    @_marks_failure
    def connect(self) -> None:
        self.to_bob = []
        self.to_alice = []
        self.pump()

    @rule(count=st.integers(1, 5))
    @_marks_failure
    def alice_sends(self, count: int) -> None:
        self.sent += [self.sender.send() for _ in range(count)]
        self.pump()

    @precondition(lambda self: bool(self.to_bob))
    @rule(count=st.integers(1, 8))
    @_marks_failure
    def bob_reads_a_batch(self, count: int) -> None:
        self.bob_reads(count)

    # -- trouble ---------------------------------------------------------------------

    @precondition(lambda self: self.to_bob is not None)
    @rule()
    @_marks_failure
    def session_drops(self) -> None:
        """Whatever is on the wire either way is lost: chats unread, acknowledgements unread."""
        self.session_lost()

    @precondition(
        lambda self: self.to_bob is not None or bool(self.sender.delivery.peers_with_pending())
    )
    @rule(what=st.sampled_from(Trouble), stored_first=st.integers(0, 4))
    @_marks_failure
    def trouble(self, what: Trouble, stored_first: int = 0) -> None:
        """Bob stores the next `stored_first` chats, and then, before Alice reads his
        acknowledgement, the trouble strikes."""
        if self.to_bob and stored_first:
            self.bob_reads(stored_first)
        if what is Trouble.ALICE_CRASHES:
            self.to_bob = None
            self.to_alice = []
            self.sender.crash()
        elif what is Trouble.BOB_CRASHES:
            self.restart_bob()
            self.session_lost()
        elif self.to_bob:
            # The node closes the session and acknowledges nothing; the disk recovers.
            self.bob.close()
            with pytest.raises(StorageError):
                delivery.receive_chats(
                    self.bob, ALICE, "Alice", "127.0.0.1", 5000, self.to_bob, now=self.clock.now
                )
            self.restart_bob()
            self.session_lost()

    @invariant()
    @_marks_failure
    def bob_showed_each_message_once_in_order(self) -> None:
        assert self.shown == self.sent[: len(self.shown)]

    def heal(self) -> None:
        """The link comes back and stays up until nothing is on the wire either way."""
        if self.to_bob is None:
            self.connect()
        for _ in range(2 * len(self.sent) + 2):  # a bound, in case a bug keeps it going
            if self.to_bob:
                self.bob_reads(len(self.to_bob))
            if self.to_alice:
                self.alice_reads_acks(len(self.to_alice))

    def teardown(self) -> None:
        try:
            if self.alice is not None and not self.broken:
                self.heal()
                assert self.shown == self.sent
                assert [m.text for m in self.bob.history(limit=10_000)] == self.sent
                assert self.sender.store.pending_messages() == []
                assert self.sender.delivery.peers_with_pending() == []
                assert {m.state for m in self.sender.store.history(limit=10_000)} == {
                    DeliveryState.DELIVERED
                }
                assert self.sender.problems == []
                if currently_in_test_context():
                    event("reached a duplicate" if self.duplicates else "no duplicate")
                    target(float(self.duplicates), label="batches with a duplicate")
        finally:
            if self.alice is not None:
                self.alice.store.close()
            self.bob.close()
            self.folder.cleanup()


ExactlyOnce.TestCase.settings = settings(max_examples=100, stateful_step_count=25, deadline=None)
test_every_message_arrives_once_in_order_whatever_is_lost = ExactlyOnce.TestCase


class Script:
    """Drives the machine step by step, checking its invariants after each, as Hypothesis does."""

    def __init__(self) -> None:
        self.machine = ExactlyOnce()

    def __getattr__(self, step: str) -> Callable[..., None]:
        def run(**arguments: object) -> None:
            getattr(self.machine, step)(**arguments)
            self.machine.bob_showed_each_message_once_in_order()

        return run


def test_a_lost_acknowledgement_then_a_resend() -> None:
    script = Script()
    machine = script.machine
    script.start(window=2, first=2)
    script.bob_reads(count=2)  # stored and shown; the acknowledgement is on its way
    script.session_drops()  # ... and lost with the session
    script.connect()  # Alice sends both again
    assert machine.to_bob is not None
    assert [c.text for c in machine.to_bob] == ["m001", "m002"]
    script.bob_reads(count=2)
    assert machine.duplicates == 1
    assert machine.shown == ["m001", "m002"]
    machine.teardown()


def test_a_crash_with_messages_in_flight_both_ways() -> None:
    script = Script()
    machine = script.machine
    script.start(window=3, first=5)  # m001..m003 on the wire, m004, m005 waiting
    script.bob_reads(count=2)  # m001, m002 stored; their acknowledgement in flight
    script.alice_reads_acks(count=1)  # m001, m002 delivered; m004, m005 go on the wire
    script.bob_reads(count=1)  # m003 stored, its acknowledgement in flight
    script.trouble(
        what=Trouble.BOB_CRASHES
    )  # that acknowledgement and m004, m005 on the wire are lost
    script.alice_sends(count=1)
    script.connect()
    script.bob_reads(count=8)  # m003 again (a duplicate), then m004, m005 as new
    script.trouble(what=Trouble.ALICE_CRASHES)  # with the acknowledgements of m003..m005 in flight
    script.connect()
    script.bob_reads(count=8)  # m003..m005 again, all three duplicates
    script.alice_reads_acks(count=1)
    script.bob_reads(count=1)  # m006
    assert machine.duplicates == 2
    assert machine.shown == ["m001", "m002", "m003", "m004", "m005", "m006"]
    machine.teardown()


_real_receive_chats = delivery.receive_chats


def _acknowledges_only_new_messages(
    store: HistoryStore,
    peer_fp: str,
    peer_name: str,
    host: str,
    port: int,
    chats: Sequence[Chat],
    *,
    now: float,
) -> delivery.Received:
    received = _real_receive_chats(store, peer_fp, peer_name, host, port, chats, now=now)
    return delivery.Received(tuple(c.msg_id for c in received.fresh), received.fresh)


def test_the_model_catches_a_receiver_that_acknowledges_only_new_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The exactly-once bug the model exists for: a resend is stored once but never confirmed."""
    monkeypatch.setattr(delivery, "receive_chats", _acknowledges_only_new_messages)
    with pytest.raises(AssertionError):
        test_a_lost_acknowledgement_then_a_resend()
    with pytest.raises(AssertionError):
        run_state_machine_as_test(
            ExactlyOnce,
            settings=settings(
                max_examples=100,
                stateful_step_count=30,
                deadline=None,
                database=None,
                phases=[Phase.generate],
            ),
        )


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
