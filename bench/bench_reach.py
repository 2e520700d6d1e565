"""Reach: how long peers take to list each other through a seed and peer exchange, and mDNS.

In one run, in network namespaces the bench makes (tests/netns.py; root needed):

- two subnets joined by a router: A1 and A2 on subnet A, B1 on subnet B.
  Broadcast figure: the clock starts when A2 is launched (A1 running) and
  stops when A1 and A2 have both announced each other. Seed + peer exchange
  figure: A1's user connects to A2 (option 4: peer exchange passes on the
  peers one holds sessions with); the clock starts when B1 is launched with
  `--peer A1` and stops when B1 has announced A1 and A2 and A2 has announced
  B1 (A1 lists B1 first).

mDNS alone lists nobody by itself: an mDNS record is a claim anyone can make,
and a peer never dials an address the user did not give or a handshake did
not confirm, so there is no mDNS figure.

Every clock includes the launched peer's own start-up (Python, keys loaded,
menu drawn); profiles (keys) are made before the clocks start.

    python -m bench.bench_reach [--quick]
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.harness import Row, figure_row, summarize, unavailable_row
from bench.registry import module_main
from tests.netns import Lan, Router, check_isolated, require_netns, root_links
from tests.reach_peers import HostPeer, await_met
from tests.support import open_profile

WAIT = 30.0
QUICK_RUNS = 1
RUNS = 3


@contextlib.contextmanager
def _built(*lans: Lan, routed: bool = False) -> Iterator[None]:
    before = root_links()
    try:
        for lan in lans:
            lan.build()
        if routed:
            Router(lans[0], lans[1]).build()
        check_isolated(list(lans), before)
        yield
    finally:
        for lan in reversed(lans):
            lan.destroy()


def _profiles(tmp: Path, *names: str) -> None:
    for name in names:
        (tmp / name).mkdir(mode=0o700)  # private from the start, as peer_chat makes it
        _, store = open_profile(tmp / name)
        store.close()


def subnets_once(tmp: Path) -> tuple[float, float]:
    """(broadcast inside subnet A, seed + peer exchange for B1), in seconds."""
    _profiles(tmp, "A1", "A2", "B1")
    a, b = Lan(2, "10.213.41"), Lan(1, "10.213.42")
    peers: list[HostPeer] = []
    with _built(a, b, routed=True):
        try:
            a1 = HostPeer("A1", tmp, a.hosts[0], a.addresses[0], extra=["--no-mdns"])
            peers.append(a1)
            start = time.monotonic()
            a2 = HostPeer("A2", tmp, a.hosts[1], a.addresses[1], extra=["--no-mdns"])
            peers.append(a2)
            await_met([(a1, a2), (a2, a1)], WAIT)
            broadcast = time.monotonic() - start
            a1.connect("A2", None)
            a1.expect_text(f"Connected to {a2.addr}")
            a1.expect_menu()
            start = time.monotonic()
            b1 = HostPeer(
                "B1", tmp, b.hosts[0], b.addresses[0], extra=["--no-mdns", "--peer", a1.addr]
            )
            peers.append(b1)
            await_met([(b1, a1), (a1, b1), (b1, a2), (a2, b1)], WAIT)
            seeded = time.monotonic() - start
        finally:
            for peer in peers:
                peer.close()
    return broadcast, seeded


def _row(figure: str, samples: list[float]) -> Row:
    summary = summarize(samples)
    spread = f"min {summary.minimum:.2f}, max {summary.maximum:.2f} over {summary.n} runs"
    return figure_row(figure, summary.median, "s", spread=spread)


def run(quick: bool, runs: int | None = None) -> list[Row]:
    try:
        require_netns()
    except BaseException as exc:  # pytest's skip/fail outcomes: no namespaces here
        return [unavailable_row("reach", str(exc) or type(exc).__name__)]
    count = runs if runs is not None else (QUICK_RUNS if quick else RUNS)
    broadcast: list[float] = []
    seeded: list[float] = []
    for _ in range(count):
        with tempfile.TemporaryDirectory(prefix="bench-reach-") as folder:
            b, s = subnets_once(Path(folder))
            broadcast.append(b)
            seeded.append(s)
    return [
        _row("reach: broadcast, 2 peers on one subnet list each other", broadcast),
        _row("reach: seed + peer exchange, B1's start until A1, A2, B1 list each other", seeded),
    ]


if __name__ == "__main__":
    sys.exit(module_main(run, __doc__ or "", entry="reach"))
