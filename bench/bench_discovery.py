"""Discovery: time until N peers started together all list each other.

N DiscoveryService instances (N = 10 and 50), each with its own identity, run
in one process and one event loop on a free UDP port and broadcast to the
loopback broadcast address 127.255.255.255 only. Each one answers a newcomer
with announce_soon(), as the node does. The clock starts before the first
instance starts and stops when every instance has accepted a beacon from every
other one. The baseline is the beacon interval (the default, 5 s): without the
start beacon and the reply to newcomers, peers would wait up to one interval.

All instances share one source address here (127.0.0.1), while on a LAN each
peer has its own. So the figures use a filter whose per-address budget is as
large as the global one (BEACON_VERIFY_GLOBAL_RATE, unchanged); one extra row
shows 10 peers behind one address with the default per-address budget, which
is what several peers on one host get.

Generating 50 RSA keys is slow, so the bench uses 2048-bit identities, cached
under bench/.cache/ (peer_chat itself creates 3072-bit keys; a 3072-bit
signature check costs ~0.1 ms instead of ~0.06 ms).

    python -m bench.bench_discovery [--quick]
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from bench.harness import Row, figure_row, summarize
from bench.registry import module_main
from crypto_utils import Identity
from discovery import DiscoveryService
from peerchat.limits import BEACON_VERIFY_GLOBAL_RATE
from peerchat.protocol.beacon import BeaconAccepted, BeaconFilter

CACHE_DIR = Path(__file__).resolve().parent / ".cache" / "discovery-identities-2048"
LOOPBACK_BROADCAST = "127.255.255.255"
INTERVAL = 5.0  # the default --beacon-interval
KEY_BITS = 2048
TIMEOUT = 4 * INTERVAL  # a run that has not converged by then has failed


def identities(count: int, cache_dir: Path = CACHE_DIR) -> list[Identity]:
    """`count` distinct identities, generated once and kept as PEM files."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    found: list[Identity] = []
    for i in range(count):
        path = cache_dir / f"{i:03d}.pem"
        key: RSAPrivateKey | None = None
        if path.exists():
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if isinstance(loaded, RSAPrivateKey):
                key = loaded
        if key is None:
            key = Identity.generate(KEY_BITS).private_key
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            os.replace(tmp, path)
        found.append(Identity.from_private_key(key))
    return found


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


async def _time_to_list_each_other(
    ids: list[Identity], *, interval: float, one_address_per_peer: bool
) -> float:
    port = free_udp_port()
    everyone = {identity.fingerprint for identity in ids}
    known: dict[str, set[str]] = {fp: set() for fp in everyone}
    complete = 0
    done = asyncio.Event()
    services: dict[str, DiscoveryService] = {}

    def callback(own: str) -> Callable[[BeaconAccepted], None]:
        def on_beacon(accepted: BeaconAccepted) -> None:
            nonlocal complete
            seen = known[own]
            if accepted.beacon.fingerprint in seen:
                return
            seen.add(accepted.beacon.fingerprint)
            if accepted.new_instance:
                services[own].announce_soon()  # as the node answers a newcomer
            if len(seen) == len(everyone) - 1:
                complete += 1
                if complete == len(everyone):
                    done.set()

        return on_beacon

    for index, identity in enumerate(ids):
        fp = identity.fingerprint
        beacon_filter = (
            BeaconFilter(fp, rate=BEACON_VERIFY_GLOBAL_RATE, burst=BEACON_VERIFY_GLOBAL_RATE)
            if one_address_per_peer
            else BeaconFilter(fp)
        )
        services[fp] = DiscoveryService(
            identity=identity,
            name=f"peer{index}",
            tcp_port=20000 + index,
            targets=[LOOPBACK_BROADCAST],
            discovery_port=port,
            interval=interval,
            on_beacon=callback(fp),
            beacon_filter=beacon_filter,
        )
    started = time.perf_counter()
    try:
        for service in services.values():
            await service.start()
        await asyncio.wait_for(done.wait(), TIMEOUT)
        return time.perf_counter() - started
    except TimeoutError:
        missing = sum(len(everyone) - 1 - len(seen) for seen in known.values())
        raise RuntimeError(
            f"{len(ids)} peers did not all list each other within {TIMEOUT:g} s "
            f"({missing} sightings missing)"
        ) from None
    finally:
        for service in services.values():
            service.close()


def measure(
    count: int, runs: int, *, interval: float = INTERVAL, one_address_per_peer: bool = True
) -> list[float]:
    ids = identities(count)
    return [
        asyncio.run(
            _time_to_list_each_other(
                ids, interval=interval, one_address_per_peer=one_address_per_peer
            )
        )
        for _ in range(runs)
    ]


def run(quick: bool) -> list[Row]:
    runs = 3 if quick else 7
    rows: list[Row] = []
    cases = [
        (10, True, "10 peers list each other"),
        (50, True, "50 peers list each other"),
        (10, False, "10 peers behind one address (default per-address limit) list each other"),
    ]
    for count, per_peer, label in cases:
        summary = summarize(measure(count, runs, one_address_per_peer=per_peer))
        rows.append(
            figure_row(
                f"discovery: {label}" + (" (quick)" if quick else ""),
                summary.median,
                "s",
                baseline=INTERVAL,
                baseline_unit="s",
                spread=summary.spread(),
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    return module_main(run, "discovery convergence on loopback", argv, entry="discovery")


if __name__ == "__main__":
    sys.exit(main())
