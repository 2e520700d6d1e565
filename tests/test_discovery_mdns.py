"""Beacons carried by mDNS records: signed from the broadcast run, judged as datagrams are."""

from __future__ import annotations

from functools import cache

from crypto_utils import Identity
from discovery import DiscoveryService
from peerchat.protocol.beacon import BeaconAccepted, decode_beacon


@cache
def key(name: str) -> Identity:
    return Identity.generate(2048)


def service(name: str, heard: list[BeaconAccepted] | None = None) -> DiscoveryService:
    return DiscoveryService(
        identity=key(name),
        name=name,
        tcp_port=5000,
        targets=["127.255.255.255"],
        discovery_port=54999,  # never bound here: nothing is sent
        interval=5.0,
        on_beacon=(heard.append if heard is not None else lambda accepted: None),
    )


def test_record_beacons_take_the_next_numbers_of_the_broadcast_run() -> None:
    bob = service("Bob")
    first, second = bob.signed_beacon(), bob.signed_beacon()
    assert first is not None and second is not None
    beacons = [decode_beacon(first)[0], decode_beacon(second)[0]]
    assert [b.seq for b in beacons] == [0, 1]
    assert {b.instance for b in beacons} == {bob.instance}
    assert bob.beacons_sent == 2  # the next broadcast is number 2


def test_a_record_beacon_is_judged_as_a_datagram_and_said_to_come_by_mdns() -> None:
    heard: list[BeaconAccepted] = []
    alice, bob = service("Alice", heard), service("Bob")
    data = bob.signed_beacon()
    assert data is not None
    alice.hear(data, "10.0.0.7")
    (accepted,) = heard
    assert accepted.via_mdns and accepted.source_ip == "10.0.0.7"
    assert accepted.beacon.fingerprint == key("Bob").fingerprint
    # The same bytes again, or an older beacon by broadcast: one replay rule for both.
    alice.hear(data, "10.0.0.66")
    assert len(heard) == 1 and alice.mdns_rejected == {"replay": 1}


def test_a_broken_or_forged_record_beacon_lists_nobody_and_is_counted() -> None:
    heard: list[BeaconAccepted] = []
    alice, bob = service("Alice", heard), service("Bob")
    data = bob.signed_beacon()
    assert data is not None
    alice.hear(data[:-1] + bytes([data[-1] ^ 1]), "10.0.0.7")
    alice.hear(b"PCHB junk", "10.0.0.7")
    own = alice.signed_beacon()
    assert own is not None
    alice.hear(own, "10.0.0.7")
    assert heard == []
    assert alice.mdns_rejected == {"bad signature": 1, "too short": 1, "self": 1}
