"""Peer exchange: the PeerExchange message, and what a receiver believes of it."""

from __future__ import annotations

import contextlib
import struct
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto_utils import Identity, verify_signature
from peerchat.errors import ProtocolError
from peerchat.limits import BEACON_MAX_SIZE, PEX_MAX_RECORDS
from peerchat.protocol import pex
from peerchat.protocol.beacon import SIGNING_CONTEXT, decode_beacon, encode_beacon
from peerchat.protocol.messages import (
    KIND_PEER_EXCHANGE,
    PeerExchange,
    PexRecord,
    decode_message,
    encode_message,
)
from peerchat.protocol.pex import (
    ABOUT_SENDER,
    BAD_ADDRESS,
    BAD_SIGNATURE,
    FOREIGN_OWN,
    MALFORMED,
    NO_SESSION,
    RATE_LIMITED,
    RELAY_HOLD,
    REPLAY,
    SELF,
    STALE,
    OwnBeacon,
    PeerExchangeState,
    PexHint,
    address_problem,
)

NOW = 1_700_000_000.0
RUN_1 = bytes(range(16))
RUN_2 = bytes(range(16, 32))
LAN = "10.1.0.7"  # where the sending peer is seen


@cache
def identity(name: str) -> Identity:
    return Identity.generate(2048)


def beacon_of(
    who: str, *, at: float = NOW, seq: int = 0, run: bytes = RUN_1, name: str | None = None
) -> bytes:
    return encode_beacon(identity(who), name or who.capitalize(), 5000, run, seq, at)


def forged(claimed: str, signer: str, *, at: float = NOW) -> bytes:
    """`claimed`'s key and name in a beacon signed by `signer`'s key."""
    signed = decode_beacon(beacon_of(claimed, at=at))[1]
    return signed[len(SIGNING_CONTEXT) :] + identity(signer).sign(signed)


def fp(who: str) -> str:
    return identity(who).fingerprint


def state(me: str = "me", **kw: float) -> PeerExchangeState:
    own = OwnBeacon(identity(me), me.capitalize(), 5000, RUN_1)
    return PeerExchangeState(fp(me), own.sign, **kw)  # type: ignore[arg-type]


def record(who: str, host: str = "10.1.0.9", *, at: float = NOW, run: bytes = RUN_1) -> PexRecord:
    return PexRecord(host, 5000, beacon_of(who, at=at, run=run))


def with_session(s: PeerExchangeState, who: str, host: str = LAN) -> PeerExchangeState:
    s.session_up(fp(who), host, 5000)
    return s


# -- the message ------------------------------------------------------------------


def test_peer_exchange_wire_layout() -> None:
    own = b"O" * 50
    rec = PexRecord("10.1.2.3", 5001, b"B" * 60)
    wire = encode_message(PeerExchange(own, (rec,)))
    expected = (
        bytes([KIND_PEER_EXCHANGE])
        + struct.pack(">H", 50)
        + own
        + b"\x01"
        + bytes([10, 1, 2, 3])
        + struct.pack(">HH", 5001, 60)
        + b"B" * 60
    )
    assert wire == expected
    assert decode_message(wire) == PeerExchange(own, (rec,))


records = st.builds(
    PexRecord,
    st.ip_addresses(v=4).map(str),
    st.integers(1, 65535),
    st.binary(min_size=1, max_size=BEACON_MAX_SIZE),
)
exchanges = st.builds(
    PeerExchange,
    st.binary(max_size=BEACON_MAX_SIZE),
    st.lists(records, max_size=PEX_MAX_RECORDS).map(tuple),
).filter(lambda m: bool(m.own_beacon or m.records))


@settings(max_examples=200)
@given(exchanges)
def test_peer_exchange_round_trips_canonically(message: PeerExchange) -> None:
    wire = encode_message(message)
    assert decode_message(wire) == message
    assert encode_message(decode_message(wire)) == wire


