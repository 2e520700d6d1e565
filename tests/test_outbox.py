from __future__ import annotations

import copy
from collections import Counter

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from peerchat.limits import MAX_IN_FLIGHT, MAX_QUEUED_AGE, MAX_QUEUED_PER_PEER
from peerchat.policy.outbox import Outbox, OutgoingItem, QueueFull

ALICE = "A" * 52
BOB = "B" * 52


class Clock:
    """The injected clock: tests move time by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Factory:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.count = 0

    def __call__(self, peer_fp: str, text: str | None = None) -> OutgoingItem:
        self.count += 1
        return OutgoingItem(
            msg_id=f"{self.count:032x}",
            peer_fp=peer_fp,
            text=text if text is not None else f"message {self.count}",
            created_at=self.clock.now,
        )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make(clock: Clock) -> Factory:
    return Factory(clock)


def texts(items: list[OutgoingItem]) -> list[str]:
    return [item.text for item in items]


def test_defaults_come_from_limits(make: Factory) -> None:
    outbox = Outbox()
    for _ in range(MAX_IN_FLIGHT + 5):
        outbox.enqueue(make(ALICE))
    assert len(outbox.take_sendable(ALICE)) == MAX_IN_FLIGHT
    assert MAX_QUEUED_PER_PEER > MAX_IN_FLIGHT
    assert MAX_QUEUED_AGE > 0


def test_each_peer_keeps_its_own_order(make: Factory) -> None:
    outbox = Outbox()
    for text, peer in [("a1", ALICE), ("b1", BOB), ("a2", ALICE), ("b2", BOB), ("a3", ALICE)]:
        outbox.enqueue(make(peer, text))

    assert texts(outbox.take_sendable(ALICE)) == ["a1", "a2", "a3"]
    assert texts(outbox.take_sendable(BOB)) == ["b1", "b2"]
    assert outbox.take_sendable(ALICE) == []
    assert outbox.take_sendable("C" * 52) == []


def test_window_limits_items_in_flight(make: Factory) -> None:
    outbox = Outbox(max_in_flight=3)
    items = [make(ALICE) for _ in range(7)]
    for item in items:
        outbox.enqueue(item)

    first = outbox.take_sendable(ALICE)
    assert first == items[:3]
    assert outbox.take_sendable(ALICE) == []  # window full

    assert outbox.acknowledge(ALICE, [items[0].msg_id, items[1].msg_id]) == items[:2]
    assert outbox.take_sendable(ALICE) == items[3:5]  # exactly the two freed slots
    assert outbox.pending_count(ALICE) == 5


def test_acknowledge_removes_only_in_flight_items_of_that_peer(make: Factory) -> None:
    outbox = Outbox()
    a1, a2, b1 = make(ALICE), make(ALICE), make(BOB)
    for item in (a1, a2, b1):
        outbox.enqueue(item)
    outbox.take_sendable(ALICE)
    outbox.take_sendable(BOB)

    assert outbox.acknowledge(ALICE, [a2.msg_id]) == [a2]
    assert outbox.pending_count(ALICE) == 1
    # A second ack of the same id, unknown ids, and another peer's id change nothing.
    assert outbox.acknowledge(ALICE, [a2.msg_id, "f" * 32, b1.msg_id]) == []
    assert outbox.acknowledge("C" * 52, [a1.msg_id]) == []
    assert outbox.pending_count(ALICE) == 1
    assert outbox.pending_count(BOB) == 1
    assert outbox.acknowledge(ALICE, [a1.msg_id, a1.msg_id]) == [a1]
    assert outbox.pending_count(ALICE) == 0
    assert outbox.peers_with_pending() == [BOB]


def test_an_item_not_yet_sent_cannot_be_acknowledged(make: Factory) -> None:
    outbox = Outbox(max_in_flight=1)
    first, second = make(ALICE), make(ALICE)
    outbox.enqueue(first)
    outbox.enqueue(second)
    outbox.take_sendable(ALICE)

    assert outbox.acknowledge(ALICE, [second.msg_id]) == []
    assert outbox.acknowledge(ALICE, [first.msg_id]) == [first]
    assert outbox.take_sendable(ALICE) == [second]


def test_session_lost_puts_in_flight_back_at_the_head_in_order(make: Factory) -> None:
    outbox = Outbox(max_in_flight=3)
    items = [make(ALICE) for _ in range(5)]
    for item in items:
        outbox.enqueue(item)
    assert outbox.take_sendable(ALICE) == items[:3]
    outbox.acknowledge(ALICE, [items[1].msg_id])

    outbox.session_lost(ALICE)

    assert outbox.pending_count(ALICE) == 4
    assert outbox.take_sendable(ALICE) == [items[0], items[2], items[3]]
    outbox.session_lost(ALICE)
    outbox.enqueue(late := make(ALICE))
    assert outbox.take_sendable(ALICE) == [items[0], items[2], items[3]]
    outbox.acknowledge(ALICE, [items[0].msg_id, items[2].msg_id, items[3].msg_id])
    assert outbox.take_sendable(ALICE) == [items[4], late]


def test_session_lost_for_one_peer_leaves_the_others_in_flight(make: Factory) -> None:
    outbox = Outbox()
    a, b = make(ALICE), make(BOB)
    outbox.enqueue(a)
    outbox.enqueue(b)
    outbox.take_sendable(ALICE)
    outbox.take_sendable(BOB)

    outbox.session_lost(ALICE)
    outbox.session_lost("C" * 52)  # unknown peer: nothing to do

    assert outbox.take_sendable(ALICE) == [a]
    assert outbox.take_sendable(BOB) == []  # still in flight, not resent
    assert outbox.acknowledge(BOB, [b.msg_id]) == [b]


def test_expire_removes_only_waiting_items_older_than_max_age(clock: Clock, make: Factory) -> None:
    outbox = Outbox(max_age=100.0, max_in_flight=1)
    sent = make(ALICE)  # will be in flight
    old = make(ALICE)
    clock.advance(50)
    young = make(ALICE)
    for item in (sent, old, young):
        outbox.enqueue(item)
    outbox.take_sendable(ALICE)

    clock.advance(50)  # `old` is exactly max_age old: not older yet
    assert outbox.expire(clock.now) == []
    clock.advance(0.5)
    assert outbox.expire(clock.now) == [old]
    assert outbox.pending_count(ALICE) == 2

    clock.advance(1000)  # `sent` is in flight: it waits for its ack or the lost session
    assert outbox.expire(clock.now) == [young]
    assert outbox.pending_count(ALICE) == 1

    outbox.session_lost(ALICE)
    assert outbox.expire(clock.now) == [sent]
    assert outbox.pending_count(ALICE) == 0
    assert outbox.peers_with_pending() == []


def test_expire_does_not_rely_on_queue_order_matching_creation_time(clock: Clock) -> None:
    outbox = Outbox(max_age=10.0)
    newer = OutgoingItem("1" * 32, ALICE, "newer", clock.now + 5)
    older = OutgoingItem("2" * 32, ALICE, "older", clock.now)
    outbox.enqueue(newer)
    outbox.enqueue(older)

    assert outbox.expire(clock.now + 12) == [older]
    assert outbox.take_sendable(ALICE) == [newer]


def test_queue_full_at_the_limit_counts_in_flight_items(make: Factory) -> None:
    outbox = Outbox(max_per_peer=3, max_in_flight=2)
    first = make(ALICE)
    for item in (first, make(ALICE), make(ALICE)):
        outbox.enqueue(item)
    outbox.take_sendable(ALICE)

    with pytest.raises(QueueFull):
        outbox.enqueue(make(ALICE))
    assert outbox.pending_count(ALICE) == 3
    outbox.enqueue(make(BOB))  # the limit is per peer

    outbox.acknowledge(ALICE, [first.msg_id])
    outbox.enqueue(make(ALICE))
    assert outbox.pending_count(ALICE) == 3


def test_duplicate_msg_id_is_refused(make: Factory) -> None:
    outbox = Outbox()
    item = make(ALICE)
    outbox.enqueue(item)
    with pytest.raises(ValueError, match="already queued"):
        outbox.enqueue(item)
    outbox.take_sendable(ALICE)
    with pytest.raises(ValueError, match="already queued"):
        outbox.enqueue(item)
    assert outbox.pending_count(ALICE) == 1


def test_invalid_limits_are_refused() -> None:
    problem = r"^max_per_peer and max_in_flight must be >= 1, max_age >= 0$"
    with pytest.raises(ValueError, match=problem):
        Outbox(max_in_flight=0)
    with pytest.raises(ValueError, match=problem):
        Outbox(max_per_peer=0)
    with pytest.raises(ValueError, match=problem):
        Outbox(max_age=-1.0)


def test_the_smallest_limits_work(make: Factory) -> None:
    outbox = Outbox(max_per_peer=1, max_in_flight=1, max_age=0.0)
    outbox.enqueue(make(ALICE))
    with pytest.raises(QueueFull, match=r"^1 messages already waiting for AAAAAAAA \(limit 1\)$"):
        outbox.enqueue(make(ALICE))


def test_expiry_is_strictly_past_max_age_and_checks_every_peer(clock: Clock, make: Factory) -> None:
    outbox = Outbox(max_age=10.0)
    young = make(ALICE)  # ALICE's queue is young: nothing of hers is looked at
    clock.advance(-5)
    at_limit = make(BOB)  # 10 s old when the clock says +5: not yet expired
    clock.advance(-5)
    too_old = make(BOB)  # 15 s old then
    for item in (young, too_old, at_limit):
        outbox.enqueue(item)
    assert outbox.expire(clock.now + 15) == [too_old]
    assert outbox.take_sendable(BOB) == [at_limit]
    assert outbox.take_sendable(ALICE) == [young]


PEERS = (ALICE, BOB, "C" * 52)
WINDOW = 3
LIMIT = 6
MAX_AGE = 10.0


class OutboxMachine(RuleBasedStateMachine):
    """The Outbox against a plain-list model of the same rules.

    Invariants: per-peer order, the window, no item handed out twice between
    two losses of that peer's session, and in the end every enqueued item is
    acknowledged exactly once or expired exactly once, never both.
    """

    def __init__(self) -> None:
        super().__init__()
        self.outbox = Outbox(max_per_peer=LIMIT, max_age=MAX_AGE, max_in_flight=WINDOW)
        self.clock = Clock()
        self.made = 0
        self.waiting: dict[str, list[OutgoingItem]] = {p: [] for p in PEERS}
        self.in_flight: dict[str, list[OutgoingItem]] = {p: [] for p in PEERS}
        self.sent_this_session: dict[str, set[str]] = {p: set() for p in PEERS}
        self.enqueued: list[str] = []
        self.acked: Counter[str] = Counter()
        self.expired: Counter[str] = Counter()

    def _new_item(self, peer: str) -> OutgoingItem:
        self.made += 1
        return OutgoingItem(f"{self.made:032x}", peer, f"m{self.made}", self.clock.now)

    @rule(peer=st.sampled_from(PEERS))
    def enqueue(self, peer: str) -> None:
        item = self._new_item(peer)
        if len(self.waiting[peer]) + len(self.in_flight[peer]) >= LIMIT:
            with pytest.raises(QueueFull):
                self.outbox.enqueue(item)
            return
        self.outbox.enqueue(item)
        self.waiting[peer].append(item)
        self.enqueued.append(item.msg_id)

    @rule(peer=st.sampled_from(PEERS))
    def take_sendable(self, peer: str) -> None:
        got = self.outbox.take_sendable(peer)
        free = WINDOW - len(self.in_flight[peer])
        assert got == self.waiting[peer][:free]
        for item in got:
            assert item.msg_id not in self.sent_this_session[peer], "sent twice in one session"
            self.sent_this_session[peer].add(item.msg_id)
        del self.waiting[peer][: len(got)]
        self.in_flight[peer].extend(got)

    @rule(peer=st.sampled_from(PEERS), data=st.data())
    def acknowledge(self, peer: str, data: st.DataObject) -> None:
        everything = [i.msg_id for p in PEERS for i in self.in_flight[p] + self.waiting[p]]
        candidates = [*everything, "e" * 32, *self.acked, *self.expired]
        ids = data.draw(st.lists(st.sampled_from(candidates), max_size=6))
        removed = self.outbox.acknowledge(peer, ids)

        expected: list[OutgoingItem] = []
        for msg_id in ids:
            match = [i for i in self.in_flight[peer] if i.msg_id == msg_id]
            if match:
                self.in_flight[peer].remove(match[0])
                expected.append(match[0])
        assert removed == expected
        self.acked.update(item.msg_id for item in removed)

    @rule(peer=st.sampled_from(PEERS))
    def session_lost(self, peer: str) -> None:
        self.outbox.session_lost(peer)
        self.waiting[peer][:0] = self.in_flight[peer]
        self.in_flight[peer] = []
        self.sent_this_session[peer].clear()

    @rule(seconds=st.floats(min_value=0.0, max_value=2 * MAX_AGE))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def expire(self) -> None:
        now = self.clock.now
        got = self.outbox.expire(now)
        expected: list[OutgoingItem] = []
        for peer in PEERS:
            old = [i for i in self.waiting[peer] if now - i.created_at > MAX_AGE]
            self.waiting[peer] = [i for i in self.waiting[peer] if i not in old]
            expected.extend(old)
        # Order across peers is not part of the contract; order within one peer is.
        assert sorted(got, key=lambda i: i.msg_id) == sorted(expected, key=lambda i: i.msg_id)
        for peer in PEERS:
            assert [i for i in got if i.peer_fp == peer] == [
                i for i in expected if i.peer_fp == peer
            ]
        self.expired.update(item.msg_id for item in got)

    @invariant()
    def counts_match_the_model(self) -> None:
        for peer in PEERS:
            assert self.outbox.pending_count(peer) == len(self.waiting[peer]) + len(
                self.in_flight[peer]
            )
            # The sender skips a peer with nothing waiting: never one with something to send.
            assert self.outbox.has_waiting(peer) == bool(self.waiting[peer])
        assert set(self.outbox.peers_with_pending()) == {
            p for p in PEERS if self.waiting[p] or self.in_flight[p]
        }
        assert not set(self.acked) & set(self.expired)
        assert all(n == 1 for n in (self.acked + self.expired).values())

    @invariant()
    def next_expiry_is_never_late_and_always_moves_on(self) -> None:
        oldest = [item.created_at for items in self.waiting.values() for item in items]
        due = self.outbox.next_expiry()
        if oldest:
            assert due is not None and due <= min(oldest) + MAX_AGE
        if due is None:
            return
        # It may be early (an item since put in flight), but expiring then moves it on.
        later = copy.deepcopy(self.outbox)
        later.expire(due + 0.001)
        after = later.next_expiry()
        assert after is None or after > due  # a timer at `due` never fires in a loop

    def teardown(self) -> None:
        # "Eventually": keep sending and acknowledging until nothing is left.
        for peer in PEERS:
            self.outbox.session_lost(peer)
            for _ in range(LIMIT + 1):
                batch = self.outbox.take_sendable(peer)
                if not batch:
                    break
                removed = self.outbox.acknowledge(peer, [i.msg_id for i in batch])
                assert removed == batch
                self.acked.update(i.msg_id for i in removed)
            assert self.outbox.pending_count(peer) == 0
        assert self.outbox.expire(self.clock.now + 10 * MAX_AGE) == []
        assert self.acked + self.expired == Counter(self.enqueued)


TestOutboxMachine = OutboxMachine.TestCase
TestOutboxMachine.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)


def test_what_is_left_after_an_expiry_still_expires_later(clock: Clock, make: Factory) -> None:
    outbox = Outbox(max_age=10.0)
    first = make(ALICE)
    clock.advance(5)
    second = make(ALICE)
    outbox.enqueue(first)
    outbox.enqueue(second)
    assert outbox.expire(clock.now + 5.5) == [first]
    assert outbox.expire(clock.now + 10.5) == [second]
    assert outbox.pending_count(ALICE) == 0


def test_next_expiry_is_the_oldest_waiting_item_plus_the_age(clock: Clock, make: Factory) -> None:
    outbox = Outbox(max_age=100.0, max_in_flight=1)
    assert outbox.next_expiry() is None
    first = make(ALICE)
    clock.advance(10)
    second = make(ALICE)
    outbox.enqueue(first)
    outbox.enqueue(second)
    assert outbox.next_expiry() == first.created_at + 100.0
    outbox.take_sendable(ALICE)  # `first` is in flight now: it cannot expire
    assert outbox.expire(first.created_at + 100.5) == []
    assert outbox.next_expiry() == second.created_at + 100.0
    outbox.session_lost(ALICE)  # back in the queue: it can expire again
    assert outbox.next_expiry() == first.created_at + 100.0
