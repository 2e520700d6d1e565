"""The trust book: the one write path for pins, key conflicts, re-trust and verification."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from crypto_utils import Identity, Sealer
from peerchat.events import KeyChanged, UiEvent
from peerchat.net.trust_book import TrustBook
from peerchat.protocol.channel import PeerHello
from storage import HistoryStore


@pytest.fixture(scope="module")
def keys() -> tuple[Identity, Identity]:
    return Identity.generate(2048), Identity.generate(2048)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HistoryStore]:
    with HistoryStore.open(tmp_path / "history.db", Sealer.generate()) as opened:
        yield opened


def hello(identity: Identity, name: str) -> PeerHello:
    return PeerHello(name, 5000, identity.public_der, identity.fingerprint, 1)


class Book:
    def __init__(self, store: HistoryStore) -> None:
        self.news: list[UiEvent] = []
        self.changes = 0
        self.book = TrustBook(store, self.news.append, self._changed)
        self.book.load()

    def _changed(self) -> None:
        self.changes += 1


def test_a_new_name_is_pinned_to_its_key_and_recorded(
    store: HistoryStore, keys: tuple[Identity, Identity]
) -> None:
    bob, _ = keys
    b = Book(store)
    assert b.book.admit_hello(hello(bob, "Bob"), "127.0.0.1", 5000) is None
    assert store.pins() == {"bob": bob.fingerprint}
    record = store.get_peer(bob.fingerprint)
    assert record is not None and (record.host, record.port) == ("127.0.0.1", 5000)
    assert b.changes == 1  # peers.json is due for a rewrite
    assert b.news == []


def test_another_key_under_a_pinned_name_is_a_conflict_said_once(
    store: HistoryStore, keys: tuple[Identity, Identity]
) -> None:
    bob, impostor = keys
    b = Book(store)
    b.book.admit_hello(hello(bob, "Bob"), "127.0.0.1", 5000)
    conflict = b.book.admit_hello(hello(impostor, "BOB"), "127.0.0.1", 5001)
    assert conflict is not None
    assert (conflict.pinned_fingerprint, conflict.presented_fingerprint) == (
        bob.fingerprint,
        impostor.fingerprint,
    )
    assert b.book.admit_beacon("Bob", impostor.fingerprint, "127.0.0.1", 5001, b"") is False
    assert [type(e) for e in b.news] == [KeyChanged]  # the beacon repeats no warning
    assert b.book.conflicts() == [b.book.conflict_pinned_to(bob.fingerprint)]
    assert store.get_peer(impostor.fingerprint) is None  # nothing recorded for it


def test_retrust_pins_the_new_key_and_settles_the_conflict(
    store: HistoryStore, keys: tuple[Identity, Identity]
) -> None:
    bob, new_bob = keys
    b = Book(store)
    b.book.admit_hello(hello(bob, "Bob"), "127.0.0.1", 5000)
    b.book.admit_hello(hello(new_bob, "Bob"), "127.0.0.1", 5000)
    settled = b.book.retrust(new_bob.fingerprint)
    assert settled is not None and settled.name == "Bob"
    assert store.pins() == {"bob": new_bob.fingerprint}
    assert b.book.conflicts() == []
    assert b.book.retrust(new_bob.fingerprint) is None
    # From now on the new key is the known one.
    assert b.book.admit_hello(hello(new_bob, "Bob"), "127.0.0.1", 5000) is None


def test_verify_writes_the_store(store: HistoryStore, keys: tuple[Identity, Identity]) -> None:
    bob, _ = keys
    b = Book(store)
    b.book.admit_hello(hello(bob, "Bob"), "127.0.0.1", 5000)
    b.book.verify(bob.fingerprint, True)
    record = store.get_peer(bob.fingerprint)
    assert record is not None and record.verified


def test_a_beacon_under_a_pinned_name_raises_no_conflict_and_blocks_nothing(
    store: HistoryStore, keys: tuple[Identity, Identity]
) -> None:
    bob, impostor = keys
    b = Book(store)
    b.book.admit_hello(hello(bob, "Bob"), "127.0.0.1", 5000)
    assert b.book.admit_beacon("Bob", impostor.fingerprint, "127.0.0.1", 5001, b"") is False
    assert b.book.conflicts() == [] and b.news == []
    assert b.book.conflict_pinned_to(bob.fingerprint) is None


def test_throwaway_keys_under_a_pinned_name_give_one_warning_and_few_entries(
    store: HistoryStore, keys: tuple[Identity, Identity]
) -> None:
    bob, _ = keys
    b = Book(store)
    b.book.admit_hello(hello(bob, "Bob"), "127.0.0.1", 5000)
    for n in range(800):
        thrown = PeerHello("Bob", 5000, b"", f"{n:052d}", 1)
        assert b.book.admit_hello(thrown, "10.0.0.66", 6000 + n) is not None  # each refused
    assert [type(e) for e in b.news] == [KeyChanged]
    assert len(b.book.conflicts()) <= 3
    assert b.book.conflicts_not_listed() == 800 - len(b.book.conflicts())