@settings(max_examples=300)
@given(exchanges, st.data())
def test_a_cut_or_padded_peer_exchange_is_a_protocol_error(
    message: PeerExchange, data: st.DataObject
) -> None:
    wire = encode_message(message)
    cut = data.draw(st.integers(1, len(wire) - 1))
    with pytest.raises(ProtocolError):
        decode_message(wire[:cut])
    with pytest.raises(ProtocolError):
        decode_message(wire + data.draw(st.binary(min_size=1, max_size=8)))


@given(st.binary(max_size=400))
def test_decoding_any_bytes_after_the_kind_raises_only_protocol_error(tail: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_message(bytes([KIND_PEER_EXCHANGE]) + tail)


def test_peer_exchange_bounds_on_decode() -> None:
    rec = b"\x0a\x01\x02\x03" + struct.pack(">HH", 5000, 1) + b"x"
    too_many = PEX_MAX_RECORDS + 1
    head = bytes([KIND_PEER_EXCHANGE]) + struct.pack(">H", 0)
    with pytest.raises(ProtocolError, match="records"):
        decode_message(head + bytes([too_many]) + rec * too_many)
    assert len(decode_message(head + bytes([PEX_MAX_RECORDS]) + rec * PEX_MAX_RECORDS).records) == (  # type: ignore[union-attr]
        PEX_MAX_RECORDS
    )
    with pytest.raises(ProtocolError, match="empty"):
        decode_message(head + b"\x00")
    with pytest.raises(ProtocolError, match="own beacon"):
        decode_message(bytes([KIND_PEER_EXCHANGE]) + struct.pack(">H", BEACON_MAX_SIZE + 1))
    big = b"\x0a\x01\x02\x03" + struct.pack(">HH", 5000, BEACON_MAX_SIZE + 1)
    with pytest.raises(ProtocolError, match="beacon length"):
        decode_message(head + b"\x01" + big + b"x" * (BEACON_MAX_SIZE + 1))
    port_zero = b"\x0a\x01\x02\x03" + struct.pack(">HH", 0, 1) + b"x"
    with pytest.raises(ProtocolError, match="port"):
        decode_message(head + b"\x01" + port_zero)


@pytest.mark.parametrize(
    "message",
    [
        PeerExchange(b"", ()),
        PeerExchange(b"x" * (BEACON_MAX_SIZE + 1), ()),
        PeerExchange(b"", (PexRecord("10.0.0.1", 5000, b"x"),) * (PEX_MAX_RECORDS + 1)),
        PeerExchange(b"", (PexRecord("10.0.0.1", 0, b"x"),)),
        PeerExchange(b"", (PexRecord("10.0.0.1", 5000, b""),)),
        PeerExchange(b"", (PexRecord("host.example", 5000, b"x"),)),
        PeerExchange(b"", (PexRecord("::1", 5000, b"x"),)),
    ],
)
def test_encoding_refuses_what_no_receiver_accepts(message: PeerExchange) -> None:
    with pytest.raises(ValueError):
        encode_message(message)


# -- addresses ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "sender", "problem"),
    [
        ("10.1.0.9", LAN, None),
        ("192.168.5.5", LAN, None),
        ("169.254.3.3", LAN, None),
        ("0.0.0.0", LAN, "unspecified"),
        ("0.1.2.3", LAN, "unspecified"),
        ("224.0.0.251", LAN, "multicast"),
        ("239.255.255.250", LAN, "multicast"),
        ("255.255.255.255", LAN, "broadcast"),
        ("240.0.0.1", LAN, "reserved"),
        ("10.1.0.255", LAN, "broadcast"),  # in refused: this host's directed broadcast
        ("127.0.0.1", LAN, "loopback"),
        ("127.0.0.1", "127.0.0.1", None),
        ("127.3.4.5", "127.0.0.2", None),
        ("127.0.0.1", "?", "loopback"),
        ("not an address", LAN, "IPv4"),
    ],
)
def test_address_problem(host: str, sender: str, problem: str | None) -> None:
    found = address_problem(host, sender, refused={"10.1.0.255"})
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


# -- receiving ---------------------------------------------------------------------


