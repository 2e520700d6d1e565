"""Three hosts on a real (virtual) LAN: network namespaces joined by a bridge.

Each host is a network namespace with one veth interface in 10.213.7.0/24 and
no route beyond that subnet. The bridge lives in a "switch" namespace of its
own, and the veth pairs are created directly between the switch and the host
namespaces, so the root namespace gains no interface and nothing here can reach
the machine's real network. The peers run with the default broadcast address
(255.255.255.255 plus each interface's directed broadcast): inside a host
namespace that can only reach the test bridge.

Needs root and iproute2; where namespaces cannot be made the test is skipped
with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from peerchat.limits import DISCOVERY_PORT  # the program's default, as on a real LAN
from tests.netns import Lan, check_isolated, require_netns, root_links, unavailable
from tests.support import (
    WatchedPeer,
    await_lines,
    await_new_lines,
    own_fingerprint,
    peer_rows,
    shown_as,
)

pytestmark = [pytest.mark.netns, pytest.mark.slow]

SUBNET = "10.213.7"
PREFIX = 24
PORT = 5000  # every host has its own stack, so all may use the same port, as on a LAN
BEACON_INTERVAL = 0.5
PEER_TIMEOUT = 3.0
REMOVAL_MARGIN = 1.5
EVENT_WAIT = 15.0
NAMES = ("Alice", "Bob", "Carol")


@pytest.fixture
def lan() -> Iterator[Lan]:
    require_netns()
    net = Lan(len(NAMES), SUBNET, PREFIX)
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


class HostPeer(WatchedPeer):
    """A peer_chat process inside one host's namespace, with the default broadcast address."""

    def __init__(self, name: str, tmp: Path, namespace: str, address: str) -> None:
        super().__init__(
            name,
            tmp,
            DISCOVERY_PORT,
            port=PORT,
            host=address,
            broadcast=None,
            beacon_interval=BEACON_INTERVAL,
            peer_timeout=PEER_TIMEOUT,
            extra=["-v"],
            launch=lambda command: ["ip", "netns", "exec", namespace, *command],
        )


@pytest.fixture
def hosts(lan: Lan, tmp_path: Path) -> Iterator[list[HostPeer]]:
    started: list[HostPeer] = []
    try:
        for name, namespace, address in zip(NAMES, lan.hosts, lan.addresses, strict=True):
            started.append(HostPeer(name, tmp_path, namespace, address))
        yield started
    finally:
        for peer in started:
            peer.close()


def assert_lists_exactly(peer: HostPeer, others: Sequence[HostPeer], ids: dict[str, str]) -> None:
    rows = peer_rows(peer.peers_table())
    assert sorted((r.name, r.address, r.short_id) for r in rows) == sorted(
        (o.name, o.addr, ids[o.name]) for o in others
    ), f"{peer.name}'s list: {rows}"


def offline(peer: HostPeer, other: HostPeer) -> tuple[HostPeer, str]:
    return peer, f"Peer {other.name} at {other.addr} is offline (timed out)"


def test_three_hosts_discover_chat_and_drop_a_host_whose_cable_is_pulled(
    lan: Lan, hosts: list[HostPeer]
) -> None:
    alice, bob, carol = hosts
    await_new_lines(
        [(p, f"Discovered peer {o.name} at {o.addr}") for p in hosts for o in hosts if o is not p],
        EVENT_WAIT,
    )
    ids = {p.name: own_fingerprint(p)[0] for p in hosts}
    for peer in hosts:
        assert_lists_exactly(peer, [o for o in hosts if o is not peer], ids)

    # Messages across hosts, by name and by address; each side names the other's
    # LAN address, never a loopback one.
    alice.send_to("Bob", "hello across the bridge")
    alice.expect_text(f"Message sent to {bob.addr}")
    bob.expect_text(f"Received from {alice.addr} ({shown_as(alice)}): hello across the bridge")
    carol.send_to(alice.addr.split(":")[0], "by address", port=PORT)
    carol.expect_text(f"Message sent to {alice.addr}")
    alice.expect_text(f"Received from {carol.addr} ({shown_as(carol)}): by address")
    bob.send_to("Carol", "and back")
    bob.expect_text(f"Message sent to {carol.addr}")
    carol.expect_text(f"Received from {bob.addr} ({shown_as(bob)}): and back")

    # Pull Carol's cable at the switch: both sides lose each other within the timeout.
    cut_at = time.monotonic()
    lan.set_cable(2, up=False)
    waits = [offline(alice, carol), offline(bob, carol), offline(carol, alice), offline(carol, bob)]
    seen = await_lines(waits, PEER_TIMEOUT + REMOVAL_MARGIN + 5)
    for (watcher, text), at in zip(waits, seen, strict=True):
        took = at - cut_at
        assert took < PEER_TIMEOUT + REMOVAL_MARGIN, f"{watcher.name}: {text!r} after {took:.2f} s"
    assert_lists_exactly(alice, [bob], ids)
    assert_lists_exactly(bob, [alice], ids)
    assert_lists_exactly(carol, [], ids)


def test_host_plugged_back_in_is_announced_and_listed_again(
    lan: Lan, hosts: list[HostPeer]
) -> None:
    alice, bob, carol = hosts
    await_new_lines(
        [(p, f"Discovered peer {o.name} at {o.addr}") for p in hosts for o in hosts if o is not p],
        EVENT_WAIT,
    )
    ids = {p.name: own_fingerprint(p)[0] for p in hosts}
    lan.set_cable(2, up=False)
    await_lines(
        [offline(alice, carol), offline(bob, carol), offline(carol, alice), offline(carol, bob)],
        PEER_TIMEOUT + REMOVAL_MARGIN + 5,
    )

    # The screens said "removed from active peers"; a return must be news as well.
    lan.set_cable(2, up=True)
    await_lines(
        [
            (alice, f"Discovered peer Carol at {carol.addr}"),
            (bob, f"Discovered peer Carol at {carol.addr}"),
            (carol, f"Discovered peer Alice at {alice.addr}"),
            (carol, f"Discovered peer Bob at {bob.addr}"),
        ],
        EVENT_WAIT,
    )
    for peer in hosts:
        assert_lists_exactly(peer, [o for o in hosts if o is not peer], ids)
    alice.send_to("Carol", "welcome back")
    alice.expect_text(f"Message sent to {carol.addr}")
    carol.expect_text(f"Received from {alice.addr} ({shown_as(alice)}): welcome back")
