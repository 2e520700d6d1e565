"""A real peer under connection floods: legitimate latency, flood rate and memory, per kind.

A real peer_chat process (piped standard input, --bind 127.0.0.1, no
discovery) listens on 127.0.0.1. This process is a legitimate peer: it
completes the handshake with channel.SecureChannel and a real identity, then
sends one chat message at a time and times it until the acknowledgement comes
back (the peer stores the message, then acknowledges it). The flood is another
process (bench/programs/flood.py) that keeps 32 connections in flight, each
from the next address of a loopback block (127.N.0.0/16) as from an attacker
with many addresses, so that the peer does the key exchange of every "first"
message instead of refusing an address whose handshakes keep failing (that
defence is bench_junk_flood's), and opens the next as soon as one ends. Kinds:

- garbage: random bytes, until the peer closes the connection (the cheapest
  rejection: a random length prefix is over the handshake limit);
- valid first handshake messages: 36 bytes made by the project's own Noise
  code, so the peer does its key exchange and answers with message 2 (the
  flood closes once message 2 is in);
- junk after a valid first message: the same, then a third message of random
  bytes in the same write, which the peer must try to decrypt.

For each kind, runs alternate: one without the flood (the baseline), one with
it, so both see the same machine in the same minute; each figure is the median
over runs of the per-run median or p99, with its spread. The flood's rate is
the connections per second that ran their course. Memory is measured per kind
in a phase of its own, with no other traffic: the peer's resident memory
settled before the flood, its peak during the flood (the kernel's high-water
mark, reset just before), and its resident memory once the peer has closed
every flood connection again.

    python -m bench.bench_flood [--quick]
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.clients import BlockingClient
from bench.harness import (
    Row,
    figure_row,
    reporting_child,
    round_trip_rows,
    rss_kib,
    summarize,
)
from bench.peers import ROOT, PeerProcess, child_env, peer_process, peer_profile, program
from bench.registry import module_main
from crypto_utils import KeyManager
from peerchat.protocol.channel import Credentials

SOCKET_TIMEOUT = 30.0  # no single wait of this benchmark may be longer
IN_FLIGHT = 32  # flood connections open at once (half the per-address limit)
TEXT = "x" * 64


@dataclass(frozen=True)
class Kind:
    name: str  # the flood program's kind
    label: str  # how the rows name the flood
    rate_label: str  # how the rows name its rate
    connections: str  # how the memory row names its connections


GARBAGE = Kind(
    "garbage",
    "a garbage connection flood",
    f"garbage connections opened and closed during the flood ({IN_FLIGHT} in flight)",
    "garbage connections",
)
FIRST = Kind(
    "first",
    "a flood of valid first handshake messages",
    f"valid first handshake messages answered by the peer per second ({IN_FLIGHT} in flight)",
    "connections sending a valid first handshake message",
)
JUNK_AFTER_FIRST = Kind(
    "junk-after-first",
    "a flood of junk after a valid first handshake message",
    f"connections with junk after a valid first message, answered and closed per second "
    f"({IN_FLIGHT} in flight)",
    "connections sending junk after a valid first handshake message",
)
KINDS = (GARBAGE, FIRST, JUNK_AFTER_FIRST)


@dataclass(frozen=True)
class Sizes:
    runs: int  # runs of each kind (baseline, flooded), alternating, for the garbage flood
    work_runs: int  # the same for the floods that cost the peer key-exchange work
    seconds: float  # length of one run: round trips one after the other, for this long
    memory_seconds: float  # length of the memory phase of each kind
    max_messages: int  # ... but never more than this many in one run
    warmup: int  # untimed round trips before the first run
    max_seconds: float  # time budget of all runs of one kind together


FULL = Sizes(
    runs=7,
    work_runs=3,
    seconds=3.0,
    memory_seconds=2.0,
    max_messages=50_000,
    warmup=200,
    max_seconds=120.0,
)
QUICK = Sizes(
    runs=3,
    work_runs=2,
    seconds=1.0,
    memory_seconds=1.0,
    max_messages=20_000,
    warmup=50,
    max_seconds=30.0,
)


# --------------------------------------------------------------------------- the flood


@dataclass
class FloodCount:
    made: int = 0
    finished: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.finished / self.seconds if self.seconds > 0 else 0.0


@contextlib.contextmanager
def flooding(
    port: int, source: str, kind: str, max_seconds: float, in_flight: int = IN_FLIGHT
) -> Iterator[FloodCount]:
    """A flood process for the duration of the block; its counts are filled in after it."""
    argv = program("flood", port, source, kind, max_seconds, in_flight)
    counts = FloodCount()
    with reporting_child("the flood", argv, ROOT, SOCKET_TIMEOUT, child_env()) as report:
        yield counts
    counts.made, counts.finished, counts.seconds = int(report[0]), int(report[1]), float(report[2])


# --------------------------------------------------------------------------- the peer's memory


def socket_count(pid: int) -> int:
    """Sockets the process has open."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed while we looked
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                count += 1
    return count