def test_a_valid_record_is_a_hint_about_its_own_key_via_the_sender() -> None:
    s = with_session(state(), "bob")
    hints = s.receive(fp("bob"), LAN, PeerExchange(b"", (record("carol"),)), NOW + 1)
    assert hints == [PexHint(fp("carol"), "Carol", "10.1.0.9", 5000, RUN_1, fp("bob"))]
    assert s.hostile == 0


def test_records_from_a_peer_without_a_session_are_ignored() -> None:
    s = state()
    assert s.receive(fp("bob"), LAN, PeerExchange(b"", (record("carol"),)), NOW) == []
    assert s.counts[NO_SESSION] == 1


def test_a_forged_record_cannot_speak_for_another_key() -> None:
    # Mallory signs a beacon that carries Carol's key and name: it is refused,
    # and nothing about Carol (or Mallory) comes out of it.
    s = with_session(state(), "mallory")
    message = PeerExchange(b"", (PexRecord("10.1.0.66", 5000, forged("carol", "mallory")),))
    assert s.receive(fp("mallory"), LAN, message, NOW) == []
    assert s.counts[BAD_SIGNATURE] == 1
    assert s.hostile == 1


def test_a_record_names_only_the_key_that_signed_it() -> None:
    # Mallory's own valid beacon, under the name "Carol": the hint is for
    # Mallory's key, never Carol's.
    s = with_session(state(), "bob")
    rec = PexRecord("10.1.0.66", 5000, beacon_of("mallory", name="Carol"))
    (hint,) = s.receive(fp("bob"), LAN, PeerExchange(b"", (rec,)), NOW)
    assert hint.fingerprint == fp("mallory") != fp("carol")


def test_an_own_beacon_of_another_key_is_refused() -> None:
    s = with_session(state(), "mallory")
    s.receive(fp("mallory"), LAN, PeerExchange(beacon_of("carol"), ()), NOW)
    assert s.counts[FOREIGN_OWN] == 1
    assert s.relayable() == []


def test_a_record_about_the_sender_or_about_us_gives_no_hint() -> None:
    s = with_session(state(), "bob")
    message = PeerExchange(b"", (record("bob"), record("me")))
    assert s.receive(fp("bob"), LAN, message, NOW) == []
    assert s.counts[ABOUT_SENDER] == 1
    assert s.counts[SELF] == 1


def test_malformed_and_stale_records_are_dropped() -> None:
    s = with_session(state(), "bob")
    junk = PexRecord("10.1.0.9", 5000, b"PCHB" + b"\x00" * 60)
    old = record("carol", at=NOW - 91)
    future = record("dave", at=NOW + 31)
    assert s.receive(fp("bob"), LAN, PeerExchange(b"", (junk, old, future)), NOW) == []
    assert s.counts[MALFORMED] == 1
    assert s.counts[STALE] == 2
    assert s.hostile == 1  # stale can be honest (a slow relay); junk cannot


@pytest.mark.parametrize("host", ["0.0.0.0", "224.0.0.251", "255.255.255.255", "127.0.0.1"])
def test_hostile_addresses_are_dropped_and_counted_before_any_check(host: str) -> None:
    s = with_session(state(), "bob")
    rec = PexRecord(host, 5000, forged("carol", "mallory"))  # not even decoded
    assert s.receive(fp("bob"), LAN, PeerExchange(b"", (rec,)), NOW) == []
    assert s.counts == {BAD_ADDRESS: 1}


def test_loopback_is_fine_from_a_peer_on_loopback() -> None:
    s = with_session(state(), "bob", host="127.0.0.1")
    rec = record("carol", host="127.0.0.1")
    assert len(s.receive(fp("bob"), "127.0.0.1", PeerExchange(b"", (rec,)), NOW)) == 1


def test_a_beacon_of_an_older_run_is_a_replay() -> None:
    s = with_session(state(), "bob")
    new_run = record("carol", run=RUN_2, at=NOW)
    old_run = record("carol", run=RUN_1, at=NOW - 5)
    assert len(s.receive(fp("bob"), LAN, PeerExchange(b"", (new_run,)), NOW)) == 1
    assert s.receive(fp("bob"), LAN, PeerExchange(b"", (old_run,)), NOW) == []
    assert s.counts[REPLAY] == 1


