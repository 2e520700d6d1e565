from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import struct
import time
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

import ifaddr
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto_utils import Identity, fingerprint_of, verify_signature
from discovery import ANNOUNCE_MIN_GAP, DiscoveryService, broadcast_targets
from peerchat.errors import BindError, ProtocolError, UsageError
from peerchat.limits import (
    BEACON_MAX_SIZE,
    BEACON_MAX_SKEW,
    BEACON_VERIFY_BURST,
    BEACON_VERIFY_GLOBAL_RATE,
    BEACON_VERIFY_KNOWN_RATE,
    BEACON_VERIFY_RATE,
    MAX_IDENTITY_KEY_BYTES,
    MAX_NAME_CHARS,
    MAX_SIGNATURE_BYTES,
)
from peerchat.protocol import beacon as beacon_module
from peerchat.protocol.beacon import (
    BAD_KEY,
    BAD_SIGNATURE,
    HEADER_SIZE,
    MAGIC,
    MALFORMED,
    MAX_TRACKED_PEERS,
    MAX_TRACKED_SOURCES,
    RATE_LIMITED,
    REPLAY,
    SELF,
    SIGNING_CONTEXT,
    STALE,
    TOO_LARGE,
    TOO_SHORT,
    Beacon,
    BeaconAccepted,
    BeaconFilter,
    BeaconRejected,
    decode_beacon,
    encode_beacon,
)
from tests.support import LOOPBACK_BROADCAST, free_udp_port, loopback_discovery

NOW = 1_700_000_000.0
INSTANCE_1 = bytes(range(16))
INSTANCE_2 = bytes(range(16, 32))


# 2048-bit keys keep the suite fast; 3072 (what peer_chat creates) is checked for size.
@cache
def identity(name: str, bits: int = 2048) -> Identity:
    return Identity.generate(bits)


def alice() -> Identity:
    return identity("alice")


def bob() -> Identity:
    return identity("bob")


def mallory() -> Identity:
    return identity("mallory")


def me() -> Identity:
    return identity("me")


def beacon_from(
    who: Identity,
    *,
    seq: int = 0,
    instance: bytes = INSTANCE_1,
    at: float = NOW,
    name: str = "Alice",
    port: int = 5000,
) -> bytes:
    return encode_beacon(who, name, port, instance, seq, at)


def pack(
    *,
    name: bytes,
    der: bytes,
    signature: bytes,
    port: int = 5000,
    ts: float = NOW,
    instance: bytes = INSTANCE_1,
    seq: int = 0,
    version: int = 1,
    magic: bytes = MAGIC,
) -> bytes:
    """The wire format as documented in discovery's docstring, written independently."""
    header = (
        magic
        + struct.pack(">BBHHH", version, len(name), len(der), len(signature), port)
        + struct.pack(">d", ts)
        + instance
        + struct.pack(">Q", seq)
    )
    return header + name + der + signature


