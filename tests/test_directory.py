"""Where to dial a peer the user chose now: nowhere while beacons would list it and do not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from crypto_utils import Sealer
from peerchat.net.directory import PeerDirectory
from peerchat.policy.address_book import AddressBook
from peerchat.policy.presence import Presence
from storage import HistoryStore

LISTED, AWAY = "b" * 64, "c" * 64


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[PeerDirectory]:
    with HistoryStore.open(tmp_path / "history.db", Sealer.generate()) as store:
        presence = Presence(30.0, lambda fp, name: False)
        presence.session_up(LISTED, "Bob", "127.0.0.2", 5002, now=0.0, wall=0.0)
        book = AddressBook()
        book.confirm(LISTED, ("127.0.0.1", 5001), 0.0)
        book.confirm(AWAY, ("127.0.0.3", 5003), 0.0)
        yield PeerDirectory(presence, store, book)


def test_a_listed_peer_is_dialled_where_it_last_worked_then_where_it_is_listed(
    directory: PeerDirectory,
) -> None:
    expected = [("127.0.0.1", 5001), ("127.0.0.2", 5002)]
    assert directory.addresses_to_try_now(LISTED, discovery=True) == expected
    assert directory.addresses_to_try_now(LISTED, discovery=False) == expected


def test_an_unlisted_peer_waits_with_discovery_on_and_is_dialled_with_it_off(
    directory: PeerDirectory,
) -> None:
    assert directory.addresses_to_try_now(AWAY, discovery=True) == []
    assert directory.addresses_to_try_now(AWAY, discovery=False) == [("127.0.0.3", 5003)]
