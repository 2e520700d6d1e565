"""Messages between two running peers over loopback: latency, throughput, CPU, handshake.

Peer B is a real `peer_chat.py` process (piped standard input kept open,
--no-discovery, --bind 127.0.0.1). Peer A is a Node in this process, built as
peer_chat.run() builds one. The handshake figure drives channel.SecureChannel
over asyncio from this process. Only 127.0.0.0/8 is ever used.

Figures, each beside a baseline measured in the same run (interleaved with the
figure's own runs):

- send to acknowledgement of one chat message, stored on both sides
  (Node.send_to_peer returns DELIVERED only after B committed it, acknowledged
  it and A marked it delivered): median and p99, vs a raw TCP echo round trip;
  and the same median and p99 against the floor of the design;
- acknowledged, stored messages per second on one session, pipelined
  (Node.submit of N, then wait_delivered), vs raw TCP echo throughput, and
  against the floor of the design's own pipelined rate;
- the floor of the design: a call from this thread into an event-loop thread
  that sends to another asyncio process and awaits its echo (send_to_peer
  minus crypto, storage and bookkeeping);
- CPU time per message of A's network thread (baseline: B's whole process),
  sequential and pipelined;
- handshake: TCP connect, Noise XX with identities, first frame answered (a
  Ping and B's Pong), vs a bare TCP connect.

A and B use 3072-bit keys made by KeyManager, the handshake client a 2048-bit
one; all are generated once and kept under bench/.cache/.

    python -m bench.bench_messages [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.baselines import connect_times, echo_round_trips, echo_server, echo_throughput
from bench.clients import handshake_times, session_identities
from bench.harness import (
    Row,
    Summary,
    figure_row,
    read_line,
    stop_child,
    summarize,
    summarize_runs,
)
from bench.peers import (
    LOOPBACK,
    ROOT,
    STEP_TIMEOUT,
    TEXT,
    Budget,
    LocalPeer,
    child_env,
    local_peer,
    peer_process,
    peer_profile,
    process_cpu_seconds,
    program,
    stored_incoming,
)
from bench.registry import module_main
from crypto_utils import Identity
from peerchat.protocol.channel import Credentials
from tests.support import free_tcp_port

ECHO_SIZE = len(TEXT.encode())


@dataclass(frozen=True)
class Sizes:
    runs: int  # repeated runs per figure
    sends: int  # sequential sends per latency run
    warmup_sends: int
    pipelined: int  # messages per throughput run (under MAX_QUEUED_PER_PEER)
    handshakes: int  # handshakes per run
    max_seconds: float  # time budget of one measurement loop


FULL = Sizes(runs=7, sends=1_000, warmup_sends=100, pipelined=8_000, handshakes=100, max_seconds=30)
QUICK = Sizes(runs=3, sends=200, warmup_sends=30, pipelined=2_000, handshakes=20, max_seconds=5)


# --------------------------------------------------------------------------- the floor


class _EchoClient(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.expected = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.expected -= len(data)
        if self.expected <= 0 and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class LoopThreadEcho:
    """The floor of the node's design without its work: a call from this thread into an
    event loop thread that sends to another asyncio process (bench/programs/asyncio_echo.py)
    and awaits its echo (Node.send_to_peer minus crypto, storage and bookkeeping)."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            program("asyncio_echo"),
            cwd=ROOT,
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._client = _EchoClient()
        self._payload = TEXT.encode()
        try:
            assert self._proc.stdout is not None
            port = int(read_line(self._proc.stdout, STEP_TIMEOUT, error="no asyncio echo"))
            self._thread.start()
            self._call(self._connect(port))
        except BaseException:
            self.close()
            raise

    async def _connect(self, port: int) -> None:
        await self._loop.create_connection(lambda: self._client, LOOPBACK, port)

    async def _send(self, count: int) -> None:
        """`count` messages, one write each (as a session writes one frame per message)."""
        client = self._client
        assert client.transport is not None
        client.waiter = self._loop.create_future()
        client.expected = len(self._payload) * count
        for _ in range(count):
            client.transport.write(self._payload)
        await asyncio.wait_for(client.waiter, STEP_TIMEOUT)

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(STEP_TIMEOUT)

    def round_trips(self, *, count: int, max_seconds: float) -> list[float]:
        samples: list[float] = []
        budget = Budget(max_seconds)
        while len(samples) < count and (not samples or not budget.exhausted()):
            start = time.perf_counter_ns()
            self._call(self._send(1))
            samples.append((time.perf_counter_ns() - start) / 1e9)
        return samples

    def pipelined_rate(self, *, count: int) -> float:
        """Messages per second: one call that writes `count` and awaits all their echoes."""
        start = time.perf_counter()
        self._call(self._send(count))
        return count / (time.perf_counter() - start)

    def close(self) -> None:
        try:
            if self._thread.is_alive():
                transport = self._client.transport
                if transport is not None:
                    self._loop.call_soon_threadsafe(transport.close)
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(5)
            if not self._thread.is_alive():
                self._loop.close()
        finally:
            stop_child(self._proc, 5)


