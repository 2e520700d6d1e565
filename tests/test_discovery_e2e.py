"""Discovery and liveness with real peer_chat processes on loopback, read off their screens.

Every peer broadcasts to 127.255.255.255 on a discovery port of its own test,
with a short beacon interval and peer timeout, so a peer that dies leaves the
lists within seconds. Forged beacons are sent by the test itself to the same
loopback broadcast address; nothing leaves this machine.
"""

from __future__ import annotations

import secrets
import struct
import time
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path

import pexpect
import pytest

from crypto_utils import Identity
from peerchat.protocol.beacon import MAGIC, VERSION, decode_beacon, encode_beacon
from tests.support import (
    BeaconSniffer,
    Peer,
    WatchedPeer,
    await_lines,
    await_new_lines,
    free_udp_port,
    own_fingerprint,
    peer_rows,
    shown_as,
    strip_ansi,
    wait_for_log,
)

pytestmark = pytest.mark.slow

BEACON_INTERVAL = 0.5
PEER_TIMEOUT = 3.0
REMOVAL_MARGIN = 1.5  # housekeeping tick, a beacon in flight, a loaded machine
EVENT_WAIT = 15.0  # upper bound for any one awaited screen line


@pytest.fixture
def discovery_port() -> int:
    return free_udp_port()


@pytest.fixture
def peers() -> Iterator[list[WatchedPeer]]:
    started: list[WatchedPeer] = []
    yield started
    for peer in started:
        peer.close()


@pytest.fixture
def sniffer(discovery_port: int) -> Iterator[BeaconSniffer]:
    sniff = BeaconSniffer(discovery_port)
    yield sniff
    sniff.close()


def start(
    peers: list[WatchedPeer],
    name: str,
    tmp: Path,
    dport: int | None,
    *,
    port: int | None = None,
    data_dir: Path | None = None,
    beacon_interval: float = BEACON_INTERVAL,
    verbose: bool = False,
    extra: Sequence[str] = (),
) -> WatchedPeer:
    peer = WatchedPeer(
        name,
        tmp,
        dport,
        port=port,
        data_dir=data_dir,
        beacon_interval=beacon_interval,
        peer_timeout=PEER_TIMEOUT,
        extra=(["-v"] if verbose else []) + list(extra),
    )
    peers.append(peer)
    # Peers already on the port answer at once, while this one is still starting:
    # that news waits for the banner, which stays the first line on the screen.
    shown = strip_ansi(peer.screen()).lstrip()
    assert shown.startswith(f"Server listening on port {peer.port}..."), shown[:300]
    return peer


def discovered(peer: WatchedPeer, other: Peer) -> tuple[WatchedPeer, str]:
    return peer, f"Discovered peer {other.name} at {other.addr}"


def offline(peer: Peer, other: Peer, reason: str = "timed out") -> tuple[Peer, str]:
    return (
        peer,
        f"Peer {other.name} at {other.addr} is offline ({reason}): removed from active peers.",
    )


def all_discover(group: list[WatchedPeer]) -> None:
    await_new_lines([discovered(p, o) for p in group for o in group if o is not p], EVENT_WAIT)


def assert_lists_exactly(peer: Peer, others: Sequence[Peer], ids: dict[str, str]) -> None:
    """Option 2 shows each of `others` once, at its address and with its ID, and nobody else."""
    rows = peer_rows(peer.peers_table())
    assert sorted((r.name, r.address, r.short_id) for r in rows) == sorted(
        (o.name, o.addr, ids[o.name]) for o in others
    ), f"{peer.name}'s list: {rows}"
    assert [r.number for r in rows] == list(range(1, len(rows) + 1))


