"""Memory of a running peer holding many authenticated sessions, against a bare asyncio server.

Peer B is a real `peer_chat.py` process on 127.0.0.1 without discovery. This
process opens N sessions to it (channel.SecureChannel over asyncio, a distinct
2048-bit identity each, cached under bench/.cache/), in waves of one source
address each (127.0.0.2, 127.0.0.3, ...: under the per-address and
pending-handshake limits), holds them long enough for B to ping them, and
samples B's resident memory. The baseline is a bare asyncio server
(bench/programs/bare_server.py) holding as many plain TCP connections.

    python -m bench.bench_sessions [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.clients import ChannelClient, handshake_times, open_client, session_identities
from bench.harness import (
    Row,
    Summary,
    figure_row,
    read_line,
    rss_kib,
    stop_child,
    summarize,
)
from bench.peers import (
    LOOPBACK,
    ROOT,
    STEP_TIMEOUT,
    Budget,
    PeerProcess,
    child_env,
    peer_process,
    peer_profile,
    program,
    raise_fd_limit,
)
from bench.registry import module_main
from crypto_utils import Identity
from peerchat.limits import MAX_CONNECTIONS_PER_ADDRESS, MAX_PENDING_PER_ADDRESS
from peerchat.protocol.channel import Credentials
from tests.support import free_tcp_port

TARGET_SESSIONS = 1_000  # what the target asks for; fewer held cannot meet it


@dataclass(frozen=True)
class Sizes:
    sessions: int  # concurrent sessions held by B
    sessions_per_address: int  # within the per-address limits, and all pending at once
    hold_seconds: float  # how long the sessions are held (B pings them after 5 s of silence)
    max_seconds: float  # time budget of one wave loop (times four)


# A wave opens all of its handshakes at once: more than MAX_PENDING_PER_ADDRESS from one
# address would drop the oldest ones (the peer's defence against a handshake flood).
PER_ADDRESS = min(MAX_PENDING_PER_ADDRESS, MAX_CONNECTIONS_PER_ADDRESS)
FULL = Sizes(sessions=1_000, sessions_per_address=PER_ADDRESS, hold_seconds=7.0, max_seconds=30.0)
QUICK = Sizes(sessions=100, sessions_per_address=PER_ADDRESS, hold_seconds=0.5, max_seconds=5.0)


@dataclass(frozen=True)
class MemoryFigures:
    sessions: int
    per_session_kib: Summary
    idle_kib: int
    held_kib: int
    pings_answered: int
    bare_per_connection_kib: Summary
    bare_idle_kib: int


@contextlib.contextmanager
def bare_server() -> Iterator[tuple[subprocess.Popen[bytes], tuple[str, int]]]:
    """A bare asyncio server process that accepts and holds TCP connections."""
    proc = subprocess.Popen(
        program("bare_server"),
        cwd=ROOT,
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = read_line(proc.stdout, STEP_TIMEOUT, error="bare server did not start")
        if not line.isdigit():
            raise RuntimeError("bare server did not start")
        yield proc, (LOOPBACK, int(line))
    finally:
        stop_child(proc, 5)


def source_addresses(count: int, per_address: int) -> list[str]:
    """127.0.0.2, 127.0.0.3, ...: `per_address` connections from each, `count` in all."""
    hosts = (count + per_address - 1) // per_address
    if hosts > 250:
        raise ValueError("too many connections for 127.0.0.2..127.0.0.251")
    return [f"127.0.0.{2 + i // per_address}" for i in range(count)]


async def _settled_rss(pid: int, *, samples: int, interval: float) -> list[int]:
    found = []
    for _ in range(samples):
        await asyncio.sleep(interval)
        found.append(rss_kib(pid))
    return found


async def hold_sessions(
    peer: PeerProcess, identities: Sequence[Identity], sizes: Sizes
) -> tuple[int, list[int], int]:
    """(idle RSS, RSS samples with the sessions open, pings answered), in KiB."""
    warm = Credentials.create(identities[-1], "warmup", free_tcp_port())
    await handshake_times(warm, peer.address, count=3, max_seconds=sizes.max_seconds)
    idle = min(await _settled_rss(peer.pid, samples=3, interval=0.2))
    credentials = [
        Credentials.create(identity, f"s{i:04d}", 1024 + i)
        for i, identity in enumerate(identities[: sizes.sessions])
    ]
    sources = source_addresses(sizes.sessions, sizes.sessions_per_address)
    clients: list[ChannelClient] = []
    budget = Budget(sizes.max_seconds * 4)
    try:
        # Waves of one source address each: under the per-address limit and the
        # pending-handshake limit, and each wave is answered before the next.
        for first in range(0, sizes.sessions, sizes.sessions_per_address):
            if budget.exhausted():
                raise RuntimeError(f"only {len(clients)} sessions opened in time")
            wave = range(first, min(first + sizes.sessions_per_address, sizes.sessions))
            results = await asyncio.gather(
                *(open_client(credentials[i], peer.address, source=sources[i]) for i in wave),
                return_exceptions=True,
            )
            clients += [r for r in results if isinstance(r, ChannelClient)]
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                raise RuntimeError(f"{len(failed)} sessions of a wave failed: {failed[0]}")
        samples = max(3, int(sizes.hold_seconds / 0.5))
        held = await _settled_rss(peer.pid, samples=samples, interval=sizes.hold_seconds / samples)
        dead = sum(1 for client in clients if not client.alive)
        if dead:
            raise RuntimeError(f"{dead} of {len(clients)} sessions were dropped while held")
        return idle, held, sum(client.pinged for client in clients)
    finally:
        for client in clients:
            if client.transport is not None:
                client.transport.abort()


async def hold_bare_connections(
    pid: int, address: tuple[str, int], sizes: Sizes
) -> tuple[int, list[int]]:
    """(idle RSS, RSS samples) of the bare server holding `sizes.sessions` connections."""
    writers: list[asyncio.StreamWriter] = []

    async def one() -> None:
        reader, writer = await asyncio.open_connection(*address)
        writers.append(writer)
        await reader.readexactly(1)

    try:
        for _ in range(3):
            await one()
        for writer in writers:
            writer.close()
        writers.clear()
        idle = min(await _settled_rss(pid, samples=3, interval=0.2))
        for first in range(0, sizes.sessions, sizes.sessions_per_address):
            count = min(sizes.sessions_per_address, sizes.sessions - first)
            await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count))), STEP_TIMEOUT)
        held = await _settled_rss(pid, samples=3, interval=0.2)
        return idle, held
    finally:
        for writer in writers:
            writer.close()


def measure_memory(sizes: Sizes, tmp: Path, identities: Sequence[Identity]) -> MemoryFigures:
    raise_fd_limit(4 * sizes.sessions + 256)
    with peer_process("B2", peer_profile("B", tmp)) as peer:
        idle, held, pings = asyncio.run(hold_sessions(peer, identities, sizes))
    with bare_server() as (proc, address):
        bare_idle, bare_held = asyncio.run(hold_bare_connections(proc.pid, address, sizes))
    n = sizes.sessions
    return MemoryFigures(
        sessions=n,
        per_session_kib=summarize([(rss - idle) / n for rss in held]),
        idle_kib=idle,
        held_kib=int(statistics.median(held)),
        pings_answered=pings,
        bare_per_connection_kib=summarize([(rss - bare_idle) / n for rss in bare_held]),
        bare_idle_kib=bare_idle,
    )


def memory_rows(figures: MemoryFigures) -> list[Row]:
    per, bare = figures.per_session_kib, figures.bare_per_connection_kib
    target = "1,000 sessions, at most 64 KiB each"
    return [
        figure_row(
            f"RSS per session, {figures.sessions:,} authenticated sessions held by one peer "
            f"(baseline: bare asyncio TCP connection)",
            per.median,
            "KiB",
            baseline=bare.median,
            baseline_unit="KiB",
            spread=per.spread(),
            # Only this module knows how many were held: fewer cannot meet the target.
            target=target,
            holds=figures.sessions >= TARGET_SESSIONS and per.median <= 64.0,
        ),
        figure_row(
            f"peer RSS idle -> with {figures.sessions:,} sessions "
            f"({figures.pings_answered} idle pings answered while held)",
            figures.held_kib / 1024,
            "MiB",
            baseline=figures.idle_kib / 1024,
            baseline_unit="MiB",
            spread=f"bare asyncio server idle {figures.bare_idle_kib / 1024:.1f} MiB",
        ),
    ]


def run(quick: bool, *, sizes: Sizes | None = None) -> list[Row]:
    sizes = sizes or (QUICK if quick else FULL)
    with tempfile.TemporaryDirectory(prefix="bench-sessions-") as tmp:
        identities = session_identities(sizes.sessions + 1)
        return memory_rows(measure_memory(sizes, Path(tmp), identities))


def main(argv: list[str] | None = None) -> int:
    return module_main(run, __doc__ or "sessions held by one peer", argv, entry="sessions")


if __name__ == "__main__":
    sys.exit(main())
