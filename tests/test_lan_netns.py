"""Three hosts on a real (virtual) LAN: network namespaces joined by a bridge.

Each host is a network namespace with one veth interface in 10.213.7.0/24 and
no route beyond that subnet. The bridge lives in a "switch" namespace of its
own, and the veth pairs are created directly between the switch and the host
namespaces, so the root namespace gains no interface and nothing here can reach
the machine's real network. The peers run with the default broadcast address
(255.255.255.255 plus each interface's directed broadcast): inside a host
namespace that can only reach the test bridge.

Needs root and iproute2; where namespaces cannot be made the test is skipped
with the reason, or fails with it under CI (tests.support.cannot_set_up).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from peerchat.limits import DISCOVERY_PORT  # the program's default, as on a real LAN
from tests.support import (
    WatchedPeer,
    await_lines,
    await_new_lines,
    cannot_set_up,
    own_fingerprint,
    peer_rows,
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

_counter = itertools.count()


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15, check=False)


def ip_ok(*args: str) -> str:
    result = ip(*args)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


class Lan:
    """A switch namespace with a bridge, and one namespace per host plugged into it."""

    def __init__(self, hosts: int) -> None:
        tag = f"pc{os.getpid()}x{next(_counter)}"
        self.switch = f"{tag}sw"
        self.hosts = [f"{tag}h{i}" for i in range(hosts)]
        self.addresses = [f"{SUBNET}.{10 + i}" for i in range(hosts)]
        self.ports = [f"p{i}" for i in range(hosts)]  # bridge side of each host's cable
        self.made: list[str] = []

    def build(self) -> None:
        self._add(self.switch)
        ip_ok("-n", self.switch, "link", "set", "lo", "up")
        ip_ok(
            "-n",
            self.switch,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        )
        ip_ok("-n", self.switch, "link", "set", "br0", "up")
        for host, address, port in zip(self.hosts, self.addresses, self.ports, strict=True):
            self._add(host)
            ip_ok("-n", host, "link", "set", "lo", "up")
            # Both ends are born in their namespaces: the root namespace never holds them.
            ip_ok(
                "-n",
                self.switch,
                "link",
                "add",
                port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                host,
            )
            ip_ok("-n", self.switch, "link", "set", port, "master", "br0")
            ip_ok("-n", self.switch, "link", "set", port, "up")
            ip_ok("-n", host, "addr", "add", f"{address}/{PREFIX}", "dev", "eth0")
            ip_ok("-n", host, "link", "set", "eth0", "up")

    def _add(self, name: str) -> None:
        ip_ok("netns", "add", name)
        self.made.append(name)

    def set_cable(self, host: int, up: bool) -> None:
        ip_ok("-n", self.switch, "link", "set", self.ports[host], "up" if up else "down")

    def destroy(self) -> None:
        for name in reversed(self.made):
            ip("netns", "del", name)
        self.made.clear()


def _root_links() -> set[str]:
    """Names of the root namespace's interfaces (`ip -o link`: "N: NAME: <...")."""
    return {line.split(":")[1].strip() for line in ip_ok("-o", "link", "show").splitlines()}


@pytest.fixture
def lan() -> Iterator[Lan]:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        cannot_set_up("network namespaces need root")
    if shutil.which("ip") is None:
        cannot_set_up("iproute2 ('ip') is not installed")
    net = Lan(len(NAMES))
    probe = ip("netns", "add", net.switch)
    if probe.returncode != 0:
        cannot_set_up(f"cannot create a network namespace: {probe.stderr.strip()}")
    ip("netns", "del", net.switch)
    before = _root_links()
    try:
        try:
            net.build()
        except RuntimeError as exc:
            cannot_set_up(f"cannot build the test LAN: {exc}")
        # The rule this test lives by: nothing new in the root namespace, and no host
        # has a route beyond the test subnet.
        assert _root_links() <= before, "the test LAN leaked into the root namespace"
        for host in net.hosts:
            routes = ip_ok("-n", host, "-4", "route", "show").splitlines()
            assert routes and all(r.startswith(f"{SUBNET}.0/{PREFIX} ") for r in routes), routes
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
    bob.expect_text(f"Received from {alice.addr} (Alice): hello across the bridge")
    carol.send_to(alice.addr.split(":")[0], "by address", port=PORT)
    carol.expect_text(f"Message sent to {alice.addr}")
    alice.expect_text(f"Received from {carol.addr} (Carol): by address")
    bob.send_to("Carol", "and back")
    bob.expect_text(f"Message sent to {carol.addr}")
    carol.expect_text(f"Received from {bob.addr} (Bob): and back")

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
    carol.expect_text(f"Received from {alice.addr} (Alice): welcome back")
