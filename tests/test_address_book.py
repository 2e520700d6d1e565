"""The address book: claims are places to try, only a handshake makes an address a key's."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerchat.limits import RECONNECT_MAX
from peerchat.policy.address_book import (
    AddressBook,
    Dial,
    DialKind,
    Displaced,
    Found,
    Source,
    sources_text,
)

ALICE = "A" * 52
BOB = "B" * 52
MALLORY = "M" * 52
HERE = ("10.0.0.5", 5000)
THERE = ("10.0.0.6", 5000)
NOW = 1000.0

BROADCAST = Source(Found.BROADCAST)
MDNS = Source(Found.MDNS)


def via(who: str, name: str) -> Source:
    return Source(Found.EXCHANGE, via=who, via_name=name)


def test_a_claim_never_answers_where_a_key_is() -> None:
    book = AddressBook()
    assert book.claim(ALICE, HERE, BROADCAST, NOW, name="Alice")
    assert book.key_at(HERE) is None
    assert book.addresses(ALICE) == []
    assert book.best(ALICE) is None
    assert book.claimed(ALICE) == [(HERE, BROADCAST)]
    assert book.name(ALICE) == "Alice"


def test_a_handshake_confirms_the_address_for_that_key() -> None:
    book = AddressBook()
    book.claim(ALICE, HERE, BROADCAST, NOW)
    assert book.confirm(ALICE, HERE, NOW + 1) is None
    assert book.key_at(HERE) == ALICE
    assert book.addresses(ALICE) == [HERE]
    assert book.found_by(ALICE) == ["broadcast"]


def test_claims_by_anyone_cannot_move_a_confirmed_address() -> None:
    book = AddressBook()
    book.confirm(ALICE, HERE, NOW)
    for source in (BROADCAST, MDNS, via(MALLORY, "Mallory"), Source(Found.INBOUND)):
        book.claim(MALLORY, HERE, source, NOW + 1)
    assert book.key_at(HERE) == ALICE
    assert book.addresses(MALLORY) == []


def test_another_key_answering_at_a_confirmed_address_is_reported() -> None:
    book = AddressBook()
    book.confirm(ALICE, HERE, NOW)
    book.claim(ALICE, HERE, BROADCAST, NOW + 1)
    displaced = book.confirm(MALLORY, HERE, NOW + 2)
    assert displaced == Displaced(HERE, ALICE, MALLORY)
    assert book.key_at(HERE) == MALLORY
    assert book.addresses(ALICE) == []
    assert book.claimed(ALICE) == []  # what said Alice was there is wrong now


def test_the_address_that_last_worked_comes_first() -> None:
    book = AddressBook()
    book.confirm(ALICE, HERE, NOW)
    book.confirm(ALICE, THERE, NOW + 1)
    assert book.addresses(ALICE) == [THERE, HERE]
    book.confirm(ALICE, HERE, NOW + 2)
    assert book.addresses(ALICE) == [HERE, THERE]
    assert book.best(ALICE) == HERE


def test_one_key_found_several_ways_is_one_entry_with_every_source() -> None:
    book = AddressBook()
    book.claim(ALICE, HERE, BROADCAST, NOW)
    book.claim(ALICE, HERE, MDNS, NOW + 1)
    book.claim(ALICE, THERE, via(BOB, "Bob"), NOW + 2)
    assert len(book) == 1
    assert book.found_by(ALICE) == ["via Bob", "mDNS", "broadcast"]
    book.confirm(ALICE, HERE, NOW + 3)
    assert book.found_by(ALICE)[0] == "mDNS"  # the latest word for the confirmed address
    assert sources_text(book.found_by(ALICE)) == "mDNS, via Bob"


def test_confirming_with_an_explicit_source() -> None:
    book = AddressBook()
    book.confirm(ALICE, HERE, NOW, Source(Found.TYPED))
    assert book.found_by(ALICE) == ["by address"]
    book.add_seed(THERE)
    book.confirm(BOB, THERE, NOW)
    assert book.found_by(BOB) == ["seed"]


def test_claims_per_key_are_capped_per_kind_so_one_kind_cannot_push_out_another() -> None:
    book = AddressBook()
    book.claim(ALICE, HERE, BROADCAST, NOW)
    for i in range(50):
        book.claim(ALICE, (f"10.9.0.{i}", 5000), via(f"{i:052d}", f"p{i}"), NOW + i)
    claims = book.claimed(ALICE)
    assert (HERE, BROADCAST) in claims
    assert sum(1 for _, s in claims if s.kind is Found.EXCHANGE) == 4


def test_a_newer_word_from_the_same_peer_replaces_its_older() -> None:
    book = AddressBook()
    book.claim(ALICE, HERE, via(BOB, "Bob"), NOW)
    book.claim(ALICE, THERE, via(BOB, "Bob"), NOW + 1)
    assert book.claimed(ALICE) == [(THERE, via(BOB, "Bob"))]


def test_keys_are_capped_and_confirmed_ones_are_kept_longest() -> None:
    book = AddressBook(max_keys=10)
    book.confirm(ALICE, HERE, NOW)
    for i in range(100):
        book.claim(f"{i:052d}", (f"10.1.{i // 250}.{i % 250}", 5000), BROADCAST, NOW + i)
    assert len(book) == 10
    assert book.key_at(HERE) == ALICE


def test_the_least_recently_confirmed_keys_are_forgotten_first() -> None:
    book = AddressBook(max_keys=2)
    for i in range(5):
        book.confirm(f"{i:052d}", ("10.0.0.1", 1000 + i), NOW + i)
    assert len(book) == 2
    assert book.key_at(("10.0.0.1", 1000)) is None
    assert book.key_at(("10.0.0.1", 1003)) == f"{3:052d}"
    assert book.key_at(("10.0.0.1", 1004)) == f"{4:052d}"


def test_an_address_stored_from_an_earlier_run_resolves_and_says_so() -> None:
    book = AddressBook()
    book.confirm(ALICE, HERE, NOW, Source(Found.STORED))
    assert book.key_at(HERE) == ALICE and book.best(ALICE) == HERE
    assert book.found_by(ALICE) == ["earlier"]
    book.claim(ALICE, HERE, BROADCAST, NOW + 1)
    book.confirm(ALICE, THERE, NOW + 2)  # reached somewhere new this run: that comes first
    assert book.best(ALICE) == THERE and book.key_at(HERE) == ALICE


def test_confirmed_addresses_per_key_are_capped() -> None:
    book = AddressBook(max_confirmed_per_key=2)
    for i in range(5):
        book.confirm(ALICE, (f"10.0.0.{i}", 5000), NOW + i)
    assert book.addresses(ALICE) == [("10.0.0.4", 5000), ("10.0.0.3", 5000)]
    assert book.key_at(("10.0.0.0", 5000)) is None


# -- automatic dialling --------------------------------------------------------------


def test_a_claim_is_dialled_to_confirm_it_a_few_times_then_rests() -> None:
    book = AddressBook(claim_attempts=3, claim_rest=600)
    book.claim(ALICE, HERE, via(BOB, "Bob"), NOW)
    times = []
    t = NOW
    while t < NOW + 100:
        if book.due(t, connected=()) == [Dial(HERE, ALICE, DialKind.CONFIRM)]:
            times.append(t)
            book.dial_failed(HERE)
        book.claim(ALICE, HERE, via(BOB, "Bob"), t)  # said again and again: no reset
        t += 0.25
    assert len(times) == 3
    assert times[1] - times[0] >= 2 and times[2] - times[1] >= 4


@pytest.mark.parametrize("source", [BROADCAST, MDNS, Source(Found.INBOUND)])
def test_a_claim_anyone_can_forge_is_never_dialled_by_itself(source: Source) -> None:
    # A beacon's source address or an mDNS record names any host: dialling it
    # unasked would let a forger point this peer at an address of its choice.
    book = AddressBook()
    book.claim(ALICE, HERE, source, NOW)
    assert book.due(NOW, connected=()) == []
    assert book.next_due(NOW, connected=()) is None
    book.claim(ALICE, THERE, via(BOB, "Bob"), NOW)  # the same key passed on by a session peer
    assert [(d.address, d.kind) for d in book.due(NOW, connected=())] == [(THERE, DialKind.CONFIRM)]


def test_a_key_that_is_connected_is_not_dialled() -> None:
    book = AddressBook()
    book.claim(ALICE, HERE, BROADCAST, NOW)
    assert book.due(NOW, connected={ALICE}) == []


def test_a_confirmed_key_that_is_around_is_reconnected_at_its_confirmed_address() -> None:
    book = AddressBook()
    book.confirm(ALICE, HERE, NOW)
    assert book.due(NOW, connected=()) == []  # nobody says it is around
    book.claim(ALICE, THERE, via(BOB, "Bob"), NOW + 1)  # it may have moved
    assert book.due(NOW + 1, connected=()) == [Dial(HERE, ALICE, DialKind.RECONNECT)]
    # Between reconnect attempts, the claim elsewhere is tried too.
    assert book.due(NOW + 1.5, connected=()) == [Dial(THERE, ALICE, DialKind.CONFIRM)]


def test_a_claim_at_an_address_where_another_connected_key_answers_is_not_dialled() -> None:
    book = AddressBook()
    book.confirm(BOB, HERE, NOW)
    book.claim(MALLORY, HERE, via(BOB, "Bob"), NOW)
    assert book.due(NOW, connected={BOB}) == []


def test_old_claims_are_not_dialled() -> None:
    book = AddressBook(claim_ttl=60)
    book.claim(ALICE, HERE, BROADCAST, NOW)
    assert book.due(NOW + 61, connected=()) == []


def test_a_flood_of_claims_is_dialled_within_the_budget() -> None:
    book = AddressBook(dial_rate=2, dial_burst=10)
    for i in range(500):
        book.claim(f"{i:052d}", (f"10.2.{i // 250}.{i % 250}", 5000), via(BOB, "Bob"), NOW)
    assert len(book.due(NOW, connected=())) == 10
    assert len(book.due(NOW + 10, connected=())) == 10  # burst refilled, no more
    dials = 0
    for step in range(1, 41):
        dials += len(book.due(NOW + 10 + step * 0.25, connected=()))
    assert dials == 20  # 10 s at 2 per second


def test_seeds_are_dialled_without_a_key_and_kept_trying_with_backoff() -> None:
    book = AddressBook()
    assert book.add_seed(HERE)
    attempts = []
    t = NOW
    while t < NOW + 60:
        for dial in book.due(t, connected=()):
            assert dial == Dial(HERE, None, DialKind.SEED)
            attempts.append(t)
            book.dial_failed(HERE)
        t += 0.25
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[:4] == [1, 2, 4, 8]
    assert max(gaps) <= RECONNECT_MAX + 0.25
    assert len(attempts) >= 8  # still trying, never given up


def test_a_seed_that_never_answers_is_said_once() -> None:
    book = AddressBook()
    book.add_seed(HERE)
    said = [book.dial_failed(HERE) for _ in range(5)]
    assert said == [True, False, False, False, False]
    book.confirm(ALICE, HERE, NOW)
    assert book.dial_failed(HERE)  # answered since, so its next absence is news


def test_a_seed_reached_remembers_its_key_and_is_not_dialled_while_connected() -> None:
    book = AddressBook()
    book.add_seed(HERE)
    book.due(NOW, connected=())
    book.confirm(ALICE, HERE, NOW)
    assert book.seeds() == [(HERE, ALICE)]
    assert book.due(NOW + 60, connected={ALICE}) == []
    assert book.due(NOW + 60, connected=()) == [Dial(HERE, ALICE, DialKind.SEED)]


def test_seeds_are_capped_and_removable() -> None:
    book = AddressBook(max_seeds=2)
    assert book.add_seed(HERE) and book.add_seed(THERE)
    assert not book.add_seed(("10.0.0.7", 5000))
    book.remove_seed(HERE)
    assert book.seeds() == [(THERE, None)]
    assert book.add_seed(("10.0.0.7", 5000))


ops = st.lists(
    st.tuples(
        st.sampled_from(["claim", "confirm", "due", "failed", "seed"]),
        st.integers(0, 30),  # key
        st.integers(0, 10),  # address
        st.sampled_from(list(Found)),
    ),
    max_size=200,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_invariants_hold_under_any_sequence(sequence: list[tuple[str, int, int, Found]]) -> None:
    book = AddressBook(max_keys=8, max_seeds=3, max_confirmed_per_key=2)
    now = NOW
    for op, k, a, kind in sequence:
        fp, address = f"{k:052d}", (f"10.3.0.{a}", 5000)
        now += 0.5
        if op == "claim":
            book.claim(fp, address, Source(kind, via=fp, via_name="x"), now)
        elif op == "confirm":
            book.confirm(fp, address, now)
        elif op == "due":
            for dial in book.due(now, connected=()):
                assert (
                    dial.kind is not DialKind.CONFIRM
                    or book.key_at(dial.address) is None
                    or (book.key_at(dial.address) != dial.fingerprint)
                )
        elif op == "failed":
            book.dial_failed(address)
        else:
            book.add_seed(address)
        assert len(book) <= 8
        assert len(book.seeds()) <= 3
        # Every confirmed address resolves to exactly the key that lists it.
        for j in range(31):
            key = f"{j:052d}"
            assert len(book.addresses(key)) <= 2
            for addr in book.addresses(key):
                assert book.key_at(addr) == key


# -- next_due: the alarm wakes only when `due` has something ----------------------


def test_next_due_is_what_due_would_dial_and_nothing_it_would_skip() -> None:
    book = AddressBook()
    assert book.next_due(NOW, connected=()) is None
    book.claim(ALICE, HERE, via(BOB, "Bob"), NOW)
    assert book.next_due(NOW, connected=()) == 0.0  # a fresh claim: due at once
    assert book.next_due(NOW, connected={ALICE}) is None  # connected: no dial
    book.confirm(ALICE, HERE, NOW)
    book.claim(ALICE, HERE, BROADCAST, NOW + 1)  # a claim where it is confirmed already
    dials = book.due(NOW + 1, connected=())
    assert [d.kind for d in dials] == [DialKind.RECONNECT]
    due = book.next_due(NOW + 1, connected=())
    assert due is not None and due > NOW + 1  # the backoff, not "now" again and again
    assert book.due(NOW + 1, connected=()) == []


def test_next_due_forgets_a_key_nobody_spoke_of_lately() -> None:
    book = AddressBook(claim_ttl=10.0)
    book.claim(ALICE, HERE, BROADCAST, NOW)
    assert book.next_due(NOW + 11, connected=()) is None
    assert book.due(NOW + 11, connected=()) == []


def test_next_due_of_a_seed_is_its_next_try() -> None:
    book = AddressBook()
    book.add_seed(HERE)
    assert book.next_due(NOW, connected=()) == 0.0
    [dial] = book.due(NOW, connected=())
    assert dial.kind is DialKind.SEED
    assert book.next_due(NOW, connected=()) == NOW + 1.0  # RECONNECT_MIN