def test_the_same_record_twice_is_checked_once_and_still_a_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = with_session(with_session(state(), "bob"), "dave", "10.1.0.8")
    data = beacon_of("carol")
    first = PeerExchange(b"", (PexRecord("10.1.0.9", 5000, data),))
    second = PeerExchange(b"", (PexRecord("192.168.7.9", 5000, data),))
    s.receive(fp("bob"), LAN, first, NOW)
    calls: list[bytes] = []
    real = verify_signature

    def counting(der: bytes, sig: bytes, msg: bytes) -> bool:
        calls.append(sig)
        return real(der, sig, msg)

    monkeypatch.setattr(pex, "verify_signature", counting)
    (hint,) = s.receive(fp("dave"), "10.1.0.8", second, NOW + 1)
    assert calls == []
    assert (hint.host, hint.via) == ("192.168.7.9", fp("dave"))


def test_a_flood_from_one_peer_is_cut_at_its_budget_before_any_work() -> None:
    s = with_session(state(records_per_minute=20), "mallory")
    junk = PexRecord("10.1.0.9", 5000, forged("carol", "mallory"))
    for _ in range(10):
        s.receive(fp("mallory"), LAN, PeerExchange(b"", (junk,) * PEX_MAX_RECORDS), NOW)
    assert s.counts[BAD_SIGNATURE] == 20
    assert s.counts[RATE_LIMITED] == 10 * PEX_MAX_RECORDS - 20
    # A minute later the budget is back, for this peer only.
    s.receive(fp("mallory"), LAN, PeerExchange(b"", (junk,)), NOW + 60)
    assert s.counts[BAD_SIGNATURE] == 21


def test_one_peers_flood_does_not_spend_anothers_budget() -> None:
    s = with_session(with_session(state(records_per_minute=20), "mallory"), "bob", "10.1.0.8")
    junk = PexRecord("10.1.0.9", 5000, b"PCHB")
    for _ in range(10):
        s.receive(fp("mallory"), LAN, PeerExchange(b"", (junk,) * PEX_MAX_RECORDS), NOW)
    hints = s.receive(fp("bob"), "10.1.0.8", PeerExchange(b"", (record("carol"),)), NOW)
    assert [h.fingerprint for h in hints] == [fp("carol")]


def test_signature_checks_from_all_peers_share_one_global_budget() -> None:
    s = state(records_per_minute=1000, verify_per_minute=60)  # burst 10, then 1/s
    senders = ["p1", "p2", "p3"]
    for who in senders:
        with_session(s, who)
    junk = PexRecord("10.1.0.9", 5000, forged("carol", "mallory"))
    for who in senders:
        s.receive(fp(who), LAN, PeerExchange(b"", (junk,) * 10), NOW)
    assert s.counts[BAD_SIGNATURE] == 10
    assert s.counts[RATE_LIMITED] == 20


def test_own_beacons_are_checked_at_most_at_their_own_rate() -> None:
    s = with_session(state(own_per_minute=6), "mallory")  # burst 3
    for seq in range(10):
        s.receive(fp("mallory"), LAN, PeerExchange(beacon_of("mallory", seq=seq), ()), NOW)
    assert s.counts[pex.ACCEPTED] == 3
    assert s.counts[RATE_LIMITED] == 7


def test_an_own_beacon_must_be_newer_than_the_last() -> None:
    s = with_session(state(), "bob")
    s.receive(fp("bob"), LAN, PeerExchange(beacon_of("bob", seq=5), ()), NOW)
    s.receive(fp("bob"), LAN, PeerExchange(beacon_of("bob", seq=5), ()), NOW + 1)
    s.receive(fp("bob"), LAN, PeerExchange(beacon_of("bob", seq=4), ()), NOW + 1)
    assert s.counts[REPLAY] == 2
    s.receive(fp("bob"), LAN, PeerExchange(beacon_of("bob", seq=6, at=NOW + 2), ()), NOW + 2)
    assert s.counts[pex.ACCEPTED] == 2


