"""Peer exchange at its exact limits: each budget and bound at its value and one past,
each refusal counted under its reason, and the bookkeeping of sessions and runs."""

from __future__ import annotations

import pytest

from peerchat.protocol import pex
from peerchat.protocol.beacon import decode_beacon
from peerchat.protocol.messages import PeerExchange, PexRecord, decode_message, encode_message
from peerchat.protocol.pex import (
    ACCEPTED,
    BAD_ADDRESS,
    BAD_SIGNATURE,
    DUPLICATE,
    MALFORMED,
    NO_SESSION,
    RATE_LIMITED,
    RELAY_HOLD,
    REPLAY,
    STALE,
    OwnBeacon,
    PeerExchangeState,
    address_problem,
)
from tests.test_pex import (
    LAN,
    NOW,
    RUN_1,
    RUN_2,
    beacon_of,
    forged,
    fp,
    identity,
    pair_up,
    record,
    state,
    with_session,
)

BOB_HOST = "10.1.0.8"


def said(s: PeerExchangeState, who: str, own: bytes = b"", *records: PexRecord) -> list[str]:
    """What `who` (a session peer at LAN) tells `s`, as the fingerprints of the hints."""
    hints = s.receive(fp(who), LAN, PeerExchange(own, records), NOW)
    return [h.fingerprint for h in hints]


def own_from(s: PeerExchangeState, who: str, data: bytes, now: float = NOW) -> None:
    s.receive(fp(who), LAN, PeerExchange(data, ()), now)


def relayed_to(s: PeerExchangeState, to: str, start: float) -> list[tuple[str, str, int]]:
    """(fingerprint, host, port) of the records `to` gets at `start` and once past the hold."""
    sends = s.outgoing(start) + s.outgoing(start + RELAY_HOLD)
    return [
        (decode_beacon(r.beacon)[0].fingerprint, r.host, r.port)
        for target, message in sends
        if target == fp(to)
        for r in message.records
    ]


# -- addresses ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "sender", "problem"),
    [
        ("nonsense", LAN, "not an IPv4 address"),
        ("0.0.0.0", LAN, "unspecified address"),
        ("224.0.0.251", LAN, "multicast address"),
        ("255.255.255.255", LAN, "broadcast or reserved address"),
        ("127.0.0.1", LAN, "loopback address from a peer not on loopback"),
    ],
)
def test_address_problem_says_exactly_why(host: str, sender: str, problem: str) -> None:
    assert address_problem(host, sender) == problem


def test_a_record_at_a_refused_address_is_a_bad_address() -> None:
    s = with_session(state(refused_addresses=("10.1.0.255",)), "bob")  # type: ignore[arg-type]
    assert said(s, "bob", b"", record("carol", host="10.1.0.255")) == []
    assert s.counts == {BAD_ADDRESS: 1}


# -- own beacons -------------------------------------------------------------------


def test_own_beacon_counts_its_runs_one_up_per_signature() -> None:
    own = OwnBeacon(identity("me"), "Me", 5000, RUN_1)
    assert [decode_beacon(own.sign(NOW + i))[0].seq for i in range(3)] == [0, 1, 2]


def test_each_refusal_of_an_own_beacon_is_counted_under_its_reason() -> None:
    s = with_session(with_session(state(), "bob"), "mallory", "10.1.0.66")
    own_from(s, "bob", b"PCHB" + b"\x00" * 60)
    assert s.counts == {MALFORMED: 1}
    own_from(s, "bob", beacon_of("bob", at=NOW - 31))
    assert s.counts == {MALFORMED: 1, STALE: 1}
    s.receive(fp("mallory"), "10.1.0.66", PeerExchange(forged("mallory", "carol"), ()), NOW)
    assert s.counts == {MALFORMED: 1, STALE: 1, BAD_SIGNATURE: 1}
    assert s.relayable() == []


@pytest.mark.parametrize(("age", "taken"), [(30.0, True), (-30.0, True), (30.5, False)])
def test_an_own_beacon_is_fresh_up_to_the_skew_exactly(age: float, taken: bool) -> None:
    s = with_session(state(max_skew=30), "bob")
    own_from(s, "bob", beacon_of("bob", at=NOW - age))
    assert (s.relayable() == [fp("bob")]) is taken


