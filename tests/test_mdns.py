"""The mDNS role's decisions, without a network: scope, names, what a record is worth."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest
from zeroconf import ServiceStateChange
from zeroconf.asyncio import AsyncServiceInfo

from crypto_utils import Identity, fingerprint_of, short_id
from peerchat.limits import LIMITED_BROADCAST, MDNS_MAX_SERVICES
from peerchat.net import mdns
from peerchat.net.mdns import (
    LOOPBACK_SCOPE,
    SERVICE_TYPE,
    MdnsBeacon,
    MdnsGone,
    MdnsHint,
    MdnsRole,
    MdnsScope,
    beacon_interval_for,
    instance_name,
    parse_instance,
    scope_for,
)
from peerchat.protocol.beacon import encode_beacon
from peerchat.protocol.beacon_txt import beacon_chunks

OWN = fingerprint_of(b"own")
BOB = fingerprint_of(b"bob")


@dataclass
class FakeIP:
    ip: Any
    network_prefix: int


@dataclass
class FakeAdapter:
    ips: list[FakeIP]


ADAPTERS = [
    FakeAdapter([FakeIP("127.0.0.1", 8), FakeIP(("::1", 0, 0), 128)]),
    FakeAdapter([FakeIP("192.168.1.20", 24)]),
    FakeAdapter([FakeIP("10.8.0.2", 16), FakeIP("10.9.0.1", 31)]),
]


def test_scope_follows_the_broadcast_address() -> None:
    assert scope_for("127.255.255.255", ADAPTERS) == LOOPBACK_SCOPE
    assert scope_for(LIMITED_BROADCAST, ADAPTERS) == MdnsScope(
        ("192.168.1.20", "10.8.0.2"),
        (ipaddress.IPv4Network("192.168.1.0/24"), ipaddress.IPv4Network("10.8.0.0/16")),
    )
    assert scope_for("192.168.1.255", ADAPTERS) == MdnsScope(
        ("192.168.1.20",), (ipaddress.IPv4Network("192.168.1.0/24"),)
    )
    assert scope_for("172.16.0.255", ADAPTERS) is None
    assert scope_for(LIMITED_BROADCAST, ADAPTERS[:1]) is None


def test_instance_name_is_one_label_with_the_short_id() -> None:
    assert instance_name("Alice", BOB) == f"Alice {short_id(BOB)}"
    assert instance_name("a.b", BOB) == f"a-b {short_id(BOB)}"
    long = instance_name("é" * 32, BOB)
    assert len(long.encode()) <= 63
    assert long.endswith(f" {short_id(BOB)}")


def test_parse_instance_needs_the_matching_short_id_and_a_valid_name() -> None:
    assert parse_instance(f"Bob {short_id(BOB)}", BOB) == "Bob"
    assert parse_instance(f"Bob {short_id(OWN)}", BOB) is None
    assert parse_instance(f"\x1b[2J {short_id(BOB)}", BOB) is None
    assert parse_instance(short_id(BOB), BOB) is None


def test_datagrams_from_off_the_link_never_reach_zeroconf() -> None:
    got: list[tuple[bytes, Any]] = []

    class Inner:
        def datagram_received(self, data: bytes, addr: Any) -> None:
            got.append((data, addr))

    guard = mdns._SameLinkOnly(Inner(), (ipaddress.IPv4Network("10.8.0.0/16"),))
    guard.datagram_received(b"a", ("10.8.3.4", 5353))
    guard.datagram_received(b"b", ("10.9.0.1", 5353))
    guard.datagram_received(b"c", ("fe80::1", 5353, 0, 2))
    assert got == [(b"a", ("10.8.3.4", 5353))]
    assert guard.dropped == 2


def role(
    scope: MdnsScope = LOOPBACK_SCOPE,
) -> tuple[MdnsRole, list[MdnsHint | MdnsBeacon | MdnsGone]]:
    seen: list[MdnsHint | MdnsBeacon | MdnsGone] = []
    return MdnsRole(fingerprint=OWN, name="Me", port=5000, scope=scope, on_hint=seen.append), seen


def info(name: str, *, props: dict[str, str], port: int = 5001, addresses: list[str]) -> Any:
    return AsyncServiceInfo(
        SERVICE_TYPE, name, port=port, properties=props, parsed_addresses=addresses
    )


BOB_NAME = f"Bob {short_id(BOB)}.{SERVICE_TYPE}"


def test_a_good_record_is_a_hint_per_address_on_the_link() -> None:
    r, _ = role()
    record = info(
        BOB_NAME, props={"v": "1", "fp": BOB}, addresses=["127.0.0.5", "10.1.1.1", "127.0.0.6"]
    )
    assert r._read(BOB_NAME, record)[0] == [
        MdnsHint(BOB, "Bob", "127.0.0.5", 5001),
        MdnsHint(BOB, "Bob", "127.0.0.6", 5001),
    ]
    assert r.dropped == {"address off the link": 1}


@pytest.mark.parametrize(
    ("props", "reason"),
    [
        ({"v": "2", "fp": BOB}, "other version"),
        ({"fp": BOB}, "other version"),
        ({"v": "1", "fp": "short"}, "bad fingerprint"),
        ({"v": "1"}, "bad fingerprint"),
    ],
)
def test_records_that_say_too_little_are_dropped(props: dict[str, str], reason: str) -> None:
    r, _ = role()
    assert r._read(BOB_NAME, info(BOB_NAME, props=props, addresses=["127.0.0.5"]))[0] == []
    assert r.dropped == {reason: 1}


def test_our_own_record_is_no_hint() -> None:
    r, _ = role()
    name = f"Me {short_id(OWN)}.{SERVICE_TYPE}"
    assert r._read(name, info(name, props={"v": "1", "fp": OWN}, addresses=["127.0.0.1"]))[0] == []


def test_a_name_that_does_not_match_the_fingerprint_gives_no_name() -> None:
    r, _ = role()
    name = f"Alice {short_id(OWN)}.{SERVICE_TYPE}"  # claims another short ID
    (hint,) = r._read(name, info(name, props={"v": "1", "fp": BOB}, addresses=["127.0.0.5"]))[0]
    assert hint.name is None and hint.fingerprint == BOB


def test_tracked_services_are_bounded() -> None:
    r, _ = role()
    for i in range(MDNS_MAX_SERVICES + 10):
        r._on_change(None, SERVICE_TYPE, f"p{i}.{SERVICE_TYPE}", ServiceStateChange.Added)  # type: ignore[arg-type]
    assert len(r._queue) == MDNS_MAX_SERVICES
    assert r.dropped == {"too many services": 10}


def test_a_service_that_leaves_is_reported_gone() -> None:
    r, seen = role()
    r._known[BOB_NAME] = [MdnsHint(BOB, "Bob", "127.0.0.5", 5001)]
    r._on_change(None, SERVICE_TYPE, BOB_NAME, ServiceStateChange.Removed)  # type: ignore[arg-type]
    assert seen == [MdnsGone(BOB)]
    assert BOB_NAME not in r._known


def test_hints_are_reported_within_their_rate() -> None:
    r, seen = role()
    for _ in range(100):
        r._report(MdnsHint(BOB, "Bob", "127.0.0.5", 5001))
    assert 1 <= len(seen) <= 21  # the burst, and what refilled meanwhile
    assert r.dropped["rate limited"] == 100 - len(seen)


# -- the signed beacon in the record ---------------------------------------------------------


@cache
def key(name: str) -> Identity:
    return Identity.generate(2048)


def signed_beacon(who: str, *, seq: int = 0) -> bytes:
    return encode_beacon(key(who), who.capitalize(), 5001, bytes(16), seq, time.time())


def record_of(who: str, beacon: bytes | None, *, fp: str | None = None) -> tuple[str, Any]:
    name = f"{who.capitalize()} {short_id(fp or key(who).fingerprint)}.{SERVICE_TYPE}"
    props: dict[str, str | bytes] = {"v": "1", "fp": fp or key(who).fingerprint}
    if beacon is not None:
        props.update(beacon_chunks(beacon))
    return name, AsyncServiceInfo(
        SERVICE_TYPE, name, port=5001, properties=props, parsed_addresses=["127.0.0.5", "127.0.0.6"]
    )


def test_a_record_gives_its_beacon_with_its_hints() -> None:
    r, _ = role()
    data = signed_beacon("bob")
    hints, beacon = r._read(*record_of("bob", data))
    assert [h.host for h in hints] == ["127.0.0.5", "127.0.0.6"]
    assert beacon == data and r.dropped == {}


def test_a_record_without_a_beacon_is_a_plain_claim() -> None:
    r, _ = role()
    hints, beacon = r._read(*record_of("bob", None))
    assert len(hints) == 2 and beacon is None


def test_a_record_carrying_another_keys_beacon_is_dropped() -> None:
    r, _ = role()
    assert r._read(*record_of("bob", signed_beacon("carol"))) == ([], None)
    assert r.dropped == {"beacon of another key": 1}


def test_a_record_with_broken_beacon_chunks_is_dropped() -> None:
    r, _ = role()
    name = record_of("bob", None)[0]
    broken = AsyncServiceInfo(
        SERVICE_TYPE,
        name,
        port=5001,
        properties={"v": "1", "fp": key("bob").fingerprint, "b0": b"x" * 10, "b1": b"y"},
        parsed_addresses=["127.0.0.5"],
    )
    assert r._read(name, broken) == ([], None)
    garbage = record_of("bob", b"not a beacon at all")
    assert r._read(*garbage) == ([], None)
    assert r.dropped == {"bad beacon": 2}


def test_our_record_carries_a_fresh_beacon_that_a_browser_reads_back() -> None:
    signed: list[bytes] = []

    def sign() -> bytes:
        signed.append(signed_beacon("bob", seq=len(signed)))
        return signed[-1]

    bob = MdnsRole(
        fingerprint=key("bob").fingerprint,
        name="Bob",
        port=5001,
        scope=LOOPBACK_SCOPE,
        on_hint=lambda hint: None,
        sign_beacon=sign,
    )
    first, second = bob._own_info(bob.service_name), bob._own_info(bob.service_name)
    assert len(signed) == 2 and signed[0] != signed[1]  # signed afresh for each update
    browsing, _ = role()
    wire = AsyncServiceInfo(
        SERVICE_TYPE,
        bob.service_name,
        port=5001,
        properties=second.text,
        parsed_addresses=["127.0.0.1"],
    )
    hints, beacon = browsing._read(bob.service_name, wire)
    assert beacon == signed[1] and hints[0].name == "Bob"
    assert first.properties[b"fp"] == key("bob").fingerprint.encode()


def test_a_beacon_is_reported_once_per_new_beacon_with_the_first_address() -> None:
    r, seen = role()
    data = [signed_beacon("bob", seq=0), signed_beacon("bob", seq=1)]
    answers = [data[0], data[0], data[1]]

    async def resolve(name: str) -> tuple[list[MdnsHint], bytes | None]:
        return r._read(*record_of("bob", answers.pop(0)))

    async def run() -> None:
        r._resolve = resolve  # type: ignore[method-assign]
        task = asyncio.ensure_future(r._resolve_loop())
        name = record_of("bob", None)[0]
        for _ in range(3):
            r._on_change(None, SERVICE_TYPE, name, ServiceStateChange.Updated)  # type: ignore[arg-type]
            while r._queue:
                await asyncio.sleep(0)
            await asyncio.sleep(0)
        r._closed = True
        task.cancel()

    asyncio.run(run())
    beacons = [event for event in seen if isinstance(event, MdnsBeacon)]
    assert beacons == [MdnsBeacon(data[0], "127.0.0.5"), MdnsBeacon(data[1], "127.0.0.5")]
    assert sum(isinstance(event, MdnsHint) for event in seen) == 6


@pytest.mark.parametrize(
    ("broadcast_every", "peer_timeout", "expected"),
    [
        (5.0, 15.0, 6.0),
        (0.5, 3.0, 6.0),
        (3600.0, 15.0, 6.0),
        (8.0, 60.0, 8.0),
        (3600.0, 600.0, 10.0),
    ],
)
def test_the_record_beacon_interval_keeps_an_mdns_peer_listed_and_fresh(
    broadcast_every: float, peer_timeout: float, expected: float
) -> None:
    assert beacon_interval_for(broadcast_every, peer_timeout) == expected