@contextlib.contextmanager
def loop_thread_echo() -> Iterator[LoopThreadEcho]:
    echo = LoopThreadEcho()
    try:
        yield echo
    finally:
        echo.close()


# --------------------------------------------------------------------------- measurements


class CpuMeter:
    """CPU time spent by A's network thread and by the whole B process, per message."""

    def __init__(self, peer_a: LocalPeer, pid_b: int) -> None:
        self._peer_a = peer_a
        self._pid_b = pid_b
        self.a_us: list[float] = []  # per message, one entry per run
        self.b_us: list[float] = []

    def _now(self) -> tuple[float, float]:
        return self._peer_a.in_loop(time.thread_time), process_cpu_seconds(self._pid_b)

    @contextlib.contextmanager
    def per_message(self, count: Callable[[], int]) -> Iterator[None]:
        a0, b0 = self._now()
        yield
        a1, b1 = self._now()
        n = count()
        self.a_us.append((a1 - a0) * 1e6 / n)
        self.b_us.append((b1 - b0) * 1e6 / n)


@dataclass(frozen=True)
class MessageFigures:
    latency_median: Summary
    latency_p99: Summary
    echo_median: Summary
    echo_p99: Summary
    floor_median: Summary
    floor_p99: Summary
    latency_cpu_a: Summary  # microseconds of CPU per message
    latency_cpu_b: Summary
    rate: Summary
    echo_rate: Summary
    floor_rate: Summary
    rate_cpu_a: Summary
    rate_cpu_b: Summary
    handshake: Summary
    connect: Summary