def test_an_own_beacon_of_a_new_run_needs_a_later_time_than_the_one_held() -> None:
    s = with_session(state(), "bob")
    own_from(s, "bob", beacon_of("bob", run=RUN_1, seq=7))
    own_from(s, "bob", beacon_of("bob", run=RUN_2, seq=8))  # same time: an old run's replay
    assert s.counts == {ACCEPTED: 1, REPLAY: 1}
    own_from(s, "bob", beacon_of("bob", run=RUN_2, at=NOW + 1), NOW + 1)
    assert s.counts == {ACCEPTED: 2, REPLAY: 1}


def test_own_beacons_at_the_minimum_burst_of_two() -> None:
    s = with_session(state(own_per_minute=2), "bob")  # burst max(2, 1) = 2
    for seq in range(3):
        own_from(s, "bob", beacon_of("bob", seq=seq))
    assert s.counts == {ACCEPTED: 2, RATE_LIMITED: 1}


def test_own_beacons_come_back_at_their_rate() -> None:
    s = with_session(state(own_per_minute=6), "bob")  # burst 3, then one each 10 s
    for seq in range(3):
        own_from(s, "bob", beacon_of("bob", seq=seq))
    own_from(s, "bob", beacon_of("bob", seq=3, at=NOW + 10), NOW + 10)
    own_from(s, "bob", beacon_of("bob", seq=4, at=NOW + 10), NOW + 10)
    assert s.counts == {ACCEPTED: 4, RATE_LIMITED: 1}


def test_an_own_beacon_beyond_the_verification_budget_is_rate_limited() -> None:
    s = with_session(state(verify_per_minute=6), "bob")  # burst 1
    assert said(s, "bob", b"", record("carol")) == [fp("carol")]
    own_from(s, "bob", beacon_of("bob"))
    assert s.counts == {ACCEPTED: 1, RATE_LIMITED: 1}
    assert s.relayable() == []


def test_an_own_beacon_once_checked_is_not_checked_again_as_a_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = with_session(with_session(state(), "bob"), "dave", "10.1.0.9")
    data = beacon_of("bob")
    own_from(s, "bob", data)

    def no_check(der: bytes, sig: bytes, msg: bytes) -> bool:
        raise AssertionError("checked twice")

    monkeypatch.setattr(pex, "verify_signature", no_check)
    hints = s.receive(fp("dave"), "10.1.0.9", PeerExchange(b"", (PexRecord(LAN, 5000, data),)), NOW)
    assert [h.fingerprint for h in hints] == [fp("bob")]
    assert s.counts == {ACCEPTED: 1, DUPLICATE: 1}


# -- records -----------------------------------------------------------------------


def test_records_without_a_session_are_counted_one_by_one_with_the_own_beacon() -> None:
    s = state()
    s.receive(fp("bob"), LAN, PeerExchange(beacon_of("bob"), (record("carol"),) * 2), NOW)
    assert s.counts == {NO_SESSION: 3}


@pytest.mark.parametrize(
    ("at", "taken"),
    [(NOW - 90, True), (NOW - 90.5, False), (NOW + 30, True), (NOW + 30.5, False)],
)
def test_a_record_is_fresh_from_max_age_old_to_max_skew_ahead(at: float, taken: bool) -> None:
    s = with_session(state(max_age=90, max_skew=30), "bob")
    assert bool(said(s, "bob", b"", record("carol", at=at))) is taken
    assert s.counts == ({ACCEPTED: 1} if taken else {STALE: 1})


def test_records_come_back_at_the_per_peer_rate() -> None:
    s = with_session(state(records_per_minute=60), "bob")  # burst 60, then one a second
    bad = PexRecord("0.0.0.1", 5000, b"x")
    for _ in range(4):
        said(s, "bob", b"", *(bad,) * 15)
    assert s.counts == {BAD_ADDRESS: 60}
    s.receive(fp("bob"), LAN, PeerExchange(b"", (bad, bad)), NOW + 1)
    assert s.counts == {BAD_ADDRESS: 61, RATE_LIMITED: 1}


