"""Reach with real peers: seeds, peer exchange and mDNS across namespaces.

The lines awaited are the ones peers print today ("Discovered peer NAME at
IP:PORT", "Peer NAME connected from IP:PORT", "Received from ..."); a peer
learned from a seed or from peer exchange is announced with the same
"Discovered peer" line once a handshake confirmed it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from peerchat.limits import RECONNECT_MAX
from tests.netns import (
    Background,
    Lan,
    Router,
    check_isolated,
    require_netns,
    root_links,
    tool,
    unavailable,
)
from tests.reach_peers import PORT, HostPeer, await_met, found, listed
from tests.support import await_new_lines, own_fingerprint, peer_rows, shown_as, strip_ansi

pytestmark = [pytest.mark.netns, pytest.mark.slow]

EVENT_WAIT = 20.0


@pytest.fixture
def subnets() -> Iterator[tuple[Lan, Lan]]:
    require_netns()
    a, b = Lan(2, "10.213.31"), Lan(1, "10.213.32")
    before = root_links()
    try:
        try:
            a.build()
            b.build()
            Router(a, b).build()
        except RuntimeError as exc:
            unavailable(f"cannot build the test subnets: {exc}")
        check_isolated([a, b], before)
        yield a, b
    finally:
        b.destroy()
        a.destroy()


@pytest.fixture
def peers() -> Iterator[list[HostPeer]]:
    started: list[HostPeer] = []
    yield started
    for peer in started:
        peer.close()


def test_a_seed_and_peer_exchange_join_two_subnets(
    subnets: tuple[Lan, Lan], peers: list[HostPeer], tmp_path: Path
) -> None:
    a, b = subnets
    a1 = HostPeer("A1", tmp_path, a.hosts[0], a.addresses[0])
    a2 = HostPeer("A2", tmp_path, a.hosts[1], a.addresses[1])
    peers += [a1, a2]
    await_new_lines([found(a1, a2), found(a2, a1)], EVENT_WAIT)
    # Peer exchange passes on the peers one holds sessions with, at addresses a
    # handshake confirmed; a peer only heard by beacon is dialled by nobody
    # unasked. A1's user connects to A2 (option 4, by name).
    a1.connect("A2", None)
    a1.expect_text(f"Connected to {a2.addr}")
    a1.expect_menu()
    b1 = HostPeer("B1", tmp_path, b.hosts[0], b.addresses[0], extra=["--peer", a1.addr])
    peers.append(b1)

    # B1 reaches A1 through its seed; A1 passes each on to the other; A2 and B1
    # confirm by a handshake and list each other.
    await_new_lines([found(b1, a1)], EVENT_WAIT)
    await_met([(b1, a2), (a2, b1)], EVENT_WAIT)
    assert listed(a1).keys() == {"A2", "B1"}
    assert listed(a2) == {"A1": a1.addr, "B1": b1.addr}
    assert listed(b1) == {"A1": a1.addr, "A2": a2.addr}
    # Option 2 says how: never by broadcast across the router; B1 by its seed.
    a2_found = {row.name: row.found for row in peer_rows(a2.peers_table())}
    assert "broadcast" not in a2_found["B1"], a2_found
    assert "via A1" in a2_found["B1"] or "connected to us" in a2_found["B1"], a2_found
    b1_found = {row.name: row.found for row in peer_rows(b1.peers_table())}
    assert "seed" in b1_found["A1"] and "broadcast" not in str(b1_found.values()), b1_found

    a2.send_to("B1", "hello across the router")
    a2.expect_text(f"Message sent to {b1.addr}")
    b1.expect_text(f"Received from {a2.addr} ({shown_as(a2)}): hello across the router")

    # A1 leaves; A2 and B1 keep each other.
    assert a1.quit() == 0
    peers.remove(a1)
    b1.send_to("A2", "still here")
    b1.expect_text(f"Message sent to {a2.addr}")
    a2.expect_text(f"Received from {b1.addr} ({shown_as(b1)}): still here")
    assert listed(a2).keys() == {"B1"}
    assert listed(b1).keys() == {"A2"}


def test_a_seed_down_at_start_is_reached_when_it_comes_up_and_remembered(
    subnets: tuple[Lan, Lan], peers: list[HostPeer], tmp_path: Path
) -> None:
    a, b = subnets
    b1 = HostPeer(
        "B1", tmp_path, b.hosts[0], b.addresses[0], extra=["--peer", f"{a.addresses[0]}:{PORT}"]
    )
    peers.append(b1)
    b1.expect_text(f"{a.addresses[0]}:{PORT}", timeout=EVENT_WAIT)  # said not reachable ...
    a1 = HostPeer("A1", tmp_path, a.hosts[0], a.addresses[0])
    peers.append(a1)
    await_new_lines([found(b1, a1)], RECONNECT_MAX + EVENT_WAIT)
    screen = strip_ansi(b1.screen())
    assert screen.count("not reachable") == 1, screen  # ... once, not at every retry

    # Remembered: a restart without the flag reaches it again, and option 10 lists it.
    assert b1.quit() == 0
    peers.remove(b1)
    again = HostPeer("B1", tmp_path, b.hosts[0], b.addresses[0])
    peers.append(again)
    await_new_lines([found(again, a1)], EVENT_WAIT)
    again.choose("10")
    again.expect_text(f"1. {a1.addr}: A1 [{own_fingerprint(a1)[0]}]")


@pytest.fixture
def lan() -> Iterator[Lan]:
    require_netns()
    net = Lan(3, "10.213.33")
    before = root_links()
    try:
        try:
            net.build()
        except RuntimeError as exc:
            unavailable(f"cannot build the test LAN: {exc}")
        check_isolated([net], before)
        yield net
    finally:
        net.destroy()


def test_standard_browsers_see_each_peer_on_mdns(
    lan: Lan, peers: list[HostPeer], tmp_path: Path
) -> None:
    # Different discovery ports: their beacons never meet. An mDNS record is a
    # claim anyone can make, so it is not dialled unasked; browsers see both.
    alice = HostPeer("Alice", tmp_path, lan.hosts[0], lan.addresses[0], discovery_port=54601)
    bob = HostPeer("Bob", tmp_path, lan.hosts[1], lan.addresses[1], discovery_port=54602)
    peers += [alice, bob]

    browser = Background(tool(lan.hosts[2], "browse", lan.addresses[2], "30"))
    try:
        for peer in (alice, bob):
            sid, _ = own_fingerprint(peer)
            browser.wait_for(f"SERVICE {peer.name} {sid}._peerchat._tcp.local.", EVENT_WAIT)
    finally:
        browser.stop()


def test_a_peer_found_by_broadcast_and_mdns_is_one_row(
    lan: Lan, peers: list[HostPeer], tmp_path: Path
) -> None:
    alice = HostPeer("Alice", tmp_path, lan.hosts[0], lan.addresses[0])
    bob = HostPeer("Bob", tmp_path, lan.hosts[1], lan.addresses[1])
    peers += [alice, bob]
    await_new_lines([found(alice, bob), found(bob, alice)], EVENT_WAIT)
    table = strip_ansi(alice.peers_table())
    assert [row.name for row in peer_rows(table)] == ["Bob"]