def measure_messages(sizes: Sizes, tmp: Path, handshake_identity: Identity) -> MessageFigures:
    """Latency, throughput and handshake against one peer B."""
    latency_runs: list[list[float]] = []
    echo_runs: list[list[float]] = []
    floor_runs: list[list[float]] = []
    rates: list[float] = []
    echo_rates: list[float] = []
    floor_rates: list[float] = []
    handshake_runs: list[list[float]] = []
    connect_runs: list[list[float]] = []
    sent = 0
    b_dir = peer_profile("B", tmp)
    handshake_credentials = Credentials.create(handshake_identity, "handshake", free_tcp_port())
    with (
        echo_server() as echo,
        loop_thread_echo() as floor,
        peer_process("B", b_dir) as peer_b,
        local_peer("A", peer_profile("A", tmp)) as peer_a,
    ):
        fp = peer_a.connect(peer_b.address)
        sent += len(peer_a.send_times(fp, count=sizes.warmup_sends, max_seconds=sizes.max_seconds))
        latency_cpu = CpuMeter(peer_a, peer_b.pid)
        budget = Budget(sizes.max_seconds)
        while len(latency_runs) < sizes.runs and (not latency_runs or not budget.exhausted()):
            echo_runs.append(
                echo_round_trips(
                    echo, count=sizes.sends, size=ECHO_SIZE, max_seconds=sizes.max_seconds
                )
            )
            floor_runs.append(floor.round_trips(count=sizes.sends, max_seconds=sizes.max_seconds))
            with latency_cpu.per_message(lambda: len(latency_runs[-1])):
                latency_runs.append(
                    peer_a.send_times(fp, count=sizes.sends, max_seconds=sizes.max_seconds)
                )
            sent += len(latency_runs[-1])

        sent += sizes.pipelined // 4
        peer_a.pipelined_rate(fp, count=sizes.pipelined // 4)  # warm up
        rate_cpu = CpuMeter(peer_a, peer_b.pid)
        budget = Budget(sizes.max_seconds)
        while len(rates) < sizes.runs and (not rates or not budget.exhausted()):
            echo_rates.append(echo_throughput(echo, count=sizes.pipelined, size=ECHO_SIZE))
            floor_rates.append(floor.pipelined_rate(count=sizes.pipelined))
            with rate_cpu.per_message(lambda: sizes.pipelined):
                rates.append(peer_a.pipelined_rate(fp, count=sizes.pipelined))
            sent += sizes.pipelined

        async def handshakes() -> None:
            await handshake_times(
                handshake_credentials, peer_b.address, count=5, max_seconds=sizes.max_seconds
            )
            budget = Budget(sizes.max_seconds)
            while len(handshake_runs) < sizes.runs and (
                not handshake_runs or not budget.exhausted()
            ):
                connect_runs.append(
                    connect_times(echo, count=sizes.handshakes, max_seconds=sizes.max_seconds)
                )
                handshake_runs.append(
                    await handshake_times(
                        handshake_credentials,
                        peer_b.address,
                        count=sizes.handshakes,
                        max_seconds=sizes.max_seconds,
                    )
                )

        asyncio.run(handshakes())
        if peer_a.problems:
            raise RuntimeError(f"peer A reported: {peer_a.problems[0]}")
        if peer_a.store.pending_messages():
            raise RuntimeError("peer A still has pending messages after all were acknowledged")
    stored = stored_incoming(b_dir)
    if stored != sent:
        raise RuntimeError(f"peer B stored {stored} messages, {sent} were acknowledged")
    latency_median, latency_p99 = summarize_runs(latency_runs)
    echo_median, echo_p99 = summarize_runs(echo_runs)
    floor_median, floor_p99 = summarize_runs(floor_runs)
    return MessageFigures(
        latency_median=latency_median,
        latency_p99=latency_p99,
        echo_median=echo_median,
        echo_p99=echo_p99,
        floor_median=floor_median,
        floor_p99=floor_p99,
        latency_cpu_a=summarize(latency_cpu.a_us),
        latency_cpu_b=summarize(latency_cpu.b_us),
        rate=summarize(rates),
        echo_rate=summarize(echo_rates),
        floor_rate=summarize(floor_rates),
        rate_cpu_a=summarize(rate_cpu.a_us),
        rate_cpu_b=summarize(rate_cpu.b_us),
        handshake=summarize_runs(handshake_runs)[0],
        connect=summarize_runs(connect_runs)[0],
    )


# --------------------------------------------------------------------------- rows


def _ms(summary: Summary) -> Summary:
    return summary.scaled(1000)


def message_rows(figures: MessageFigures, sizes: Sizes) -> list[Row]:
    """The figures under the names of the committed results, then the rows against the floor.

    The registry (bench/__main__.py) judges them: the first rows against the
    benchmark targets, the rows "against the floor of the design" and the CPU
    rows against the per-message cost targets.
    """
    median, p99 = _ms(figures.latency_median), _ms(figures.latency_p99)
    echo_median, echo_p99 = _ms(figures.echo_median), _ms(figures.echo_p99)
    floor_median, floor_p99 = _ms(figures.floor_median), _ms(figures.floor_p99)
    handshake, connect = _ms(figures.handshake), _ms(figures.connect)
    rate = figures.rate
    send = f"send to acknowledgement, stored on both sides ({sizes.sends} sends per run)"
    pipelined = (
        f"acknowledged stored messages per second, one session, pipelined "
        f"({sizes.pipelined:,} per run)"
    )
    return [
        figure_row(
            f"{send}, median",
            median.median,
            "ms",
            baseline=echo_median.median,
            baseline_unit="ms",
            spread=median.spread(),
        ),
        figure_row(
            f"{send}, p99",
            p99.median,
            "ms",
            baseline=echo_p99.median,
            baseline_unit="ms",
            spread=p99.spread(),
        ),
        figure_row(
            pipelined,
            rate.median,
            "msg/s",
            baseline=figures.echo_rate.median,
            baseline_unit="msg/s",
            spread=rate.spread(),
        ),
        figure_row(
            "floor of the design: call into a loop thread + asyncio TCP echo round trip, median",
            floor_median.median,
            "ms",
            baseline=echo_median.median,
            baseline_unit="ms",
            spread=floor_median.spread(),
        ),
        figure_row(
            "CPU per sequential send: A's network thread (baseline: B, whole process)",
            figures.latency_cpu_a.median,
            "us",
            baseline=figures.latency_cpu_b.median,
            baseline_unit="us",
            spread=figures.latency_cpu_a.spread(),
        ),
        figure_row(
            "CPU per pipelined message: A's network thread (baseline: B, whole process)",
            figures.rate_cpu_a.median,
            "us",
            baseline=figures.rate_cpu_b.median,
            baseline_unit="us",
            spread=figures.rate_cpu_a.spread(),
        ),
        figure_row(
            "handshake: connect, authenticate, first frame answered, median",
            handshake.median,
            "ms",
            baseline=connect.median,
            baseline_unit="ms",
            spread=handshake.spread(),
        ),
        figure_row(
            f"{send}, median, against the floor of the design",
            median.median,
            "ms",
            baseline=floor_median.median,
            baseline_unit="ms",
            spread=median.spread(),
        ),
        figure_row(
            f"{send}, p99, against the floor of the design",
            p99.median,
            "ms",
            baseline=floor_p99.median,
            baseline_unit="ms",
            spread=p99.spread(),
        ),
        figure_row(
            f"{pipelined}, against the floor of the design",
            rate.median,
            "msg/s",
            baseline=figures.floor_rate.median,
            baseline_unit="msg/s",
            spread=rate.spread(),
        ),
    ]


def run(quick: bool, *, sizes: Sizes | None = None) -> list[Row]:
    sizes = sizes or (QUICK if quick else FULL)
    with tempfile.TemporaryDirectory(prefix="bench-messages-") as tmp:
        identity = session_identities(1)[0]
        return message_rows(measure_messages(sizes, Path(tmp), identity), sizes)


def main(argv: list[str] | None = None) -> int:
    return module_main(run, __doc__ or "messages between two peers", argv, entry="messages")


if __name__ == "__main__":
    sys.exit(main())
