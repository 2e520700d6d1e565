"""Presence in detail: what a listing holds, when verification is asked again, and what
an "exit", a goodbye or silence leaves behind (time passed in)."""

from __future__ import annotations

from peerchat.events import ActivePeer
from peerchat.policy.presence import Presence

FP = "B" * 52
OTHER = "C" * 52
RUN = b"run-one!"


def presence(timeout: float = 15.0) -> Presence:
    # Verified only as "Bob", and only this key: the name asked about must be the one used.
    return Presence(timeout, lambda fp, name: (fp, name) == (FP, "Bob"))


def test_a_listing_holds_the_key_the_address_the_mark_and_the_wall_time() -> None:
    p = presence()
    p.beacon(FP, "Bob", "10.0.0.2", 5000, RUN, now=0.0, wall=100.0)
    assert p.listing() == [ActivePeer(FP, "Bob", "10.0.0.2", 5000, True, 100.0)]
    assert p.session_up(OTHER, "Carol", "10.0.0.3", 5001, now=1.0, wall=101.0) is True
    assert p.get(OTHER) == ActivePeer(OTHER, "Carol", "10.0.0.3", 5001, False, 101.0)


def test_verification_is_asked_again_only_when_the_name_changes() -> None:
    p = presence()
    p.beacon(FP, "Bob", "10.0.0.2", 5000, RUN, now=0.0, wall=0.0)
    p.beacon(FP, "Robert", "10.0.0.9", 5009, RUN, now=1.0, wall=1.0)
    assert p.listing() == [ActivePeer(FP, "Robert", "10.0.0.9", 5009, False, 1.0)]
    p.beacon(FP, "Bob", "10.0.0.2", 5000, RUN, now=2.0, wall=2.0)
    assert p.listing() == [ActivePeer(FP, "Bob", "10.0.0.2", 5000, True, 2.0)]
    p.set_verified(FP, False)  # the user revoked it: the same name does not ask again
    p.beacon(FP, "Bob", "10.0.0.2", 5000, RUN, now=3.0, wall=3.0)
    assert p.listing()[0].verified is False


def test_every_sign_of_life_restarts_the_timeout() -> None:
    p = presence(timeout=15.0)
    p.beacon(FP, "Bob", "10.0.0.2", 5000, RUN, now=0.0, wall=0.0)
    p.beacon(FP, "Bob", "10.0.0.2", 5000, RUN, now=10.0, wall=10.0)
    assert p.expire(20.0) == []
    p.session_up(FP, "Bob", "10.0.0.2", 5000, now=20.0, wall=20.0)
    assert p.expire(30.0) == []
    p.heard(FP, now=30.0, wall=330.0)
    assert p.get(FP) == ActivePeer(FP, "Bob", "10.0.0.2", 5000, True, 330.0)
    assert p.expire(40.0) == []
    assert p.expire(45.5) == [(FP, ActivePeer(FP, "Bob", "10.0.0.2", 5000, True, 330.0))]


def test_a_peer_listed_by_its_session_alone_expires_cleanly() -> None:
    p = presence(timeout=15.0)
    p.session_up(OTHER, "Carol", "10.0.0.3", 5001, now=0.0, wall=0.0)
    [(fp, peer)] = p.expire(16.0)
    assert fp == OTHER and peer is not None and peer.name == "Carol"


def test_a_goodbye_forgets_the_peer_s_silence_too() -> None:
    p = presence(timeout=15.0)
    p.beacon(FP, "Bob", "10.0.0.2", 5000, RUN, now=0.0, wall=0.0)
    assert p.depart(FP) is not None
    assert p.expire(100.0) == []
    assert p.depart(OTHER) is None  # never listed: nothing to say
    assert p.depart(OTHER, until_heard=True) is None


def test_after_an_exit_session_traffic_lists_the_peer_again_as_it_was() -> None:
    p = presence(timeout=15.0)
    p.beacon(FP, "Bob", "10.0.0.2", 5000, RUN, now=0.0, wall=0.0)
    p.depart(FP, until_heard=True)
    assert FP not in p
    p.heard(FP, now=5.0, wall=500.0)
    assert p.listing() == [ActivePeer(FP, "Bob", "10.0.0.2", 5000, True, 500.0)]
    assert p.expire(19.0) == []  # heard at 5: not silent yet
    p.heard(OTHER, now=6.0, wall=600.0)  # never listed, never away: nothing happens
    assert OTHER not in p


def test_once_listed_again_an_exit_is_forgotten() -> None:
    for relist in ("beacon", "session"):
        p = presence(timeout=15.0)
        p.beacon(FP, "Bob", "10.0.0.2", 5000, RUN, now=0.0, wall=0.0)
        p.depart(FP, until_heard=True)
        if relist == "beacon":
            p.beacon(FP, "Bob", "10.0.0.2", 5000, RUN, now=1.0, wall=1.0)
        else:
            p.session_up(FP, "Bob", "10.0.0.2", 5000, now=1.0, wall=1.0)
        assert [fp for fp, _ in p.expire(100.0)] == [FP]
        p.heard(FP, now=101.0, wall=101.0)  # late traffic of an expired peer lists nobody
        assert FP not in p, relist


def test_the_peers_remembered_after_an_exit_are_bounded_oldest_first() -> None:
    p = presence()
    keys = [f"{n:052d}" for n in range(1025)]
    for key in keys:
        p.session_up(key, "Eve", "10.0.0.4", 5000, now=0.0, wall=0.0)
        p.depart(key, until_heard=True)
    p.heard(keys[0], now=1.0, wall=1.0)  # the oldest was forgotten
    assert keys[0] not in p
    p.heard(keys[1], now=1.0, wall=1.0)
    assert keys[1] in p
