"""The mDNS role's decisions, without a network: scope, names, what a record is worth."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

import pytest
from zeroconf import ServiceStateChange
from zeroconf.asyncio import AsyncServiceInfo

from crypto_utils import fingerprint_of, short_id
from peerchat.limits import LIMITED_BROADCAST, MDNS_MAX_SERVICES
from peerchat.net import mdns
from peerchat.net.mdns import (
    LOOPBACK_SCOPE,
    SERVICE_TYPE,
    MdnsGone,
    MdnsHint,
    MdnsRole,
    MdnsScope,
    instance_name,
    parse_instance,
    scope_for,
)

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


def role(scope: MdnsScope = LOOPBACK_SCOPE) -> tuple[MdnsRole, list[MdnsHint | MdnsGone]]:
    seen: list[MdnsHint | MdnsGone] = []
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
    assert r._hints_from(BOB_NAME, record) == [
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
    assert r._hints_from(BOB_NAME, info(BOB_NAME, props=props, addresses=["127.0.0.5"])) == []
    assert r.dropped == {reason: 1}


def test_our_own_record_is_no_hint() -> None:
    r, _ = role()
    name = f"Me {short_id(OWN)}.{SERVICE_TYPE}"
    assert (
        r._hints_from(name, info(name, props={"v": "1", "fp": OWN}, addresses=["127.0.0.1"])) == []
    )


def test_a_name_that_does_not_match_the_fingerprint_gives_no_name() -> None:
    r, _ = role()
    name = f"Alice {short_id(OWN)}.{SERVICE_TYPE}"  # claims another short ID
    (hint,) = r._hints_from(name, info(name, props={"v": "1", "fp": BOB}, addresses=["127.0.0.5"]))
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