def test_signature_checks_come_back_at_the_global_rate() -> None:
    s = with_session(state(verify_per_minute=60), "bob")  # burst 10, then one a second
    junk = PexRecord("10.1.0.9", 5000, forged("carol", "mallory"))
    said(s, "bob", b"", *(junk,) * 10)
    assert s.counts == {BAD_SIGNATURE: 10}
    s.receive(fp("bob"), LAN, PeerExchange(b"", (junk, junk)), NOW + 1)
    assert s.counts == {BAD_SIGNATURE: 11, RATE_LIMITED: 1}


def test_a_forged_record_after_a_valid_one_is_still_checked() -> None:
    s = with_session(state(), "bob")
    assert said(s, "bob", b"", record("carol")) == [fp("carol")]
    forgery = PexRecord("10.1.0.66", 5000, forged("dave", "mallory"))
    assert said(s, "bob", b"", forgery) == []
    assert s.counts == {ACCEPTED: 1, BAD_SIGNATURE: 1}


def test_a_record_seen_twice_is_counted_accepted_then_duplicate() -> None:
    s = with_session(state(), "bob")
    data = record("carol")
    assert said(s, "bob", b"", data, data) == [fp("carol"), fp("carol")]
    assert s.counts == {ACCEPTED: 1, DUPLICATE: 1}


def test_checked_beacons_are_remembered_up_to_the_bound_least_recent_first_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pex, "MAX_VERIFIED_DIGESTS", 2)
    s = with_session(state(), "bob")
    carol, dave, eve = record("carol"), record("dave"), record("eve")
    said(s, "bob", b"", carol, dave, dave)
    assert s.counts == {ACCEPTED: 2, DUPLICATE: 1}  # two remembered: the bound itself
    said(s, "bob", b"", eve, dave, carol)  # eve pushes carol out; dave is still held
    assert s.counts == {ACCEPTED: 4, DUPLICATE: 2}


# -- runs --------------------------------------------------------------------------


def test_another_run_at_the_same_time_as_the_accepted_one_is_a_replay() -> None:
    s = with_session(state(), "bob")
    assert said(s, "bob", b"", record("carol", run=RUN_2)) == [fp("carol")]
    assert said(s, "bob", b"", record("carol", run=RUN_1)) == []
    assert s.counts == {ACCEPTED: 1, REPLAY: 1}


def test_an_older_beacon_of_the_current_run_does_not_move_its_time_back() -> None:
    s = with_session(state(), "bob")
    said(s, "bob", b"", record("carol", run=RUN_1, at=NOW))
    said(s, "bob", b"", record("carol", run=RUN_1, at=NOW - 5))  # same run: still a hint
    assert said(s, "bob", b"", record("carol", run=RUN_2, at=NOW - 3)) == []
    assert s.counts == {ACCEPTED: 2, REPLAY: 1}


def test_a_later_run_takes_over_and_the_earlier_one_is_then_a_replay() -> None:
    s = with_session(state(), "bob")
    said(s, "bob", b"", record("carol", run=RUN_1, at=NOW))
    said(s, "bob", b"", record("carol", run=RUN_2, at=NOW + 1))
    assert said(s, "bob", b"", record("carol", run=RUN_1, at=NOW + 0.5)) == []
    assert s.counts == {ACCEPTED: 2, REPLAY: 1}


def test_an_own_beacon_of_another_run_at_the_same_time_does_not_take_over() -> None:
    s = with_session(with_session(state(), "bob"), "carol", "10.1.0.9")
    said(s, "bob", b"", record("carol", run=RUN_1, at=NOW))
    s.receive(fp("carol"), "10.1.0.9", PeerExchange(beacon_of("carol", run=RUN_2), ()), NOW)
    assert s.relayable() == [fp("carol")]
    # The run that was first at that time stays the current one.
    assert said(s, "bob", b"", record("carol", run=RUN_1, at=NOW - 1)) == [fp("carol")]


