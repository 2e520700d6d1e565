"""The legacy peer list and the legacy port's admission limits (pure, time passed in)."""

from __future__ import annotations

import pytest

from peerchat.legacy.admission import (
    TOO_FAST,
    TOO_MANY_CONNECTIONS,
    TOO_MANY_FROM_SOURCE,
    AdmissionLimits,
    LegacyAdmission,
)
from peerchat.legacy.peers import LegacyPeers
from peerchat.legacy.wire import BLOCK, ORIGINAL, PLAIN


def test_heard_adds_then_refreshes() -> None:
    peers = LegacyPeers()
    entry, new = peers.heard("10.0.0.5", 5000, "Alice", PLAIN, now=0, wall=100, ttl=60)
    assert new and (entry.team, entry.dialect, entry.last_seen) == ("Alice", PLAIN, 100)
    entry, new = peers.heard("10.0.0.5", 5000, None, None, now=10, wall=110, ttl=60)
    assert not new and (entry.team, entry.dialect, entry.last_seen) == ("Alice", PLAIN, 110)
    entry, _ = peers.heard("10.0.0.5", 5000, "Team A", BLOCK, now=20, wall=120, ttl=5)
    assert (entry.team, entry.dialect) == ("Team A", BLOCK)
    assert entry.expires == 70  # a shorter ttl never shortens what is known


def test_entries_are_copies_sorted_by_team() -> None:
    peers = LegacyPeers()
    peers.heard("10.0.0.6", 5000, "bob", PLAIN, now=0, wall=0, ttl=60)
    peers.heard("10.0.0.5", 5000, "Alice", ORIGINAL, now=0, wall=0, ttl=60)
    listed = peers.entries()
    assert [e.team for e in listed] == ["Alice", "bob"]
    listed[0].team = "changed"
    assert peers.get("10.0.0.5", 5000) is not None
    assert peers.get("10.0.0.5", 5000).team == "Alice"  # type: ignore[union-attr]


def test_remove_and_only_at() -> None:
    peers = LegacyPeers()
    peers.heard("10.0.0.5", 5000, "A", PLAIN, now=0, wall=0, ttl=60)
    assert peers.only_at("10.0.0.5") is not None
    peers.heard("10.0.0.5", 5001, "B", PLAIN, now=0, wall=0, ttl=60)
    assert peers.only_at("10.0.0.5") is None  # a word with no port cannot say which one
    assert peers.remove("10.0.0.5", 5000) is not None
    assert peers.remove("10.0.0.5", 5000) is None
    assert peers.only_at("10.0.0.5") is not None and len(peers) == 1


def test_expiry() -> None:
    peers = LegacyPeers()
    peers.heard("10.0.0.5", 5000, "A", ORIGINAL, now=0, wall=0, ttl=15)
    peers.heard("10.0.0.6", 5000, "B", PLAIN, now=0, wall=0, ttl=600)
    assert peers.expire(14.9) == []
    assert [e.team for e in peers.expire(15)] == ["A"]
    assert len(peers) == 1


def test_next_expiry_is_the_earliest_entry_and_none_when_empty() -> None:
    peers = LegacyPeers()
    assert peers.next_expiry() is None
    peers.heard("10.0.0.1", 1, "A", PLAIN, now=0, wall=0, ttl=30)
    peers.heard("10.0.0.2", 2, "B", PLAIN, now=5, wall=5, ttl=10)
    assert peers.next_expiry() == 15
    peers.expire(15)
    assert peers.next_expiry() == 30


def test_bounded_in_total_and_per_address() -> None:
    peers = LegacyPeers(max_peers=10, max_per_address=3)
    for port in range(1, 101):
        peers.heard("10.0.0.5", port, "flood", PLAIN, now=port, wall=port, ttl=600)
    assert sorted(e.port for e in peers.entries()) == [98, 99, 100]
    for n in range(50):
        peers.heard(f"10.1.0.{n}", 5000, "many", PLAIN, now=100 + n, wall=0, ttl=600)
    assert len(peers) == 10
    assert peers.get("10.1.0.49", 5000) is not None  # the newest stay
    assert peers.get("10.0.0.5", 100) is None


def test_heard_again_moves_to_the_back_of_the_eviction_line() -> None:
    peers = LegacyPeers(max_peers=2)
    peers.heard("10.0.0.1", 1, "old", PLAIN, now=0, wall=0, ttl=600)
    peers.heard("10.0.0.2", 1, "mid", PLAIN, now=1, wall=0, ttl=600)
    peers.heard("10.0.0.1", 1, None, None, now=2, wall=0, ttl=600)
    peers.heard("10.0.0.3", 1, "new", PLAIN, now=3, wall=0, ttl=600)
    assert sorted(e.team for e in peers.entries()) == ["new", "old"]


# -- admission ---------------------------------------------------------------------


def test_connections_per_source_and_in_total() -> None:
    limits = AdmissionLimits(max_connections=3, max_per_address=2, connect_burst=100)
    admission = LegacyAdmission(limits)
    assert admission.admit("10.0.0.1", 0) is None
    assert admission.admit("10.0.0.1", 0) is None
    assert admission.admit("10.0.0.1", 0) == TOO_MANY_FROM_SOURCE
    assert admission.admit("10.0.0.2", 0) is None
    assert admission.admit("10.0.0.3", 0) == TOO_MANY_CONNECTIONS
    admission.release("10.0.0.1")
    assert admission.open_connections == 2
    assert admission.admit("10.0.0.3", 0) is None
    admission.release("10.0.0.9")  # never admitted: nothing changes
    assert admission.open_connections == 3


def test_connection_rate_per_source() -> None:
    limits = AdmissionLimits(connect_rate=2.0, connect_burst=4, max_per_address=100)
    admission = LegacyAdmission(limits)
    results = [admission.admit("10.0.0.1", 0.0) for _ in range(6)]
    assert results == [None] * 4 + [TOO_FAST] * 2
    assert admission.admit("10.0.0.2", 0.0) is None  # another source has its own budget
    assert admission.admit("10.0.0.1", 0.5) is None  # one token back after half a second
    assert admission.admit("10.0.0.1", 0.5) == TOO_FAST


def test_connection_rate_from_many_sources_is_capped_in_all() -> None:
    limits = AdmissionLimits(connect_global_rate=10.0, connect_global_burst=30)
    admission = LegacyAdmission(limits)
    admitted = 0
    for n in range(500):
        if admission.admit(f"10.0.{n // 256}.{n % 256}", 0.0) is None:
            admitted += 1
            admission.release(f"10.0.{n // 256}.{n % 256}")
    assert admitted == 30
    assert admission.admit("10.9.9.9", 0.1) is None  # refilled at 10/s


@pytest.mark.parametrize("sources", [1, 20])
def test_message_rate_per_source_and_global(sources: int) -> None:
    limits = AdmissionLimits(message_rate=1.0, message_burst=5, global_rate=10, global_burst=20)
    admission = LegacyAdmission(limits)
    shown = sum(admission.allow_message(f"10.0.0.{i % sources}", 0.0) for i in range(200))
    assert shown == (5 if sources == 1 else 20)
    assert admission.allow_message("10.0.9.9", 1.0)  # the global bucket refills too


def test_remembered_sources_are_bounded() -> None:
    admission = LegacyAdmission(AdmissionLimits(max_sources=50))
    for n in range(1000):
        admission.allow_message(f"10.0.{n // 256}.{n % 256}", 0.0)
    assert admission.tracked_sources == 50
