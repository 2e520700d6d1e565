"""Peers in test namespaces for reach tests and benches: start them, await their news.

A HostPeer is a peer_chat process inside one host namespace (tests/netns.py)
with the program's default broadcast address, which only a namespace the
test made may use.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from pathlib import Path

import pexpect

from peerchat.limits import DISCOVERY_PORT
from tests.support import WatchedPeer, peer_rows, strip_ansi

PORT = 5000
BEACON_INTERVAL = 0.5
PEER_TIMEOUT = 3.0


class HostPeer(WatchedPeer):
    """A peer_chat process inside one host's namespace, with the default broadcast address."""

    def __init__(
        self,
        name: str,
        tmp: Path,
        namespace: str,
        address: str,
        *,
        extra: Sequence[str] = (),
        discovery_port: int = DISCOVERY_PORT,
        beacon_interval: float = BEACON_INTERVAL,
    ) -> None:
        super().__init__(
            name,
            tmp,
            discovery_port,
            port=PORT,
            host=address,
            broadcast=None,
            beacon_interval=beacon_interval,
            peer_timeout=PEER_TIMEOUT,
            extra=["-v", *extra],
            launch=lambda command: ["ip", "netns", "exec", namespace, *command],
        )


def found(peer: HostPeer, other: HostPeer) -> tuple[HostPeer, str]:
    return peer, f"Discovered peer {other.name} at {other.addr}"


def await_met(pairs: Sequence[tuple[HostPeer, HostPeer]], timeout: float) -> None:
    """Wait until each peer announced the other: discovered it, or was connected to by it.

    Two peers that learn of each other by peer exchange may both dial; the one
    that answers says the other connected (as with any peer that connects).
    """
    deadline = time.monotonic() + timeout
    pending = list(pairs)
    while pending:
        for peer, other in list(pending):
            with contextlib.suppress(pexpect.TIMEOUT):
                peer.child.expect(pexpect.TIMEOUT, timeout=0.02)  # read what is there
            screen = strip_ansi(peer.screen())
            texts = (
                f"Discovered peer {other.name} at {other.addr}",
                f"Peer {other.name} connected from {other.addr}",
            )
            if any(text in screen for text in texts):
                pending.remove((peer, other))
        if pending and time.monotonic() > deadline:
            missing = ", ".join(f"{p.name} of {o.name}" for p, o in pending)
            raise AssertionError(f"not announced within {timeout} s: {missing}")


def listed(peer: HostPeer) -> dict[str, str]:
    """Option 2 as {name: address}."""
    return {row.name: row.address for row in peer_rows(peer.peers_table())}