def test_runs_are_remembered_for_max_keys_peers_least_recent_first_out() -> None:
    s = with_session(state(max_keys=2), "bob")
    said(s, "bob", b"", record("carol", run=RUN_2), record("dave", run=RUN_2))
    assert said(s, "bob", b"", record("carol", run=RUN_1, at=NOW - 5)) == []  # both held
    said(s, "bob", b"", record("eve", run=RUN_2))  # carol's run is forgotten
    assert said(s, "bob", b"", record("carol", run=RUN_1, at=NOW - 5)) == [fp("carol")]
    assert said(s, "bob", b"", record("eve", run=RUN_1, at=NOW - 5)) == []
    assert s.counts[REPLAY] == 2


def test_per_peer_budgets_are_kept_for_max_keys_peers_least_recent_first_out() -> None:
    s = state(max_keys=2, records_per_minute=1)
    bad = PexRecord("0.0.0.1", 5000, b"x")
    for who in ("p0", "p1", "p2"):
        with_session(s, who)
        said(s, who, b"", bad)
    assert s.counts == {BAD_ADDRESS: 3}
    said(s, "p2", b"", bad)  # p2's bucket is kept: empty
    assert s.counts == {BAD_ADDRESS: 3, RATE_LIMITED: 1}
    said(s, "p0", b"", bad)  # p0's was forgotten: full again
    assert s.counts == {BAD_ADDRESS: 4, RATE_LIMITED: 1}


# -- sending -----------------------------------------------------------------------


def test_own_beacon_is_signed_once_for_sessions_due_at_the_same_time() -> None:
    signed: list[float] = []
    own = OwnBeacon(identity("me"), "Me", 5000, RUN_1)

    def sign(now: float) -> bytes:
        signed.append(now)
        return own.sign(now)

    s = PeerExchangeState(fp("me"), sign, max_skew=30)
    s.session_up(fp("bob"), BOB_HOST, 5000)
    s.session_up(fp("carol"), "10.1.0.9", 5000)
    s.outgoing(NOW)
    s.session_up(fp("dave"), "10.1.0.10", 5000)
    s.outgoing(NOW + 0.5)
    assert signed == [NOW]
    s.session_up(fp("eve"), "10.1.0.11", 5000)
    s.outgoing(NOW + 15)  # half the skew old: signed again
    assert signed == [NOW, NOW + 15]


def test_the_own_beacon_is_signed_even_near_the_epoch() -> None:
    s = with_session(state(), "bob")
    ((_, message),) = s.outgoing(10.0)
    assert decode_beacon(message.own_beacon)[0].timestamp == 10.0


def test_own_beacon_is_not_sent_again_within_the_interval() -> None:
    s = with_session(state(self_interval=30), "bob")
    assert len(s.outgoing(NOW)) == 1
    assert s.outgoing(NOW) == []
    assert s.outgoing(NOW + 0.5) == []
    assert [bool(m.own_beacon) for _, m in s.outgoing(NOW + 30)] == [True]


def relay_peers(s: PeerExchangeState, n: int) -> list[str]:
    names = [f"p{i}" for i in range(n)]
    for i, who in enumerate(names):
        pair_up(s, who, f"10.1.1.{i + 1}")
    return names


def sender_and_receiver() -> tuple[str, str]:
    """Two peers such that the first never holds records back from the second."""
    low, high = sorted(["me", "bob"], key=fp)
    return low, high


def test_a_sender_spends_three_quarters_of_the_receivers_budget() -> None:
    # Per minute 20: a burst of 15, then 0.25 a second.
    me, to = sender_and_receiver()
    s = state(me, records_per_minute=20, max_records=100)
    relay_peers(s, 30)
    s.session_up(fp(to), BOB_HOST, 5000)
    counts = []
    for t in (0, 4, 8, 9):
        counts.append(sum(len(m.records) for target, m in s.outgoing(NOW + t) if target == fp(to)))
    assert counts == [15, 1, 1, 0]