def wait_sockets_closed(pid: int, at_most: int, timeout: float) -> None:
    """Until the peer holds no more sockets than before the flood (it closed every one)."""
    deadline = time.monotonic() + timeout
    while socket_count(pid) > at_most:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the peer still holds {socket_count(pid)} sockets {timeout:.0f} s after "
                f"the flood ({at_most} before it)"
            )
        time.sleep(0.05)


def reset_peak_rss(pid: int) -> bool:
    """Reset the kernel's high-water mark of the process's RSS (VmHWM); False if not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
    except OSError:
        return False
    return True


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for process {pid}")


@dataclass(frozen=True)
class Memory:
    connections: int
    before_kib: int
    peak_kib: int | None  # None where the high-water mark could not be reset
    after_kib: int


def measure_memory(peer: PeerProcess, kind: Kind, source: str, seconds: float) -> Memory:
    """The peer's RSS settled before, at its peak during, and settled after one flood."""
    sockets = socket_count(peer.pid)
    before = rss_kib(peer.pid)
    resettable = reset_peak_rss(peer.pid)
    with flooding(peer.port, source, kind.name, seconds * 4) as counts:
        time.sleep(seconds)  # the flood's length: nothing to wait for but time
    peak = peak_rss_kib(peer.pid) if resettable else None
    wait_sockets_closed(peer.pid, sockets, SOCKET_TIMEOUT)
    return Memory(counts.made, before, peak, rss_kib(peer.pid))


# --------------------------------------------------------------------------- the figures


@dataclass
class KindResults:
    baseline_runs: list[list[float]] = field(default_factory=list)
    flood_runs: list[list[float]] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    made: int = 0
    finished: int = 0


def measure_kind(
    peer: PeerProcess,
    client: BlockingClient,
    kind: Kind,
    runs: int,
    sizes: Sizes,
    first_source: int,
) -> KindResults:
    results = KindResults()
    deadline = time.monotonic() + sizes.max_seconds
    for index in range(runs):
        results.baseline_runs.append(client.round_trips(sizes.seconds, sizes.max_messages))
        # A fresh block of source addresses per run: each connection from an address
        # of its own, so the key exchange work is done, not refused by the per-address
        # budget of failed handshakes (bench_junk_flood measures that defence).
        source = f"127.{first_source + index}.0.0/16"
        with flooding(peer.port, source, kind.name, sizes.max_seconds) as counts:
            results.flood_runs.append(client.round_trips(sizes.seconds, sizes.max_messages))
        results.made += counts.made
        results.finished += counts.finished
        results.rates.append(counts.rate)
        if time.monotonic() > deadline:  # bounded in time as in count
            break
    # Garbage always ends with the peer closing: anything less means a broken flood. The
    # other kinds may be cut short by a peer that defends itself; their rate says so.
    if kind is GARBAGE and results.finished < results.made - IN_FLIGHT * len(results.flood_runs):
        raise RuntimeError(
            f"only {results.finished} of {results.made} garbage connections were closed"
        )
    if results.made == 0:
        raise RuntimeError(f"the {kind.name} flood opened no connection")
    return results


def kind_rows(kind: Kind, results: KindResults, memory: Memory) -> list[Row]:
    rate = summarize(results.rates)
    label = f"legitimate message round trip (to ack) under {kind.label}"
    growth = (memory.after_kib - memory.before_kib) / 1024
    peak = (
        f"peak during the flood +{(memory.peak_kib - memory.before_kib) / 1024:.2f} MiB"
        if memory.peak_kib is not None
        else "peak not measured (VmHWM could not be reset)"
    )
    before = f"RSS {memory.before_kib / 1024:.1f} MiB before, {peak}"
    return [
        *round_trip_rows(label, results.baseline_runs, results.flood_runs),
        figure_row(
            kind.rate_label,
            rate.median,
            "/s",
            spread=f"{rate.spread()}; {results.finished:,} of {results.made:,} ran their course",
        ),
        figure_row(
            f"peer memory growth over {memory.connections:,} {kind.connections}",
            growth,
            "MiB",
            spread=before,
        ),
    ]


def run(quick: bool, *, sizes: Sizes | None = None) -> list[Row]:
    sizes = sizes or (QUICK if quick else FULL)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp:
        identity = KeyManager(Path(tmp) / "client").load_or_create_identity()
        with peer_process("Bench", peer_profile("Bench", Path(tmp))) as peer:
            client = BlockingClient(Credentials.create(identity, "Client", 1), peer.address, TEXT)
            try:
                for _ in range(sizes.warmup):
                    client.round_trip()
                source = 2
                for kind in KINDS:
                    runs = sizes.runs if kind is GARBAGE else sizes.work_runs
                    results = measure_kind(peer, client, kind, runs, sizes, source)
                    source += runs
                    memory = measure_memory(
                        peer, kind, f"127.{source}.0.0/16", sizes.memory_seconds
                    )
                    source += 1
                    rows += kind_rows(kind, results, memory)
            finally:
                client.close()
            if peer.proc.poll() is not None:
                raise RuntimeError(f"the peer exited during the flood ({peer.proc.returncode})")
    return rows


def main(argv: list[str] | None = None) -> int:
    return module_main(run, __doc__ or "connection floods", argv, entry="flood")


if __name__ == "__main__":
    sys.exit(main())