def assert_quiet(group: Sequence[Peer], texts: list[str], seconds: float) -> None:
    """None of `texts` appears on any of the screens for `seconds` (a bounded window)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for peer in group:
            index = peer.child.expect_exact([*texts, pexpect.TIMEOUT], timeout=0.05)
            assert index == len(texts), f"{peer.name} printed {texts[index]!r}"


def pack_beacon(
    *,
    name: str,
    der: bytes,
    signature: bytes,
    port: int,
    ts: float,
    instance: bytes,
    seq: int,
) -> bytes:
    """A beacon in the documented wire format, with whatever signature we choose."""
    raw_name = name.encode()
    header = struct.pack(
        ">4sBBHHHd16sQ",
        MAGIC,
        VERSION,
        len(raw_name),
        len(der),
        len(signature),
        port,
        ts,
        instance,
        seq,
    )
    return header + raw_name + der + signature


@cache
def stranger() -> Identity:
    return Identity.generate(2048)


# --------------------------------------------------------------------------- discovery


def test_three_peers_discover_each_other_and_list_only_the_others(
    tmp_path: Path, discovery_port: int, peers: list[WatchedPeer]
) -> None:
    group = [start(peers, n, tmp_path, discovery_port) for n in ("Alice", "Bob", "Carol")]
    all_discover(group)
    ids = {p.name: own_fingerprint(p)[0] for p in group}
    assert len(set(ids.values())) == 3

    for peer in group:
        assert_lists_exactly(peer, [o for o in group if o is not peer], ids)

    # A session on top of the beacons (connect by address, a message by name) is the
    # same identity: still one row per peer, at the listening address.
    alice, bob, _ = group
    alice.connect("127.0.0.1", bob.port)
    alice.expect_text(f"Connected to {bob.addr} (Bob)")
    bob.send_to("Alice", "one of three")
    bob.expect_text(f"Message sent to {alice.addr}")
    alice.expect_text(f"Received from {bob.addr} ({shown_as(bob)}): one of three")
    for peer in group:
        assert_lists_exactly(peer, [o for o in group if o is not peer], ids)
    # Over a whole timeout nobody is discovered twice or dropped (no flapping).
    assert_quiet(group, ["Discovered peer", "is offline"], PEER_TIMEOUT)


def test_killed_peer_leaves_the_lists_within_the_timeout_and_returns_on_restart(
    tmp_path: Path, discovery_port: int, peers: list[WatchedPeer], sniffer: BeaconSniffer
) -> None:
    alice, bob, carol = (
        start(peers, n, tmp_path, discovery_port) for n in ("Alice", "Bob", "Carol")
    )
    group = [alice, bob, carol]
    all_discover(group)
    ids = {p.name: own_fingerprint(p)[0] for p in group}

    # Kill Carol just after a beacon of hers is on the wire: her last sign of life.
    sniffer.drain()
    sniffer.next_beacon("Carol")
    last_beacon_at = time.monotonic()
    carol.kill()
    killed_at = time.monotonic()
    seen = await_lines(
        [offline(alice, carol), offline(bob, carol)], PEER_TIMEOUT + REMOVAL_MARGIN + 5
    )
    for peer, at in zip((alice, bob), seen, strict=True):
        took = at - killed_at
        assert took < PEER_TIMEOUT + REMOVAL_MARGIN, f"{peer.name} took {took:.2f} s"
        # Not before the timeout either. Counted from that last beacon, not from the
        # kill, so that a beacon sent late on a loaded machine cannot fail the check;
        # 1 s of slack in case the peer dropped that beacon and kept the one before.
        silent = at - last_beacon_at
        assert silent > PEER_TIMEOUT - 1.0, f"{peer.name} removed Carol after {silent:.2f} s"
    assert_lists_exactly(alice, [bob], ids)
    assert_lists_exactly(bob, [alice], ids)

    # The same profile on the same port: the same identity, discovered anew.
    carol = start(
        peers, "Carol", tmp_path, discovery_port, port=carol.port, data_dir=carol.data_dir
    )
    group = [alice, bob, carol]
    await_new_lines(
        [
            discovered(alice, carol),
            discovered(bob, carol),
            discovered(carol, alice),
            discovered(carol, bob),
        ],
        EVENT_WAIT,
    )
    assert own_fingerprint(carol)[0] == ids["Carol"]
    for peer in group:
        assert_lists_exactly(peer, [o for o in group if o is not peer], ids)


def test_peer_without_discovery_is_listed_only_once_it_connects(
    tmp_path: Path, discovery_port: int, peers: list[WatchedPeer], sniffer: BeaconSniffer
) -> None:
    # About beacons: without peer exchange, which would tell Bob and Nina of each other.
    alone = ["--no-peer-exchange"]
    alice = start(peers, "Alice", tmp_path, discovery_port, extra=alone)
    bob = start(peers, "Bob", tmp_path, discovery_port, extra=alone)
    nina = start(peers, "Nina", tmp_path, None, extra=alone)
    all_discover([alice, bob])
    ids = {p.name: own_fingerprint(p)[0] for p in (alice, bob, nina)}

    # Several rounds of beacons on the port, none of them Nina's.
    counts = {"Alice": 0, "Bob": 0}
    while min(counts.values()) < 6:
        name = sniffer.next_beacon()[1].name
        assert name in counts, f"a beacon from {name}"
        counts[name] += 1
    assert_lists_exactly(alice, [bob], ids)
    assert_lists_exactly(bob, [alice], ids)
    assert_lists_exactly(nina, [], ids)

    nina.connect("127.0.0.1", alice.port)
    nina.expect_text(f"Connected to {alice.addr} (Alice)")
    alice.expect_text(f"Peer Nina connected from {nina.addr}")
    assert_lists_exactly(alice, [bob, nina], ids)
    assert_lists_exactly(nina, [alice], ids)
    assert_lists_exactly(bob, [alice], ids)  # Bob never heard of Nina

    # The session alone keeps Nina listed past the peer timeout (no beacons from her).
    with pytest.raises(pexpect.TIMEOUT):
        alice.expect_text("Nina at", timeout=PEER_TIMEOUT + REMOVAL_MARGIN)
    assert_lists_exactly(alice, [bob, nina], ids)
    assert nina.quit() == 0
    alice.expect_text(offline(alice, nina, "left")[1])
    assert_lists_exactly(alice, [bob], ids)


# --------------------------------------------------------------------------- forged beacons


def test_forged_and_replayed_beacons_change_nobodys_list(
    tmp_path: Path, discovery_port: int, peers: list[WatchedPeer], sniffer: BeaconSniffer
) -> None:
    # A 1 s interval keeps three peers on one address (and the test) well inside the
    # per-address rate limit, so every forgery reaches the signature and replay checks.
    alice, bob, carol = (
        start(peers, n, tmp_path, discovery_port, beacon_interval=1.0, verbose=True)
        for n in ("Alice", "Bob", "Carol")
    )
    group = [alice, bob, carol]
    all_discover(group)
    ids = {p.name: own_fingerprint(p)[0] for p in group}
    watchers = [alice, carol]  # they will have pinned Bob's key
    logs = {p.name: p.data_dir / "peer_chat.log" for p in watchers}

    def lists_unchanged() -> None:
        for peer in group:
            assert_lists_exactly(peer, [o for o in group if o is not peer], ids)

    def rejected(reason: str, count: int) -> None:
        for path in logs.values():
            wait_for_log(path, f"rejected: {reason}", count=count)

    # Pins come from sessions: Alice and Carol each meet Bob once.
    for peer in watchers:
        peer.connect("127.0.0.1", bob.port)
        peer.expect_text(f"Connected to {bob.addr} (Bob)")

    sniffer.drain()
    real, beacon = sniffer.next_beacon("Bob")
    signature = decode_beacon(real)[2]
    forged_port = bob.port + 1 if bob.port < 65535 else bob.port - 1

    # 1. The right format with a wrong signature: Bob's key and a signature of his,
    #    over other content (another port, a later sequence number).
    sniffer.send(
        pack_beacon(
            name="Bob",
            der=beacon.identity_der,
            signature=signature,
            port=forged_port,
            ts=time.time(),
            instance=beacon.instance,
            seq=beacon.seq + 1000,
        )
    )
    #    And a newcomer whose signature is random bytes of the right length.
    mallory = stranger()
    sniffer.send(
        pack_beacon(
            name="Mallory",
            der=mallory.public_der,
            signature=secrets.token_bytes(len(mallory.sign(b"x"))),
            port=forged_port,
            ts=time.time(),
            instance=secrets.token_bytes(16),
            seq=0,
        )
    )
    rejected("bad signature", 2)
    lists_unchanged()

    # 2. A real beacon of Bob's, sent again: Bob has beaconed since, so it is old.
    sniffer.send(real)
    rejected("replay", 1)
    lists_unchanged()

    # 3. A valid signature by a fresh key under Bob's name: listed by nobody who
    #    pinned Bob, and no warning either: a beacon is a claim anyone can make, so
    #    only a handshake may raise a key conflict. (Bob pinned no "Bob".)
    sniffer.send(
        encode_beacon(mallory, "Bob", forged_port, secrets.token_bytes(16), 0, time.time())
    )
    for path in logs.values():
        wait_for_log(path, f"{mallory.fingerprint[:8]}] is not the pinned key")
    for peer in watchers:
        assert_lists_exactly(peer, [o for o in group if o is not peer], ids)
        assert "WARNING: the key of peer" not in peer.screen()
        assert mallory.short_id not in peer.screen()

    # 4. Once Bob is gone, his last beacon replayed does not bring him back.
    sniffer.drain()
    last, _ = sniffer.next_beacon("Bob")
    bob.kill()
    await_lines([offline(p, bob) for p in watchers], PEER_TIMEOUT + REMOVAL_MARGIN + 5)
    sniffer.send(last)
    rejected("replay", 2)
    for peer in watchers:
        assert_lists_exactly(peer, [o for o in watchers if o is not peer], ids)
        with pytest.raises(pexpect.TIMEOUT):
            peer.expect_text("Discovered peer Bob", timeout=0.1)
    for peer in group:
        shown = peer.screen()
        assert "Mallory" not in shown
        if peer is not bob:  # Bob pinned no "Bob": for him the fresh key is a new peer
            assert f"Discovered peer Bob at 127.0.0.1:{forged_port}" not in shown