def forge(
    claimed: Identity,
    signer: Identity,
    *,
    seq: int = 0,
    instance: bytes = INSTANCE_1,
    port: int = 5000,
    ts: float = NOW,
) -> bytes:
    """A well-formed beacon claiming `claimed`'s key but signed by `signer`."""
    fields = pack(
        name=b"Alice",
        der=claimed.public_der,
        signature=b"\x00" * 256,
        port=port,
        ts=ts,
        instance=instance,
        seq=seq,
    )
    body = fields[:-256]
    return body + signer.sign(SIGNING_CONTEXT + body)


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts RSA signature verifications done by the filter (a spy, not a timer)."""
    calls: list[int] = []

    def spy(public_der: bytes, signature: bytes, data: bytes) -> bool:
        calls.append(1)
        return verify_signature(public_der, signature, data)

    monkeypatch.setattr(beacon_module, "verify_signature", spy)
    return calls


def new_filter() -> BeaconFilter:
    """A filter with the real limits, as the service builds it."""
    return BeaconFilter(me().fingerprint)


def reason(result: BeaconAccepted | BeaconRejected) -> str:
    return result.reason if isinstance(result, BeaconRejected) else "accepted"


# --------------------------------------------------------------------------- encode / decode


def test_beacon_roundtrip_and_signature() -> None:
    data = encode_beacon(alice(), "Alice", 5001, INSTANCE_1, 7, NOW)
    beacon, signed, signature = decode_beacon(data)
    assert beacon == Beacon("Alice", 5001, alice().public_der, NOW, INSTANCE_1, 7)
    assert beacon.fingerprint == alice().fingerprint == fingerprint_of(alice().public_der)
    assert verify_signature(alice().public_der, signature, signed)
    assert not verify_signature(bob().public_der, signature, signed)


def test_wire_format_matches_the_documented_layout() -> None:
    data = encode_beacon(alice(), "Bob-2", 6000, INSTANCE_2, 3, NOW + 0.25)
    signature = data[-256:]
    expected = pack(
        name=b"Bob-2",
        der=alice().public_der,
        signature=signature,
        port=6000,
        ts=NOW + 0.25,
        instance=INSTANCE_2,
        seq=3,
    )
    assert data == expected
    assert data[:4] == b"PCHB" and data[4] == 1 and HEADER_SIZE == 44
    # Every byte but the signature is signed, behind the context.
    _, signed, sig = decode_beacon(data)
    assert signed == SIGNING_CONTEXT + data[:-256] and sig == signature


def test_beacon_of_a_3072_bit_key_with_the_longest_name_fits() -> None:
    longest = "\U00010400" * MAX_NAME_CHARS  # 4 UTF-8 bytes each (Deseret letters)
    data = encode_beacon(identity("big", 3072), longest, 65535, INSTANCE_1, 2**64 - 1, NOW)
    assert len(data) <= BEACON_MAX_SIZE
    assert decode_beacon(data)[0].name == longest


@settings(max_examples=60, deadline=None)
@given(
    name=st.text(st.characters(categories=["L", "Nd"]), min_size=1, max_size=MAX_NAME_CHARS).filter(
        lambda n: n == n.strip()
    ),
    port=st.integers(1, 65535),
    seq=st.integers(0, 2**64 - 1),
    ts=st.floats(0, 4e9),
    instance=st.binary(min_size=16, max_size=16),
)
def test_roundtrip_any_valid_fields(
    name: str, port: int, seq: int, ts: float, instance: bytes
) -> None:
    beacon, _, _ = decode_beacon(encode_beacon(alice(), name, port, instance, seq, ts))
    assert (beacon.name, beacon.tcp_port, beacon.seq, beacon.timestamp, beacon.instance) == (
        name,
        port,
        seq,
        ts,
        instance,
    )


def test_every_truncation_and_any_extension_is_malformed() -> None:
    data = beacon_from(alice())
    for cut in range(len(data)):
        with pytest.raises(ProtocolError):
            decode_beacon(data[:cut])
    with pytest.raises(ProtocolError):
        decode_beacon(data + b"\x00")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"magic": b"PCHX"}, "^not a peer_chat beacon$"),
        ({"version": 2}, "^unsupported beacon version 2$"),
        ({"port": 0}, "^bad TCP port$"),
        ({"ts": math.nan}, "^bad timestamp$"),
        ({"ts": math.inf}, "^bad timestamp$"),
        ({"ts": -1.0}, "^bad timestamp$"),
        ({"name": b""}, "^bad field length$"),
        ({"name": b"\xff\xfe"}, "^name is not UTF-8$"),
        ({"name": b"evil\x1b[2J"}, "name may contain only"),
        ({"name": b" Alice"}, "^name must not start or end with a space$"),
        ({"name": b"x" * (MAX_NAME_CHARS + 1)}, "at most"),
        ({"der": b""}, "^bad field length$"),
        ({"signature": b""}, "^bad field length$"),
    ],
)
def test_malformed_fields_are_rejected(fields: dict[str, object], message: str) -> None:
    base: dict[str, Any] = {"name": b"Alice", "der": alice().public_der, "signature": b"s" * 256}
    base.update(fields)
    with pytest.raises(ProtocolError, match=message):
        decode_beacon(pack(**base))


def test_oversized_datagram_is_malformed() -> None:
    with pytest.raises(ProtocolError, match=r"^beacon of 2052 bytes exceeds 2048$"):
        decode_beacon(b"PCHB" + b"\x00" * BEACON_MAX_SIZE)


def test_a_datagram_shorter_than_the_header_is_truncated() -> None:
    with pytest.raises(ProtocolError, match=r"^beacon truncated$"):
        decode_beacon(b"PCHB" + bytes(HEADER_SIZE - 5))


def test_the_size_limits_are_inclusive() -> None:
    """The largest key and signature decode, one byte more is refused, a bare header is
    judged on its fields, and a one-byte key is the decoder's to accept (the signature
    refuses it)."""
    name = b"Alice"
    largest = pack(
        name=name, der=b"k" * MAX_IDENTITY_KEY_BYTES, signature=b"s" * MAX_SIGNATURE_BYTES
    )
    assert len(largest) <= BEACON_MAX_SIZE
    beacon, _, signature = decode_beacon(largest)
    assert (beacon.name, len(signature)) == ("Alice", MAX_SIGNATURE_BYTES)
    with pytest.raises(ProtocolError, match=r"^identity key of 601 bytes is over 600$"):
        decode_beacon(pack(name=name, der=b"k" * (MAX_IDENTITY_KEY_BYTES + 1), signature=b"s"))
    with pytest.raises(ProtocolError, match=r"^signature of 513 bytes is over 512$"):
        decode_beacon(pack(name=name, der=b"k", signature=b"s" * (MAX_SIGNATURE_BYTES + 1)))
    with pytest.raises(ProtocolError, match=r"^bad field length$"):
        decode_beacon(pack(name=b"", der=b"", signature=b""))  # exactly the header
    assert decode_beacon(pack(name=name, der=b"k", signature=b"s"))[0].identity_der == b"k"
    with pytest.raises(ProtocolError, match=r"^beacon length does not match its fields$"):
        decode_beacon(pack(name=name, der=b"k", signature=b"s") + b"\x00")
    f = BeaconFilter(me().fingerprint)
    header_only = pack(name=b"", der=b"", signature=b"")
    assert reason(f.check(header_only, "10.0.0.9", NOW)) == f"{MALFORMED}: bad field length"


def _with_der(der: bytes) -> Identity:
    """A real key (it signs) presenting a public key of another size (to test the limits)."""
    return Identity(me().private_key, der, fingerprint_of(der))


def test_a_key_too_large_for_a_beacon_is_refused_before_anything_is_signed() -> None:
    # 44 header + 5 name + der >= 2048: no room left for any signature.
    with pytest.raises(ValueError, match=r"^identity key too large for a beacon$"):
        encode_beacon(_with_der(b"k" * 1999), "Alice", 5000, INSTANCE_1, 0, NOW)
    # One byte less passes that check; with its 256-byte signature it is too long.
    with pytest.raises(ValueError, match=r"^beacon of 2303 bytes exceeds 2048$"):
        encode_beacon(_with_der(b"k" * 1998), "Alice", 5000, INSTANCE_1, 0, NOW)


def test_a_beacon_may_be_exactly_the_largest_size() -> None:
    der = b"k" * (BEACON_MAX_SIZE - HEADER_SIZE - 5 - 256)
    data = encode_beacon(_with_der(der), "Alice", 5000, INSTANCE_1, 0, NOW)
    assert len(data) == BEACON_MAX_SIZE


BAD_TIME = "^timestamp must be a unix time from 1970 to 3000$"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", 5000, INSTANCE_1, 0, NOW), "empty"),
        (("bad\nname", 5000, INSTANCE_1, 0, NOW), "only letters"),
        (("Alice", 0, INSTANCE_1, 0, NOW), "port"),
        (("Alice", 65536, INSTANCE_1, 0, NOW), "port"),
        (("Alice", 5000, b"short", 0, NOW), "instance"),
        (("Alice", 5000, INSTANCE_1, -1, NOW), "^sequence number out of range$"),
        (("Alice", 5000, INSTANCE_1, 2**64, NOW), "^sequence number out of range$"),
        (
            ("Alice", 5000, INSTANCE_1, 0, math.nan),
            BAD_TIME,
        ),
        (
            ("Alice", 5000, INSTANCE_1, 0, math.inf),
            BAD_TIME,
        ),
        (("Alice", 5000, INSTANCE_1, 0, -1.0), BAD_TIME),
    ],
)
def test_encode_refuses_what_no_receiver_would_accept(
    args: tuple[str, int, bytes, int, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        encode_beacon(alice(), *args)


# --------------------------------------------------------------------------- filter


def test_valid_beacon_is_accepted_as_a_new_instance(verifications: list[int]) -> None:
    result = new_filter().check(beacon_from(alice(), port=5001), "10.0.0.7", NOW)
    assert isinstance(result, BeaconAccepted)
    assert result.source_ip == "10.0.0.7" and result.new_instance
    assert result.beacon.fingerprint == alice().fingerprint and result.beacon.tcp_port == 5001
    assert len(verifications) == 1


def test_forged_beacons_are_rejected_and_leave_no_trace() -> None:
    f = new_filter()
    genuine = bytearray(beacon_from(alice(), seq=5))
    tampered_port = bytearray(genuine)
    struct.pack_into(">H", tampered_port, 10, 6666)
    tampered_name = bytearray(genuine)
    tampered_name[HEADER_SIZE] = ord("E")
    forgeries = [
        bytes(tampered_port),
        bytes(tampered_name),
        genuine[:-1] + bytes([genuine[-1] ^ 1]),  # a flipped signature bit
        forge(alice(), mallory(), seq=10**9, port=6666),  # Alice's key, Mallory's signature
        forge(alice(), mallory(), seq=10**9, instance=INSTANCE_2, ts=NOW + 10),
    ]
    for data in forgeries:
        result = f.check(bytes(data), "10.0.0.66", NOW)
        assert result == BeaconRejected(BAD_SIGNATURE, "10.0.0.66")
    # The forged high sequence numbers and newer instance were not remembered.
    accepted = f.check(bytes(genuine), "10.0.0.7", NOW)
    assert isinstance(accepted, BeaconAccepted) and accepted.new_instance
    assert accepted.beacon.tcp_port == 5000


def test_weak_key_is_rejected_even_when_correctly_signed() -> None:
    weak = identity("weak", 1024)
    assert reason(new_filter().check(beacon_from(weak), "10.0.0.7", NOW)).startswith(BAD_KEY)


@pytest.mark.parametrize("skew", [-BEACON_MAX_SKEW - 1, BEACON_MAX_SKEW + 1, -3600.0, 1e9])
def test_stale_or_future_beacon_is_rejected_before_verification(
    skew: float, verifications: list[int]
) -> None:
    result = new_filter().check(beacon_from(alice(), at=NOW + skew), "10.0.0.7", NOW)
    assert result == BeaconRejected(STALE, "10.0.0.7")
    assert verifications == []


@pytest.mark.parametrize("skew", [-BEACON_MAX_SKEW, BEACON_MAX_SKEW])
def test_skew_at_the_limit_is_accepted(skew: float) -> None:
    result = new_filter().check(beacon_from(alice(), at=NOW + skew), "10.0.0.7", NOW)
    assert isinstance(result, BeaconAccepted)


def test_same_beacon_twice_is_a_replay() -> None:
    f = new_filter()
    data = beacon_from(alice(), seq=3)
    assert isinstance(f.check(data, "10.0.0.7", NOW), BeaconAccepted)
    assert f.check(data, "10.0.0.7", NOW + 1) == BeaconRejected(REPLAY, "10.0.0.7")
    # From another address it is still a replay: the address is not part of identity.
    assert f.check(data, "10.0.0.99", NOW + 1) == BeaconRejected(REPLAY, "10.0.0.99")


def test_sequence_must_grow_within_an_instance() -> None:
    f = new_filter()
    assert isinstance(f.check(beacon_from(alice(), seq=5), "10.0.0.7", NOW), BeaconAccepted)
    assert reason(f.check(beacon_from(alice(), seq=4, at=NOW + 1), "10.0.0.7", NOW + 1)) == REPLAY
    later = f.check(beacon_from(alice(), seq=6, at=NOW + 5), "10.0.0.7", NOW + 5)
    assert isinstance(later, BeaconAccepted) and not later.new_instance


def test_old_instance_after_a_new_one_is_a_replay() -> None:
    f = new_filter()
    old_run = [beacon_from(alice(), seq=s, at=NOW + s) for s in range(3)]
    assert isinstance(f.check(old_run[0], "10.0.0.7", NOW), BeaconAccepted)
    restart = beacon_from(alice(), instance=INSTANCE_2, at=NOW + 10)
    result = f.check(restart, "10.0.0.7", NOW + 10)
    assert isinstance(result, BeaconAccepted) and result.new_instance
    # Beacons of the old run, even ones never seen before, no longer count.
    for data in old_run[1:]:
        assert reason(f.check(data, "10.0.0.7", NOW + 11)) == REPLAY
    # A restart must be newer than the last accepted beacon.
    same_time = beacon_from(alice(), instance=bytes(16), at=NOW + 10)
    assert reason(f.check(same_time, "10.0.0.7", NOW + 11)) == REPLAY


def test_own_beacon_is_rejected_without_verification(verifications: list[int]) -> None:
    result = new_filter().check(beacon_from(me(), name="Me"), "192.0.2.1", NOW)
    assert result == BeaconRejected(SELF, "192.0.2.1")
    assert verifications == []


def test_size_limits_come_before_the_rate_limit(verifications: list[int]) -> None:
    f = new_filter()
    for _ in range(1000):
        assert reason(f.check(b"x" * (BEACON_MAX_SIZE + 1), "10.0.0.66", NOW)) == TOO_LARGE
        assert reason(f.check(b"PCHB", "10.0.0.66", NOW)) == TOO_SHORT
    assert verifications == []
    # Junk that was refused on size did not use up the sender's budget.
    assert isinstance(f.check(beacon_from(alice()), "10.0.0.66", NOW), BeaconAccepted)


@pytest.mark.parametrize(
    ("datagram", "expected"),
    [
        (b"x" * (BEACON_MAX_SIZE + 1), TOO_LARGE),
        (b"PCHB", TOO_SHORT),
        (b"PCHB" + bytes(HEADER_SIZE), MALFORMED),
    ],
)
def test_a_rejection_names_the_address_it_came_from(datagram: bytes, expected: str) -> None:
    result = new_filter().check(datagram, "198.51.100.7", NOW)
    assert isinstance(result, BeaconRejected)
    assert result.reason.startswith(expected)
    assert result.source_ip == "198.51.100.7"


def test_replays_and_rate_limits_name_the_address_too() -> None:
    f = BeaconFilter(me().fingerprint, rate=0.0, burst=1.0)
    assert isinstance(f.check(beacon_from(alice()), "198.51.100.7", NOW), BeaconAccepted)
    assert f.check(beacon_from(alice()), "198.51.100.7", NOW) == BeaconRejected(
        REPLAY, "198.51.100.7"
    )
    older_run = beacon_from(alice(), instance=INSTANCE_2, at=NOW - 1)
    assert f.check(older_run, "198.51.100.9", NOW) == BeaconRejected(REPLAY, "198.51.100.9")
    assert f.check(forge(bob(), mallory()), "198.51.100.8", NOW) == BeaconRejected(
        BAD_SIGNATURE, "198.51.100.8"
    )
    assert f.check(forge(bob(), mallory(), seq=1), "198.51.100.8", NOW) == BeaconRejected(
        RATE_LIMITED, "198.51.100.8"
    )


def test_the_global_burst_is_its_own_setting(verifications: list[int]) -> None:
    f = BeaconFilter(me().fingerprint, rate=1e9, burst=1e9, global_rate=100.0, global_burst=2)
    results = [f.check(forge(bob(), mallory(), seq=n), f"10.0.1.{n}", NOW) for n in range(4)]
    assert [reason(r) for r in results] == [BAD_SIGNATURE] * 2 + [RATE_LIMITED] * 2
    assert len(verifications) == 2


def test_a_source_pushed_out_of_the_table_is_the_oldest(verifications: list[int]) -> None:
    f = BeaconFilter(me().fingerprint, rate=0.0, burst=1.0, global_rate=1e9, max_sources=2)
    for n, source in enumerate(["10.0.2.1", "10.0.2.2", "10.0.2.3"]):
        assert reason(f.check(forge(bob(), mallory(), seq=n), source, NOW)) == BAD_SIGNATURE
    # 10.0.2.3 is remembered with its budget spent; 10.0.2.1 was forgotten.
    assert reason(f.check(forge(bob(), mallory(), seq=9), "10.0.2.3", NOW)) == RATE_LIMITED
    assert f.tracked_sources == 2


def test_flood_from_one_source_gets_few_verifications(verifications: list[int]) -> None:
    f = new_filter()
    forged = forge(alice(), mallory())
    results = [f.check(forged, "10.0.0.66", NOW) for _ in range(1000)]
    assert len(verifications) == BEACON_VERIFY_BURST
    assert sum(reason(r) == RATE_LIMITED for r in results) == 1000 - BEACON_VERIFY_BURST
    # One second later the source has earned BEACON_VERIFY_RATE more checks, no more.
    for _ in range(1000):
        f.check(forged, "10.0.0.66", NOW + 1)
    assert len(verifications) == BEACON_VERIFY_BURST + BEACON_VERIFY_RATE
    # Other sources are not affected.
    assert isinstance(f.check(beacon_from(alice()), "10.0.0.7", NOW + 1), BeaconAccepted)


def test_budget_survives_a_wall_clock_step_back(verifications: list[int]) -> None:
    f = new_filter()
    back = NOW - 3600  # the clock is set back an hour: no refill, and no freeze either
    for now, expected in [
        (NOW, BEACON_VERIFY_BURST),
        (back, BEACON_VERIFY_BURST),
        (back + 1, BEACON_VERIFY_BURST + BEACON_VERIFY_RATE),
    ]:
        forged = forge(alice(), mallory(), ts=now)
        for _ in range(100):
            f.check(forged, "10.0.0.66", now)
        assert len(verifications) == expected


def test_junk_and_duplicates_cost_no_budget(verifications: list[int]) -> None:
    f = new_filter()
    genuine = beacon_from(alice())
    assert isinstance(f.check(genuine, "10.0.0.7", NOW), BeaconAccepted)
    for _ in range(1000):
        assert reason(f.check(b"PCHB" + b"\xff" * 100, "10.0.0.7", NOW)).startswith(MALFORMED)
        assert reason(f.check(genuine, "10.0.0.7", NOW)) == REPLAY
        assert reason(f.check(beacon_from(me(), name="Me"), "10.0.0.7", NOW)) == SELF
    assert len(verifications) == 1
    assert isinstance(f.check(beacon_from(alice(), seq=1), "10.0.0.7", NOW), BeaconAccepted)


def test_known_peer_keeps_its_budget_during_a_flood(verifications: list[int]) -> None:
    f = new_filter()
    assert isinstance(f.check(beacon_from(alice(), seq=0), "10.0.0.7", NOW), BeaconAccepted)
    # Forgeries of new keys from Alice's address, and of Alice's key from elsewhere,
    # use up those addresses' budgets, not Alice's.
    for i in range(500):
        f.check(forge(bob(), mallory(), seq=i), "10.0.0.7", NOW)
        f.check(forge(alice(), mallory(), seq=10 + i), "10.0.0.66", NOW)
    # Alice's first beacon was charged to her address (her key was new then).
    assert len(verifications) == 2 * BEACON_VERIFY_BURST
    for seq in range(1, 6):
        result = f.check(beacon_from(alice(), seq=seq), "10.0.0.7", NOW)
        assert isinstance(result, BeaconAccepted) and not result.new_instance


def test_forgeries_from_a_known_peers_own_address_are_still_limited(
    verifications: list[int],
) -> None:
    f = new_filter()
    f.check(beacon_from(alice()), "10.0.0.7", NOW)
    for i in range(1000):
        f.check(forge(alice(), mallory(), seq=1 + i), "10.0.0.7", NOW)
    # Bounded by the pool reserved for known keys; Alice's own budget is untouched
    # (failed checks are charged to the source), so her next beacon gets through.
    assert len(verifications) == 1 + BEACON_VERIFY_KNOWN_RATE
    assert isinstance(f.check(beacon_from(alice(), seq=2000), "10.0.0.7", NOW + 1), BeaconAccepted)


def test_a_friend_stays_accepted_under_a_flood_of_junk_carrying_its_key() -> None:
    """Junk beacons with the friend's key, from its own address at ten times one
    address's budget and from many addresses at three times the global budget:
    every real beacon of the friend, twice a second for 20 s, is still accepted."""
    f = new_filter()
    friend = "10.0.0.7"
    assert isinstance(f.check(beacon_from(alice(), seq=0), friend, NOW), BeaconAccepted)
    junk = forge(alice(), mallory(), seq=10**9, ts=NOW + 10)  # junk fails: never a replay
    step = 1 / (10 * BEACON_VERIFY_RATE)
    many = round(3 * BEACON_VERIFY_GLOBAL_RATE * step)
    real_every = round(0.5 / step)
    refused = []
    for tick in range(1, round(20 / step)):
        now = NOW + tick * step
        assert reason(f.check(junk, friend, now)) in {BAD_SIGNATURE, RATE_LIMITED}
        for i in range(many):
            f.check(junk, f"10.1.{tick % 200}.{i}", now)
        if tick % real_every == 0:
            result = f.check(beacon_from(alice(), seq=tick, at=now), friend, now)
            if not isinstance(result, BeaconAccepted):
                refused.append((round(now - NOW, 2), reason(result)))
    assert refused == []


def test_several_peers_behind_one_address_do_not_throttle_each_other() -> None:
    # Eight peers on one host, each beaconing 4 times a second for 5 s: 32 beacons a
    # second from one address, far above one address's budget, and all accepted.
    f = new_filter()
    crowd = [identity(f"crowd{i}") for i in range(8)]
    accepted = 0
    for tick in range(20):
        for who in crowd:
            data = beacon_from(who, seq=tick, at=NOW + tick * 0.25, name="Peer")
            accepted += isinstance(f.check(data, "10.0.0.7", NOW + tick * 0.25), BeaconAccepted)
    assert accepted == 20 * len(crowd)


def test_flood_from_many_sources_is_capped_globally(verifications: list[int]) -> None:
    f = new_filter()
    forged = forge(alice(), mallory())
    for i in range(5000):
        f.check(forged, f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", NOW)
    assert len(verifications) == BEACON_VERIFY_GLOBAL_RATE
    assert f.tracked_sources == MAX_TRACKED_SOURCES


def test_fingerprint_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # Thousands of distinct keys: fake keys and a verifier that says yes, so that
    # only the bookkeeping is exercised.
    monkeypatch.setattr(beacon_module, "verify_signature", lambda *_: True)
    monkeypatch.setattr(beacon_module, "load_public_key", lambda _: None)
    f = BeaconFilter(me().fingerprint, rate=1e9, burst=1e9, global_rate=1e9)
    for i in range(MAX_TRACKED_PEERS * 2):
        data = pack(name=b"P", der=b"key-%d" % i, signature=b"s")
        assert isinstance(f.check(data, "10.0.0.7", NOW), BeaconAccepted)
    assert f.tracked_peers == MAX_TRACKED_PEERS
    # The most recent keys are still remembered.
    last = pack(name=b"P", der=b"key-%d" % (MAX_TRACKED_PEERS * 2 - 1), signature=b"s")
    assert reason(f.check(last, "10.0.0.7", NOW)) == REPLAY


# --------------------------------------------------------------------------- targets


def fake_adapters() -> list[ifaddr.Adapter]:
    return [
        ifaddr.Adapter(
            "lo", "lo", [ifaddr.IP("127.0.0.1", 8, "lo"), ifaddr.IP(("::1", 0, 0), 128, "lo")]
        ),
        ifaddr.Adapter(
            "eth0",
            "eth0",
            [ifaddr.IP("192.168.1.23", 24, "eth0"), ifaddr.IP(("fe80::1", 0, 2), 64, "eth0")],
        ),
        ifaddr.Adapter("eth0:1", "eth0:1", [ifaddr.IP("192.168.1.24", 24, "eth0:1")]),
        ifaddr.Adapter("wlan0", "wlan0", [ifaddr.IP("10.20.30.40", 20, "wlan0")]),
        ifaddr.Adapter("tun0", "tun0", [ifaddr.IP("10.8.0.2", 32, "tun0")]),
        ifaddr.Adapter("ptp0", "ptp0", [ifaddr.IP("172.16.0.0", 31, "ptp0")]),
    ]


def test_default_targets_add_each_interface_broadcast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ifaddr, "get_adapters", fake_adapters)
    assert broadcast_targets("255.255.255.255") == [
        "255.255.255.255",
        "192.168.1.255",
        "10.20.31.255",
    ]


def test_explicit_target_is_used_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ifaddr, "get_adapters", fake_adapters)
    assert broadcast_targets("127.255.255.255") == ["127.255.255.255"]
    assert broadcast_targets("192.168.1.255") == ["192.168.1.255"]


def test_interface_listing_failure_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> list[ifaddr.Adapter]:
        raise OSError("no netlink")

    monkeypatch.setattr(ifaddr, "get_adapters", broken)
    assert broadcast_targets("255.255.255.255") == ["255.255.255.255"]


@pytest.mark.parametrize("bad", ["", "localhost", "::1", "256.1.1.1", "10.0.0.0/8"])
def test_invalid_target_is_a_usage_error(bad: str) -> None:
    with pytest.raises(UsageError, match="Invalid broadcast address"):
        broadcast_targets(bad)


# --------------------------------------------------------------------------- loopback


class Peers:
    """Discovery services on one loopback port, recording what each one accepts."""

    def __init__(self, port: int, *, interval: float = 60.0, reply: bool = True) -> None:
        self.port = port
        self.interval = interval
        self.reply = reply
        self.services: dict[str, DiscoveryService] = {}
        self.heard: dict[str, list[BeaconAccepted]] = {}
        self.changed = asyncio.Event()

    async def add(self, who: Identity, name: str, tcp_port: int) -> DiscoveryService:
        fp = who.fingerprint
        self.heard[fp] = []

        def on_beacon(accepted: BeaconAccepted) -> None:
            self.heard[fp].append(accepted)
            self.changed.set()
            if self.reply and accepted.new_instance:
                self.services[fp].announce_soon()  # as the node does for a newcomer

        service = loopback_discovery(
            who,
            name,
            tcp_port=tcp_port,
            discovery_port=self.port,
            interval=self.interval,
            on_beacon=on_beacon,
        )
        self.services[fp] = service
        await service.start()
        return service

    def known_by(self, fp: str) -> set[str]:
        return {a.beacon.fingerprint for a in self.heard[fp]}

    async def until(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        async def wait() -> None:
            while not condition():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), timeout)

    def close(self) -> None:
        for service in self.services.values():
            service.close()


@contextlib.contextmanager
def sender() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        tx.bind(("127.0.0.1", 0))
        yield tx


def test_three_peers_on_loopback_hear_each_other() -> None:
    async def scenario() -> None:
        peers = Peers(free_udp_port())  # long interval: only start beacons and replies
        everyone = [
            (alice(), "Alice", 5001),
            (bob(), "Bob", 5002),
            (identity("carol"), "Carol", 5003),
        ]
        try:
            for who, name, port in everyone:
                await peers.add(who, name, port)
            fps = {who.fingerprint for who, _, _ in everyone}
            await peers.until(lambda: all(peers.known_by(fp) == fps - {fp} for fp in fps))
        finally:
            peers.close()
        for who, _, _ in everyone:
            for accepted in peers.heard[who.fingerprint]:
                assert accepted.source_ip == "127.0.0.1"
                expected = next(
                    e for e in everyone if e[0].fingerprint == accepted.beacon.fingerprint
                )
                assert (accepted.beacon.name, accepted.beacon.tcp_port) == expected[1:]
            # Each other peer was new exactly once.
            news = [a.beacon.fingerprint for a in peers.heard[who.fingerprint] if a.new_instance]
            assert sorted(news) == sorted(fps - {who.fingerprint})

    asyncio.run(scenario())


def test_periodic_beacons_keep_coming_with_growing_sequence() -> None:
    async def scenario() -> None:
        peers = Peers(free_udp_port(), interval=0.3, reply=False)
        try:
            await peers.add(alice(), "Alice", 5001)
            await peers.add(bob(), "Bob", 5002)
            await peers.until(lambda: len(peers.heard[bob().fingerprint]) >= 3)
        finally:
            peers.close()
        heard = peers.heard[bob().fingerprint]
        seqs = [a.beacon.seq for a in heard]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert [a.new_instance for a in heard][:3] == [True, False, False]
        assert all(a.beacon.instance == peers.services[alice().fingerprint].instance for a in heard)

    asyncio.run(scenario())


def listener(port: int) -> socket.socket:
    """Another socket on the discovery port: it hears every broadcast, as a peer would."""
    tap = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tap.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tap.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    tap.bind(("", port))
    tap.setblocking(False)
    return tap


def test_extra_beacons_are_throttled() -> None:
    async def scenario() -> list[Beacon]:
        port = free_udp_port()
        loop = asyncio.get_running_loop()
        tap = listener(port)
        peers = Peers(port)
        heard: list[Beacon] = []
        try:
            service = await peers.add(alice(), "Alice", 5001)
            while len(heard) < 3:
                for _ in range(100):  # a crowd of newcomers asking for replies
                    service.announce_soon()
                data, _ = await asyncio.wait_for(loop.sock_recvfrom(tap, 4096), 5)
                heard.append(decode_beacon(data)[0])
        finally:
            tap.close()
            peers.close()
        return heard

    start, first, second = asyncio.run(scenario())
    assert [b.seq for b in (start, first, second)] == [0, 1, 2]
    assert first.timestamp - start.timestamp < 0.25  # the first reply goes at once
    assert second.timestamp - first.timestamp >= ANNOUNCE_MIN_GAP - 0.01


def test_forged_replayed_and_garbage_datagrams_change_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="discovery")

    async def scenario() -> None:
        port = free_udp_port()
        peers = Peers(port)
        loop = asyncio.get_running_loop()
        tap = listener(port)  # captures genuine beacons to replay
        try:
            a = await peers.add(alice(), "Alice", 5001)
            await peers.add(bob(), "Bob", 5002)
            a_fp, b_fp = alice().fingerprint, bob().fingerprint
            await peers.until(
                lambda: peers.known_by(a_fp) == {b_fp} and peers.known_by(b_fp) == {a_fp}
            )
            captured = b""
            while not captured:
                data, _ = await asyncio.wait_for(loop.sock_recvfrom(tap, 4096), 5)
                if decode_beacon(data)[0].fingerprint == a_fp:
                    captured = data
            before = {fp: list(events) for fp, events in peers.heard.items()}

            hostile = [
                forge(
                    alice(), mallory(), instance=a.instance, seq=10**6, port=6666, ts=time.time()
                ),
                captured,  # a genuine beacon, again
                b"",
                b"PCHB\x01",
                b"\xff" * 300,
                b"x" * 4000,
            ]
            marker = beacon_from(identity("dave"), name="Dave", port=7777, at=time.time())
            with sender() as tx:
                for data in [*hostile, marker]:
                    tx.sendto(data, (LOOPBACK_BROADCAST, port))
                # Datagrams from one socket arrive in order: once both peers have heard
                # the marker, they have judged everything sent before it.
                dave = identity("dave").fingerprint
                await peers.until(
                    lambda: dave in peers.known_by(a_fp) and dave in peers.known_by(b_fp)
                )
        finally:
            tap.close()
            peers.close()
        dave = identity("dave").fingerprint
        for fp, events in peers.heard.items():
            assert events[: len(before[fp])] == before[fp]
            extra = events[len(before[fp]) :]
            # Only Dave is new; anything else is a genuine later beacon (a reply to Dave).
            assert [e.beacon.fingerprint for e in extra if e.new_instance] == [dave]
            last_seq = max(e.beacon.seq for e in before[fp])
            assert all(e.beacon.seq > last_seq for e in extra if e.beacon.fingerprint != dave)
        assert all(e.beacon.tcp_port != 6666 for events in peers.heard.values() for e in events)

    asyncio.run(scenario())
    messages = [r.getMessage() for r in caplog.records]
    # Bob judged the forgery and the replay on their merits, not by the rate limit.
    assert sum(m.endswith(BAD_SIGNATURE) for m in messages) == 1  # Bob; Alice: self
    assert sum(m.endswith(REPLAY) for m in messages) == 1  # Bob; Alice: self
    assert all("127.0.0.1" in m for m in messages if "rejected" in m)


def test_port_in_use_is_a_clear_bind_error() -> None:
    async def scenario() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hog:
            hog.bind(("", 0))  # no SO_REUSEADDR/SO_REUSEPORT: nobody may share it
            port = hog.getsockname()[1]
            service = loopback_discovery(alice(), "Alice", tcp_port=5001, discovery_port=port)
            with pytest.raises(BindError, match=f"^Discovery port {port} is unavailable: .+"):
                await service.start()

    asyncio.run(scenario())


def test_receive_path_never_raises_and_throttles_its_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="discovery")

    def explode(_: BeaconAccepted) -> None:
        raise RuntimeError("callback bug")

    service = loopback_discovery(
        me(),
        "Me",
        tcp_port=5000,
        discovery_port=54545,
        on_beacon=explode,
        beacon_filter=BeaconFilter(me().fingerprint, rate=1e9, burst=1e9, global_rate=1e9),
    )
    for i in range(2000):
        service._datagram_received(b"PCHB" + i.to_bytes(4, "big") * 50, ("10.0.0.66", 54545))
    debug_lines = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert 1 <= len(debug_lines) <= 25
    assert all("10.0.0.66" in r.getMessage() for r in debug_lines)
    # A valid beacon whose consumer fails: logged, not raised.
    service._datagram_received(beacon_from(alice(), at=time.time()), ("10.0.0.7", 54545))
    assert any("callback failed" in r.getMessage() for r in caplog.records)
    service.close()


def test_close_before_start_and_twice_is_harmless() -> None:
    service = loopback_discovery(me(), "Me", tcp_port=5000, discovery_port=54545)
    service.announce_soon()  # not started: nothing to do
    service.close()
    service.close()
    assert service.beacons_sent == 0
