"""Discovery that cannot work says so, once.

A beacon that cannot be sent is tried in a network namespace the test makes,
with only loopback up: there 255.255.255.255 has no route, as on a machine
with no network, and nothing can leave. Silence is tried on loopback.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from crypto_utils import Identity
from discovery import DiscoveryService
from peerchat.events import DiscoveryBlocked, DiscoveryQuiet, DiscoveryTrouble
from peerchat.protocol.beacon import decode_beacon
from tests.support import (
    LOOPBACK_BROADCAST,
    ROOT,
    Peer,
    free_udp_port,
    in_namespace,
    loopback_only_namespace,
    strip_ansi,
)

INTERVAL = 0.1
BEACONS_AFTER = 8  # beacons that must go by with nothing more said

_names = itertools.count()


@pytest.fixture(scope="module")
def me() -> Identity:
    return Identity.generate(2048)


class Beacons:
    """The test's own socket on the discovery port: counts this service's beacons."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.sock.bind(("", port))
        self.sock.setblocking(False)

    async def from_(self, fingerprint: str, count: int) -> None:
        """Wait until `count` more beacons of `fingerprint` have gone by."""
        loop = asyncio.get_running_loop()
        seen = 0
        while seen < count:
            data = await asyncio.wait_for(loop.sock_recv(self.sock, 4096), 5)
            if decode_beacon(data)[0].fingerprint == fingerprint:
                seen += 1

    def close(self) -> None:
        self.sock.close()


def service(
    who: Identity,
    port: int,
    targets: list[str],
    troubles: list[DiscoveryTrouble],
    *,
    quiet_after: float,
) -> DiscoveryService:
    return DiscoveryService(
        identity=who,
        name="Alice",
        tcp_port=5000,
        targets=targets,
        discovery_port=port,
        interval=INTERVAL,
        on_beacon=lambda accepted: None,
        on_trouble=troubles.append,
        quiet_after=quiet_after,
    )


def test_silence_is_said_once_and_not_while_someone_is_heard(me: Identity) -> None:
    alone_port, pair_port = free_udp_port(), free_udp_port()
    alone: list[DiscoveryTrouble] = []
    paired: list[DiscoveryTrouble] = []

    async def scenario() -> None:
        other = Identity.generate(2048)
        taps = [Beacons(alone_port), Beacons(pair_port)]
        services = [
            service(me, alone_port, [LOOPBACK_BROADCAST], alone, quiet_after=0.3),
            service(me, pair_port, [LOOPBACK_BROADCAST], paired, quiet_after=0.3),
            service(other, pair_port, [LOOPBACK_BROADCAST], [], quiet_after=0.3),
        ]
        try:
            for s in services:
                await s.start()
            # Well past the quiet time: a beacon every 0.1 s, so 0.3 s is 3 of them.
            await taps[0].from_(me.fingerprint, 3 + BEACONS_AFTER)
            await taps[1].from_(me.fingerprint, 3 + BEACONS_AFTER)
        finally:
            for s in services:
                s.close()
            for t in taps:
                t.close()

    asyncio.run(scenario())
    assert alone == [DiscoveryQuiet(alone_port, 0.3)]
    assert paired == []


# -- no route for broadcast: in a namespace of the test's own ---------------------


@pytest.fixture
def bare_namespace() -> Iterator[str]:
    """A network namespace with only loopback up: broadcast has no route there."""
    with loopback_only_namespace() as name:
        if name is None:
            pytest.skip("cannot create a network namespace (needs root and iproute2)")
        yield name


PROBE = """
import asyncio, sys
from crypto_utils import Identity
from tests.test_discovery_trouble import Beacons, service

async def main() -> None:
    me = Identity.generate(2048)
    port = int(sys.argv[1])
    troubles = []
    beacons = Beacons(port)
    # One target without a route, one that works (and lets the beacons be counted).
    s = service(me, port, ["255.255.255.255", "127.255.255.255"], troubles, quiet_after=3600)
    try:
        await s.start()
        await beacons.from_(me.fingerprint, 1 + int(sys.argv[2]))
    finally:
        s.close()
        beacons.close()
    for t in troubles:
        print(repr(t))

asyncio.run(main())
"""


def test_a_beacon_that_cannot_be_sent_is_said_once(bare_namespace: str) -> None:
    port = 54545
    command = [sys.executable, "-c", PROBE, str(port), str(BEACONS_AFTER)]
    probe = subprocess.run(
        ["ip", "netns", "exec", bare_namespace, *command],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        timeout=60,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    blocked = DiscoveryBlocked("255.255.255.255", port, "Network is unreachable")
    assert probe.stdout.splitlines() == [repr(blocked)]


@pytest.mark.slow
def test_the_user_is_told_once_when_discovery_cannot_broadcast(
    bare_namespace: str, tmp_path: Path
) -> None:
    peer = Peer(
        "Alice",
        tmp_path,
        54545,  # the program's defaults, as a user starts it: only this namespace hears
        broadcast=None,
        beacon_interval=0.2,
        launch=in_namespace(bare_namespace),
    )
    try:
        line = (
            "Discovery: cannot broadcast to 255.255.255.255:54545 (Network is unreachable); "
            "peers can still be reached by address"
        )
        peer.expect_text(line)
        for _ in range(3):  # beacons keep failing meanwhile (every 0.2 s)
            assert peer.peers_table() == ""
        peer.send_to("127.0.0.1", "anyone?", port=peer.port)  # takes its own time
        peer.expect_text("this peer's own address")
        peer.expect_menu()
        assert strip_ansi(peer.screen()).count("Discovery: ") == 1
        assert peer.quit() == 0
    finally:
        peer.close()
