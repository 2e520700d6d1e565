"""Reach across real (virtual) networks: mDNS on a bridge, and two subnets joined by a router.

Every host here is a network namespace the test made (tests/netns.py), so the
multicast and broadcast sent below stay on the test's own bridges. The mDNS
role runs as `tests.mdns_probe` processes, the helpers as `tests.netns_tools`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from peerchat.limits import LIMITED_BROADCAST
from tests.mdns_probe import fingerprint_for
from tests.netns import (
    Background,
    Lan,
    Router,
    check_isolated,
    in_namespace,
    require_netns,
    root_links,
    tool,
    unavailable,
)

pytestmark = [pytest.mark.netns, pytest.mark.slow]

WAIT = 15.0
PORT = 5000


def probe(namespace: str, name: str, broadcast: str, port: int = PORT) -> Background:
    command = in_namespace(
        namespace,
        [
            sys.executable,
            "-m",
            "tests.mdns_probe",
            "--name",
            name,
            "--port",
            str(port),
            "--broadcast",
            broadcast,
            "--seconds",
            "60",
        ],
    )
    started = Background(command)
    started.wait_for("READY", WAIT)
    return started


def hint(of: str, host: str, port: int = PORT) -> str:
    return f"HINT {fingerprint_for(of)} {of} {host} {port}"


@pytest.fixture
def lan() -> Iterator[Lan]:
    require_netns()
    net = Lan(3, "10.213.20")
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


@pytest.fixture
def started() -> Iterator[list[Background]]:
    processes: list[Background] = []
    yield processes
    for process in processes:
        process.kill()


def test_mdns_peers_on_one_bridge_find_each_other_and_standard_browsers_see_them(
    lan: Lan, started: list[Background]
) -> None:
    (a_ns, b_ns, c_ns), (a_ip, b_ip, c_ip) = lan.hosts, lan.addresses
    alice = probe(a_ns, "Alice", LIMITED_BROADCAST)
    bob = probe(b_ns, "Bob", LIMITED_BROADCAST, port=5001)
    browser = Background(tool(c_ns, "browse", c_ip, "60"))
    started += [alice, bob, browser]

    alice.wait_for(hint("Bob", b_ip, 5001), WAIT)
    bob.wait_for(hint("Alice", a_ip), WAIT)

    # zeroconf's own browser, on a third host, sees both as DNS-SD services.
    for name, address, port in (("Alice", a_ip, PORT), ("Bob", b_ip, 5001)):
        fp = fingerprint_for(name)
        line = browser.wait_for(f"SERVICE {name} {fp[:8]}._peerchat._tcp.local.", WAIT)
        assert line.split("|")[1:] == [str(port), "1", fp, address]

    # Bob leaves: his goodbye reaches Alice at once.
    bob.stop()
    alice.wait_for(f"GONE {fingerprint_for('Bob')}", WAIT)
    assert not any(line.startswith("HINT") and c_ip in line for line in alice.lines)


def test_mdns_on_loopback_stays_off_the_lan(lan: Lan, started: list[Background]) -> None:
    """With --broadcast 127.255.255.255, mDNS neither speaks on nor listens to the LAN.

    Host 0 also has a socket in the mDNS group on its LAN interface (as avahi
    has on a real machine); that is what made plain zeroconf on loopback hear
    the LAN and answer it by unicast. The plain-zeroconf control shows the
    capture sees such leaks.
    """
    (here, there, _), (here_ip, there_ip, _) = lan.hosts, lan.addresses
    capture = Background(tool(here, "capture", "eth0", "60", "Alice", "Bob", "Plain"))
    capture.wait_for("READY", WAIT)
    member = Background(tool(here, "join", here_ip, "60"))
    member.wait_for("READY", WAIT)
    control = Background(tool(here, "stock", "Plain", "5002", "127.0.0.1", "60"))
    started += [capture, member, control]
    control.wait_for("READY", WAIT)
    loop_1 = probe(here, "Alice", "127.255.255.255")
    loop_2 = probe(here, "Bob", "127.255.255.255", port=5001)
    started += [loop_1, loop_2]

    def peers_seen(name: str) -> list[str]:
        return (loop_1 if name == "Alice" else loop_2).lines

    # The loopback peers find each other (so mDNS does run there).
    loop_1.wait_for(hint("Bob", "127.0.0.1", 5001), WAIT)
    loop_2.wait_for(hint("Alice", "127.0.0.1"), WAIT)
    # Then a peer on the LAN starts browsing. Its first query asks for unicast
    # answers; plain zeroconf on host 0's loopback hears it and answers through
    # the LAN, which the capture sees: the control that a leak would be seen.
    lan_peer = probe(there, "Dave", LIMITED_BROADCAST)
    started.append(lan_peer)
    capture.wait_for(lambda line: line.startswith(f"MDNS {here_ip} ") and "Plain" in line, WAIT)

    def later_frames_from_dave(line: str) -> bool:
        frames = [x for x in capture.lines if x.startswith(f"MDNS {there_ip} ")]
        return len(frames) >= 8  # its probes, announcements and repeated queries

    capture.wait_for(later_frames_from_dave, WAIT)
    control.stop()

    # The role's own packets never left: stop everything and read the whole capture.
    for process in (loop_1, loop_2, lan_peer):
        process.stop()
    frames = capture.stop()
    from_here = [line for line in frames if line.startswith(f"MDNS {here_ip} ")]
    assert from_here, "the control's packets were not captured"
    assert all("Plain" in line for line in from_here), from_here
    assert not any("Alice" in line or "Bob" in line for line in frames), frames
    for name in ("Alice", "Bob"):
        assert not any(line.startswith("HINT") and "Dave" in line for line in peers_seen(name))
    assert not any(line.startswith("HINT") and "127.0.0.1" in line for line in lan_peer.lines)


# -- two subnets joined by a router ------------------------------------------------------


@pytest.fixture
def subnets() -> Iterator[tuple[Lan, Lan, Router]]:
    require_netns()
    a, b = Lan(2, "10.213.21"), Lan(2, "10.213.22")
    router = Router(a, b)
    before = root_links()
    try:
        try:
            a.build()
            b.build()
            router.build()
        except RuntimeError as exc:
            unavailable(f"cannot build the test subnets: {exc}")
        check_isolated([a, b], before)
        yield a, b, router
    finally:
        b.destroy()
        a.destroy()


def test_broadcast_and_mdns_stay_on_their_subnet_and_unicast_is_routed(
    subnets: tuple[Lan, Lan, Router], started: list[Background]
) -> None:
    a, b, _ = subnets
    (a1, a2), (b1, b2) = a.hosts, b.hosts
    (a1_ip, a2_ip), (b1_ip, _) = a.addresses, b.addresses

    # Broadcast from A1 (limited and directed) reaches A2, never B1; B1 does get
    # the unicast A1 sends right after, so its listener was there to hear.
    listeners = {ns: Background(tool(ns, "udp-listen", "47000", "60")) for ns in (a2, b1)}
    started += listeners.values()
    for listener in listeners.values():
        listener.wait_for("READY", WAIT)
    for target in (LIMITED_BROADCAST, a.broadcast):
        text = f"broadcast to {target}"
        assert "SENT" in Background(tool(a1, "udp-send", target, "47000", text, "eth0")).stop()
    for target in (b1_ip, a2_ip):
        assert "SENT" in Background(tool(a1, "udp-send", target, "47000", "END")).stop()
    heard = {ns: listener.stop() for ns, listener in listeners.items()}
    assert f"GOT {a1_ip} broadcast to {LIMITED_BROADCAST}" in heard[a2]
    assert f"GOT {a1_ip} broadcast to {a.broadcast}" in heard[a2]
    assert [line for line in heard[b1] if line.startswith("GOT")] == [f"GOT {a1_ip} END"]

    # TCP crosses the router both ways, as a session to a seed would.
    server = Background(tool(a1, "tcp-listen", "47001", "30"))
    started.append(server)
    server.wait_for("READY", WAIT)
    assert "CONNECTED" in Background(tool(b1, "tcp-connect", a1_ip, "47001")).stop()
    server.wait_for(f"ACCEPTED {b1_ip}", WAIT)

    # mDNS (link-local multicast) is not routed: B1 is heard on its own subnet (by
    # B2), and by then A1 and A2, who hear each other, have not heard of it.
    peers = {
        "B1": probe(b1, "B1", LIMITED_BROADCAST),
        "B2": probe(b2, "B2", LIMITED_BROADCAST, port=5001),
        "A1": probe(a1, "A1", LIMITED_BROADCAST),
        "A2": probe(a2, "A2", LIMITED_BROADCAST),
    }
    started += peers.values()
    peers["B2"].wait_for(hint("B1", b1_ip), WAIT)
    peers["A1"].wait_for(hint("A2", a2_ip), WAIT)
    peers["A2"].wait_for(hint("A1", a1_ip), WAIT)
    lines = {name: p.stop() for name, p in peers.items()}
    heard_on_a = [line for line in lines["A1"] + lines["A2"] if line.startswith("HINT")]
    assert not any(" B1 " in line or " B2 " in line for line in heard_on_a), heard_on_a
    assert not any(" A1 " in line or " A2 " in line for line in lines["B1"] + lines["B2"])
