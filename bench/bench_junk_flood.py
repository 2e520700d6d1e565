"""A legitimate round trip while a peer is flooded with handshakes carrying junk identity keys.

A real peer_chat process (piped standard input, --bind 127.0.0.1, no
discovery) listens on 127.0.0.1. This process holds one legitimate session
(channel.SecureChannel, a real identity) and times one chat message at a time
to its acknowledgement. The flood (bench/programs/flood.py, kind
junk-identity) completes the Noise handshake with the project's own channel
code, but its identity is junk: an RSA-3072 key with a 3071-bit public
exponent and a random signature, which the peer refuses by parsing, after the
key exchange of messages 2 and 3. The flood keeps 16 connections in flight,
each run from a loopback address of its own (as an attacker on a LAN has one
address), so each run meets a fresh failed-handshake budget: the first
handshakes cost the peer a key exchange each, then the address is refused
before a byte is read (and held open a moment) until its budget refills.

Runs alternate, without the flood (the baseline) and with it, in one run of
the bench; each figure is the median over runs of the per-run median or p99.
Beside them: the peer's CPU time per second of wall time (100% is one core)
during the flooded runs and during the baseline runs; the junk handshakes per
second that got as far as message 3 (each cost the peer a key exchange), and
the connections per second the peer refused before any (the flood's
connections that did not reach message 3; those still open when a run ends
count among them).

    python -m bench.bench_junk_flood [--quick]
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.bench_flood import flooding
from bench.clients import BlockingClient
from bench.harness import Row, figure_row, round_trip_rows, summarize
from bench.peers import peer_process, peer_profile, process_cpu_seconds
from bench.registry import module_main
from crypto_utils import KeyManager
from peerchat.protocol.channel import Credentials

IN_FLIGHT = 16  # junk handshakes in flight (under the per-address and pending limits)
TEXT = "x" * 64
FIRST_SOURCE = 100  # flood from 127.0.0.100, 127.0.0.101, ...


@dataclass(frozen=True)
class Sizes:
    runs: int  # runs of each kind (baseline, flooded), alternating
    seconds: float  # length of one run: round trips one after the other, for this long
    max_messages: int  # ... but never more than this many in one run
    warmup: int  # untimed round trips before the first run
    max_seconds: float  # time budget of all runs together


FULL = Sizes(runs=5, seconds=2.0, max_messages=50_000, warmup=200, max_seconds=60.0)
QUICK = Sizes(runs=2, seconds=1.0, max_messages=20_000, warmup=50, max_seconds=20.0)


def run(quick: bool, *, sizes: Sizes | None = None) -> list[Row]:
    sizes = sizes or (QUICK if quick else FULL)
    baseline_runs: list[list[float]] = []
    flood_runs: list[list[float]] = []
    baseline_cpu: list[float] = []  # percent of one core
    flood_cpu: list[float] = []
    worked: list[float] = []  # junk handshakes per second that reached message 3
    early: list[float] = []  # connections per second refused before message 2
    made = finished = 0  # flood connections opened; of them, refused after message 3
    with tempfile.TemporaryDirectory(prefix="bench-junk-flood-") as tmp:
        identity = KeyManager(Path(tmp) / "client").load_or_create_identity()
        with peer_process("Bench", peer_profile("Bench", Path(tmp))) as peer:
            client = BlockingClient(Credentials.create(identity, "Client", 1), peer.address, TEXT)

            def timed_run(cpu: list[float]) -> list[float]:
                cpu0, wall0 = process_cpu_seconds(peer.pid), time.monotonic()
                samples = client.round_trips(sizes.seconds, sizes.max_messages)
                cpu.append(
                    100 * (process_cpu_seconds(peer.pid) - cpu0) / (time.monotonic() - wall0)
                )
                return samples

            try:
                for _ in range(sizes.warmup):
                    client.round_trip()
                deadline = time.monotonic() + sizes.max_seconds
                for index in range(sizes.runs):
                    baseline_runs.append(timed_run(baseline_cpu))
                    source = f"127.0.0.{FIRST_SOURCE + index}"
                    with flooding(
                        peer.port, source, "junk-identity", sizes.max_seconds, IN_FLIGHT
                    ) as counts:
                        flood_runs.append(timed_run(flood_cpu))
                    worked.append(counts.rate)
                    seconds = counts.seconds or 1.0
                    early.append((counts.made - counts.finished) / seconds)
                    made += counts.made
                    finished += counts.finished
                    if counts.made == 0:
                        raise RuntimeError("the junk identity flood opened no connection")
                    if time.monotonic() > deadline:  # bounded in time as in count
                        break
            finally:
                client.close()
            if peer.proc.poll() is not None:
                raise RuntimeError(f"the peer exited during the flood ({peer.proc.returncode})")

    cpu, cpu_base = summarize(flood_cpu), summarize(baseline_cpu)
    rate, early_rate = summarize(worked), summarize(early)
    label = "legitimate message round trip (to ack) under a handshake flood with junk identity keys"
    return [
        *round_trip_rows(label, baseline_runs, flood_runs),
        figure_row(
            "peer CPU during the junk identity key flood, % of one core (baseline: without it)",
            cpu.median,
            "%",
            baseline=cpu_base.median,
            baseline_unit="%",
            spread=cpu.spread(),
        ),
        figure_row(
            f"junk identity handshakes that cost the peer a key exchange, per second "
            f"({IN_FLIGHT} in flight)",
            rate.median,
            "/s",
            spread=f"{rate.spread()}; {finished:,} of {made:,} connections reached message 3",
        ),
        figure_row(
            "junk identity connections refused before any key exchange, per second",
            early_rate.median,
            "/s",
            spread=early_rate.spread(),
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    return module_main(run, __doc__ or "junk identity key flood", argv, entry="junkflood")


if __name__ == "__main__":
    sys.exit(main())
