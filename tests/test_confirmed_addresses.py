"""Addresses a handshake confirmed, apart from claims."""

from __future__ import annotations

from peerchat.policy.confirmed_addresses import ConfirmedAddresses

ALICE, MALLORY = "A" * 52, "M" * 52
HERE, THERE = ("10.0.0.5", 5000), ("10.0.0.6", 5000)


def test_an_address_belongs_to_the_key_whose_last_worked_address_it_is() -> None:
    book = ConfirmedAddresses()
    assert book.key_at(HERE) is None and book.may_confirm(ALICE, HERE)
    book.confirm(ALICE, HERE)
    assert book.key_at(HERE) == ALICE and book.last_worked(ALICE) == HERE
    assert not book.may_confirm(MALLORY, HERE)  # another key there is asked about, not taken
    book.confirm(ALICE, THERE)  # Alice moved: her old address is nobody's now
    assert book.key_at(HERE) is None and book.key_at(THERE) == ALICE
    assert book.may_confirm(MALLORY, HERE)


def test_claims_never_resolve_an_address() -> None:
    book = ConfirmedAddresses()
    book.claim(MALLORY, HERE, "beacon")
    book.claim(MALLORY, HERE, "hello")
    assert book.key_at(HERE) is None and book.last_worked(MALLORY) is None
    assert book.claims(MALLORY) == [(HERE, "hello")]


def test_memory_is_bounded() -> None:
    book = ConfirmedAddresses(max_keys=2)
    for i in range(5):
        book.confirm(f"{i:052d}", ("10.0.0.1", 1000 + i))
    assert book.key_at(("10.0.0.1", 1000)) is None
    assert book.key_at(("10.0.0.1", 1004)) == f"{4:052d}"