@pytest.mark.parametrize("max_records", [1, 3])
def test_a_message_carries_at_most_max_records(max_records: int) -> None:
    me, to = sender_and_receiver()
    s = state(me, max_records=max_records)
    relay_peers(s, 5)
    s.session_up(fp(to), BOB_HOST, 5000)
    sizes = [len(m.records) for target, m in s.outgoing(NOW) if target == fp(to)]
    assert sizes == [max_records]


def test_peers_already_sent_are_skipped_and_the_rest_still_sent() -> None:
    s = state()
    pair_up(s, "bob", BOB_HOST)
    pair_up(s, "carol", "10.1.0.9")
    pair_up(s, "dave", "10.1.0.10")
    assert {f for f, _, _ in relayed_to(s, "dave", NOW)} == {fp("bob"), fp("carol")}
    pair_up(s, "eve", "10.1.0.11")
    assert [f for f, _, _ in relayed_to(s, "dave", NOW + 3)] == [fp("eve")]


def test_peers_the_receiver_told_us_of_are_skipped_and_the_rest_still_sent() -> None:
    s = state()
    pair_up(s, "carol", "10.1.0.9")
    pair_up(s, "eve", "10.1.0.11")
    s.session_up(fp("bob"), BOB_HOST, 5000)
    s.receive(fp("bob"), BOB_HOST, PeerExchange(b"", (record("carol"),)), NOW)
    assert [f for f, _, _ in relayed_to(s, "bob", NOW)] == [fp("eve")]


def test_what_a_session_peer_told_us_is_remembered_for_max_keys_peers() -> None:
    s = state(max_keys=2, records_per_minute=1000)
    for i, who in enumerate(("carol", "dave", "eve")):
        pair_up(s, who, f"10.1.0.{i + 20}")
    s.session_up(fp("bob"), BOB_HOST, 5000)
    told = tuple(record(who) for who in ("carol", "dave", "eve"))
    s.receive(fp("bob"), BOB_HOST, PeerExchange(b"", told), NOW)
    assert [f for f, _, _ in relayed_to(s, "bob", NOW)] == [fp("eve")]


@pytest.mark.parametrize(("age", "relayed"), [(75.0, True), (75.5, False), (80.0, False)])
def test_a_relayed_beacon_is_passed_on_up_to_max_age_less_the_margin(
    age: float, relayed: bool
) -> None:
    # max_age 90 less the margin of 15: up to 75 s old.
    me, to = sender_and_receiver()
    s = state(me, max_age=90)
    pair_up(s, "carol", "10.1.0.9", now=NOW)
    s.session_up(fp(to), BOB_HOST, 5000)
    sent = [r for target, m in s.outgoing(NOW + age) if target == fp(to) for r in m.records]
    assert bool(sent) is relayed


def test_a_beacon_too_old_to_relay_does_not_stop_the_next_one() -> None:
    s = state()
    pair_up(s, "bob", BOB_HOST, now=NOW - 60)
    pair_up(s, "carol", "10.1.0.9", now=NOW)
    s.session_up(fp("dave"), "10.1.0.10", 5000)
    assert [f for f, _, _ in relayed_to(s, "dave", NOW + 20)] == [fp("carol")]


def test_loopback_addresses_are_passed_between_peers_on_loopback() -> None:
    s = state()
    pair_up(s, "carol", "127.0.0.2")
    s.session_up(fp("bob"), "127.0.0.1", 5000)
    assert relayed_to(s, "bob", NOW) == [(fp("carol"), "127.0.0.2", 5000)]


def test_a_peer_that_cannot_be_relayed_to_one_peer_does_not_stop_the_next() -> None:
    s = state()
    pair_up(s, "bob", "127.0.0.1")
    pair_up(s, "carol", "10.1.0.9")
    s.session_up(fp("dave"), "10.1.0.10", 5000)
    assert [f for f, _, _ in relayed_to(s, "dave", NOW)] == [fp("carol")]


def test_a_peer_at_a_refused_address_is_not_passed_on() -> None:
    s = state(refused_addresses=("10.1.0.255",))  # type: ignore[arg-type]
    pair_up(s, "carol", "10.1.0.255")
    pair_up(s, "eve", "10.1.0.11")
    s.session_up(fp("bob"), BOB_HOST, 5000)
    assert [f for f, _, _ in relayed_to(s, "bob", NOW)] == [fp("eve")]