def test_tracked_state_is_bounded() -> None:
    s = state(max_keys=4, records_per_minute=10_000)
    for i in range(10):
        with_session(s, f"p{i}")
        s.receive(fp(f"p{i}"), LAN, PeerExchange(b"", (record("carol"),)), NOW)
    assert len(s._in_buckets) == 4
    assert len(s._runs) <= 4


@settings(max_examples=150, deadline=None)
@given(st.lists(records, min_size=1, max_size=PEX_MAX_RECORDS), st.binary(max_size=300))
def test_random_records_never_raise_and_never_give_a_hint(
    junk: list[PexRecord], own: bytes
) -> None:
    s = with_session(state(), "mallory")
    hints = s.receive(fp("mallory"), LAN, PeerExchange(own, tuple(junk)), NOW)
    assert hints == []


# -- sending -----------------------------------------------------------------------


EMPTY = PeerExchange(b"", ())


def pair_up(s: PeerExchangeState, who: str, host: str, now: float = NOW) -> None:
    """`who` connects and sends its own beacon, as a real session peer would."""
    s.session_up(fp(who), host, 5000)
    s.receive(fp(who), host, PeerExchange(beacon_of(who, at=now), ()), now)


def test_a_new_session_gets_our_own_beacon_and_the_peers_we_hold() -> None:
    s = state()
    pair_up(s, "bob", "10.1.0.8")
    out = dict(s.outgoing(NOW))
    assert list(out) == [fp("bob")]
    assert decode_beacon(out[fp("bob")].own_beacon)[0].fingerprint == fp("me")
    assert out[fp("bob")].records == ()  # Bob is told nothing about himself
    pair_up(s, "carol", "10.2.0.9")
    first = dict(s.outgoing(NOW + 1))
    assert first[fp("carol")].own_beacon
    later = dict(s.outgoing(NOW + 1 + RELAY_HOLD))  # past the hold of a new session
    sent = {
        to: first.get(to, EMPTY).records + later.get(to, EMPTY).records
        for to in (fp("bob"), fp("carol"))
    }
    assert [(r.host, decode_beacon(r.beacon)[0].fingerprint) for r in sent[fp("bob")]] == [
        ("10.2.0.9", fp("carol"))
    ]
    assert [(r.host, decode_beacon(r.beacon)[0].fingerprint) for r in sent[fp("carol")]] == [
        ("10.1.0.8", fp("bob"))
    ]
    # Said once: nothing more until our own beacon is due again.
    assert s.outgoing(NOW + 5) == []


def test_what_we_send_is_what_the_other_side_accepts() -> None:
    me, bob = state("me"), state("bob")
    pair_up(me, "carol", "10.2.0.9")
    me.session_up(fp("bob"), "10.1.0.8", 5000)
    bob.session_up(fp("me"), "10.1.0.1", 5000)
    hints = []
    sends = me.outgoing(NOW) + me.outgoing(NOW + RELAY_HOLD)
    for target, message in sends:
        if target != fp("bob"):
            continue  # Carol gets our own beacon
        hints += bob.receive(fp("me"), "10.1.0.1", decode_message(encode_message(message)), NOW)  # type: ignore[arg-type]
    assert [(h.fingerprint, h.host, h.via) for h in hints] == [(fp("carol"), "10.2.0.9", fp("me"))]
    assert bob.relayable() == [fp("me")]
    assert bob.hostile == 0


def test_own_beacon_is_resent_each_interval_and_stays_fresh() -> None:
    signed: list[float] = []
    own = OwnBeacon(identity("me"), "Me", 5000, RUN_1)

    def sign(now: float) -> bytes:
        signed.append(now)
        return own.sign(now)

    s = PeerExchangeState(fp("me"), sign, self_interval=30)
    s.session_up(fp("bob"), "10.1.0.8", 5000)
    s.outgoing(NOW)
    s.session_up(fp("carol"), "10.1.0.9", 5000)
    s.outgoing(NOW + 10)  # Carol gets the beacon signed at NOW: 10 s old, fine
    s.session_up(fp("dave"), "10.1.0.10", 5000)
    s.outgoing(NOW + 20)  # too old to hand out (over half the skew): signed again
    assert signed == [NOW, NOW + 20]
    sends = dict(s.outgoing(NOW + 30))  # Bob's turn again: the one signed at NOW + 20 will do
    assert list(sends) == [fp("bob")]
    assert decode_beacon(sends[fp("bob")].own_beacon)[0].seq == 1
    assert signed == [NOW, NOW + 20]


