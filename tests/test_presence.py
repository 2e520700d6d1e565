"""Presence: who is listed, from beacons, sessions and silence (time passed in)."""

from __future__ import annotations

from peerchat.policy.presence import BeaconNews, Presence

FP = "B" * 52
RUN1 = b"run-one!"
RUN2 = b"run-two!"


def presence(timeout: float = 15.0, verified: frozenset[str] = frozenset()) -> Presence:
    return Presence(timeout, lambda fp, _name: fp in verified)


def test_a_beacon_lists_a_peer_and_only_its_first_beacon_of_a_run_is_news() -> None:
    p = presence()
    assert p.beacon(FP, "Bob", "10.0.0.2", 5000, RUN1, now=0.0, wall=100.0) is BeaconNews.ANNOUNCE
    assert p.beacon(FP, "Bob", "10.0.0.2", 5000, RUN1, now=1.0, wall=101.0) is BeaconNews.SEEN
    [bob] = p.listing()
    assert (bob.name, bob.host, bob.port, bob.last_seen) == ("Bob", "10.0.0.2", 5000, 101.0)
    assert p.fingerprint_at("10.0.0.2", 5000) == FP


def test_a_departed_peer_is_not_brought_back_by_beacons_of_the_same_run() -> None:
    p = presence()
    p.beacon(FP, "Bob", "10.0.0.2", 5000, RUN1, now=0.0, wall=0.0)
    gone = p.depart(FP)
    assert gone is not None and gone.name == "Bob"
    assert p.beacon(FP, "Bob", "10.0.0.2", 5000, RUN1, now=1.0, wall=1.0) is BeaconNews.IGNORED
    assert FP not in p
    # A new run of the same key is listed and announced again.
    assert p.beacon(FP, "Bob", "10.0.0.2", 5000, RUN2, now=2.0, wall=2.0) is BeaconNews.ANNOUNCE
    assert FP in p


def test_a_session_lists_a_departed_peer_again() -> None:
    p = presence()
    p.beacon(FP, "Bob", "10.0.0.2", 5000, RUN1, now=0.0, wall=0.0)
    p.depart(FP)
    assert p.session_up(FP, "Bob", "10.0.0.2", 5000, now=1.0, wall=1.0) is True
    assert p.session_up(FP, "Bob", "10.0.0.2", 5000, now=1.5, wall=1.5) is False
    # ... and after that session, the old run's beacons count again.
    assert p.beacon(FP, "Bob", "10.0.0.2", 5000, RUN1, now=2.0, wall=2.0) is BeaconNews.SEEN


def test_a_silent_peer_expires_after_the_timeout_and_its_return_is_news_again() -> None:
    p = presence(timeout=15.0)
    p.beacon(FP, "Bob", "10.0.0.2", 5000, RUN1, now=0.0, wall=0.0)
    p.heard(FP, now=5.0, wall=5.0)
    assert p.next_due() == 20.0
    assert p.expire(20.0) == []  # exactly the timeout: not yet longer
    [(fp, peer)] = p.expire(20.01)
    assert fp == FP and peer is not None and peer.name == "Bob"
    assert p.next_due() is None
    assert p.beacon(FP, "Bob", "10.0.0.2", 5000, RUN1, now=21.0, wall=21.0) is BeaconNews.ANNOUNCE


def test_verified_comes_from_the_store_when_listed_and_changes_through_set_verified() -> None:
    p = presence(verified=frozenset({FP}))
    p.session_up(FP, "Bob", "10.0.0.2", 5000, now=0.0, wall=0.0)
    assert p.listing()[0].verified is True
    other = "C" * 52
    p.session_up(other, "Carol", "10.0.0.3", 5000, now=0.0, wall=0.0)
    p.set_verified(other, True)
    assert [peer.verified for peer in p.listing()] == [True, True]


def test_the_listing_is_a_copy_sorted_by_name() -> None:
    p = presence()
    p.session_up("C" * 52, "carol", "10.0.0.3", 5000, now=0.0, wall=0.0)
    p.session_up(FP, "Bob", "10.0.0.2", 5000, now=0.0, wall=0.0)
    listing = p.listing()
    assert [peer.name for peer in listing] == ["Bob", "carol"]
    listing[0].name = "changed"
    assert p.get(FP) is not None and p.get(FP).name == "Bob"  # type: ignore[union-attr]