def test_hostile_counts_are_ordered_by_count_then_by_reason() -> None:
    s = with_session(state(), "mallory")
    junk = (
        PexRecord("10.1.0.66", 5000, forged("carol", "mallory")),
        PexRecord("10.1.0.66", 5000, b"junk"),
        PexRecord("10.1.0.66", 5000, b"junk"),
        PexRecord("10.1.0.66", 5000, b"junk"),
        PexRecord("0.0.0.1", 5000, b"junk"),
    )
    s.receive(fp("mallory"), LAN, PeerExchange(b"", junk), NOW)
    assert list(s.hostile_counts().items()) == [
        (MALFORMED, 3),
        (BAD_ADDRESS, 1),
        (BAD_SIGNATURE, 1),
    ]


# -- sessions ----------------------------------------------------------------------


def test_a_session_reported_again_keeps_its_state_and_takes_the_new_address() -> None:
    s = state()
    pair_up(s, "carol", "10.1.0.9")
    s.session_up(fp("bob"), BOB_HOST, 5000)
    assert relayed_to(s, "bob", NOW) == [(fp("carol"), "10.1.0.9", 5000)]
    s.session_up(fp("bob"), "10.1.0.18", 5001)  # bob again: nothing is due anew
    s.session_up(fp("carol"), "10.1.0.19", 5002)
    assert s.outgoing(NOW + 5) == []
    pair_up(s, "eve", "10.1.0.11")
    s.session_up(fp("dave"), "10.1.0.10", 5000)
    assert sorted(relayed_to(s, "dave", NOW + 5)) == sorted(
        [(fp("carol"), "10.1.0.19", 5002), (fp("eve"), "10.1.0.11", 5000)]
    )


def test_a_session_that_went_down_gets_nothing_more() -> None:
    s = state()
    pair_up(s, "bob", BOB_HOST)
    pair_up(s, "carol", "10.1.0.9")
    s.session_down(fp("carol"))
    assert [to for to, _ in s.outgoing(NOW)] == [fp("bob")]


def test_a_session_down_never_up_or_without_an_own_beacon_is_fine() -> None:
    s = state()
    s.session_down(fp("bob"))
    s.session_up(fp("carol"), "10.1.0.9", 5000)
    s.session_down(fp("carol"))
    assert s.outgoing(NOW) == []
    assert s.relayable() == []


def test_a_peer_back_after_going_down_is_passed_on_again() -> None:
    s = state()
    pair_up(s, "bob", BOB_HOST)
    pair_up(s, "carol", "10.1.0.9")
    assert [f for f, _, _ in relayed_to(s, "bob", NOW)] == [fp("carol")]
    s.session_down(fp("carol"))
    pair_up(s, "carol", "10.1.0.9", now=NOW + 5)
    assert [f for f, _, _ in relayed_to(s, "bob", NOW + 5)] == [fp("carol")]


def test_a_peer_the_receiver_told_us_of_is_passed_on_after_it_went_down_and_back() -> None:
    s = state()
    pair_up(s, "bob", BOB_HOST)
    pair_up(s, "carol", "10.1.0.9")
    s.receive(fp("bob"), BOB_HOST, PeerExchange(b"", (record("carol"),)), NOW)
    assert relayed_to(s, "bob", NOW) == []
    s.session_down(fp("carol"))
    pair_up(s, "carol", "10.1.0.9", now=NOW + 5)
    assert [f for f, _, _ in relayed_to(s, "bob", NOW + 5)] == [fp("carol")]


def test_records_between_own_beacons_go_with_an_empty_own_field() -> None:
    me, to = sender_and_receiver()
    s = state(me)
    s.session_up(fp(to), BOB_HOST, 5000)
    s.outgoing(NOW)  # our own beacon, nothing to relay yet
    pair_up(s, "carol", "10.1.0.9", now=NOW + 1)
    sends = dict(s.outgoing(NOW + 1))
    assert sends[fp(to)].own_beacon == b""
    assert decode_message(encode_message(sends[fp(to)])) == sends[fp(to)]