def test_records_learned_from_others_are_never_passed_on() -> None:
    s = state()
    pair_up(s, "bob", "10.1.0.8")
    s.receive(fp("bob"), "10.1.0.8", PeerExchange(b"", (record("carol"),)), NOW)
    pair_up(s, "dave", "10.1.0.9")
    for _, message in s.outgoing(NOW + 1):
        fps = {decode_beacon(r.beacon)[0].fingerprint for r in message.records}
        assert fp("carol") not in fps


def test_loopback_addresses_are_not_passed_to_a_peer_off_loopback() -> None:
    s = state()
    pair_up(s, "bob", "127.0.0.1")
    pair_up(s, "dave", "10.1.0.9")
    sends = s.outgoing(NOW) + s.outgoing(NOW + RELAY_HOLD)
    assert [r.host for to, m in sends if to == fp("dave") for r in m.records] == []
    assert [r.host for to, m in sends if to == fp("bob") for r in m.records] == ["10.1.0.9"]


def test_of_two_new_session_peers_the_one_with_the_larger_fingerprint_waits() -> None:
    low, high = sorted(["me", "bob"], key=fp)
    s_low, s_high = state(low), state(high)
    for s, other in ((s_low, high), (s_high, low)):
        pair_up(s, "carol", "10.2.0.9")
        s.session_up(fp(other), "10.1.0.8", 5000)
    assert [r for _, m in s_low.outgoing(NOW) for r in m.records]
    assert not [r for _, m in s_high.outgoing(NOW) for r in m.records]
    assert [r for _, m in s_high.outgoing(NOW + RELAY_HOLD) for r in m.records]


def test_peers_a_session_peer_told_us_about_are_not_told_back() -> None:
    s = state()
    pair_up(s, "bob", "10.1.0.8")
    pair_up(s, "carol", "10.2.0.9")
    s.receive(fp("bob"), "10.1.0.8", PeerExchange(b"", (record("carol"),)), NOW)  # Bob has Carol
    sends = s.outgoing(NOW) + s.outgoing(NOW + RELAY_HOLD)
    assert [r for to, m in sends if to == fp("bob") for r in m.records] == []
    assert [r for to, m in sends if to == fp("carol") for r in m.records]


def test_records_sent_to_one_peer_stay_within_its_budget() -> None:
    s = state(records_per_minute=20)
    s.session_up(fp("bob"), "10.1.0.8", 5000)
    for i in range(30):
        pair_up(s, f"p{i}", f"10.1.1.{i + 1}")
    sent = 0
    for t in range(0, 61, 5):
        for target, message in s.outgoing(NOW + t):
            if target == fp("bob"):
                sent += len(message.records)
    assert sent <= 20 * 0.75 * 2  # burst plus one minute at the rate, below the receiver's 20
    assert sent >= 15


def test_a_peer_that_went_away_is_no_longer_passed_on() -> None:
    s = state()
    pair_up(s, "bob", "10.1.0.8")
    pair_up(s, "carol", "10.1.0.9")
    s.session_down(fp("carol"))
    out = dict(s.outgoing(NOW))
    assert out[fp("bob")].records == ()
    assert s.relayable() == [fp("bob")]


def test_a_relayed_beacon_too_old_to_be_believed_is_held_back() -> None:
    s = state()
    pair_up(s, "bob", "10.1.0.8", now=NOW)
    s.session_up(fp("carol"), "10.1.0.9", 5000)
    out = dict(s.outgoing(NOW + 80))  # Bob's beacon is 80 s old: it would arrive stale
    assert out[fp("carol")].records == ()
