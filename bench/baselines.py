"""Baselines that the real figures are compared against, measured in the same run.

- A raw Python TCP echo over 127.0.0.1: round-trip latency of small messages
  and pipelined echo throughput. The echo server is a separate Python process,
  as a real peer is, so the two sides do not share one GIL.
- A bare TCP connect to 127.0.0.1 (socket + connect, nothing else).
- The start time of `python -c pass` with this interpreter.

Figure modules for the node import these functions to measure their own
baseline beside their figure, in the same minute.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.harness import (
    Row,
    Summary,
    bounded,
    figure_row,
    read_line,
    stop_child,
    summarize,
    summarize_runs,
    time_calls,
)

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
SOCKET_TIMEOUT = 30.0  # no single socket operation of a benchmark may hang longer
Address = tuple[str, int]


@dataclass(frozen=True)
class Sizes:
    runs: int  # repeated runs per figure
    round_trips: int  # echo round trips per run
    message_size: int  # bytes per echo message
    throughput_messages: int  # messages per throughput run
    connects: int  # connects per run
    starts: int  # interpreter starts in total
    max_seconds: float  # time budget of each measurement loop


FULL = Sizes(
    runs=7,
    round_trips=2_000,
    message_size=64,
    throughput_messages=50_000,
    connects=200,
    starts=20,
    max_seconds=30.0,
)
QUICK = Sizes(
    runs=5,
    round_trips=300,
    message_size=64,
    throughput_messages=5_000,
    connects=50,
    starts=5,
    max_seconds=5.0,
)


# --------------------------------------------------------------------------- echo server


def _exit_when_stdin_closes() -> None:
    sys.stdin.buffer.read()
    os._exit(0)


def _echo(conn: socket.socket) -> None:
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.suppress(OSError):
            while data := conn.recv(65536):
                conn.sendall(data)


def serve_echo(max_seconds: float) -> None:
    """The echo server process: prints its port, echoes until stdin closes or time is up."""
    with socket.create_server((LOOPBACK, 0), backlog=512) as server:
        print(server.getsockname()[1], flush=True)
        threading.Thread(target=_exit_when_stdin_closes, daemon=True).start()
        deadline = threading.Timer(max_seconds, os._exit, args=(0,))
        deadline.daemon = True
        deadline.start()
        while True:
            conn, _ = server.accept()
            threading.Thread(target=_echo, args=(conn,), daemon=True).start()


@contextlib.contextmanager
def echo_server(max_seconds: float = 900.0) -> Iterator[Address]:
    """A raw TCP echo server in its own process on 127.0.0.1; yields its address."""
    code = f"from bench.baselines import serve_echo; serve_echo({max_seconds!r})"
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = read_line(proc.stdout, SOCKET_TIMEOUT, error="echo server did not start")
        if not line.isdigit():
            raise RuntimeError(f"echo server did not start (exit code {proc.poll()})")
        yield (LOOPBACK, int(line))
    finally:
        stop_child(proc, 5)


def _connect(address: Address) -> socket.socket:
    sock = socket.create_connection(address, timeout=SOCKET_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _recv_exactly(sock: socket.socket, buffer: memoryview) -> None:
    received = 0
    while received < len(buffer):
        n = sock.recv_into(buffer[received:])
        if n == 0:
            raise ConnectionError("echo server closed the connection")
        received += n


# --------------------------------------------------------------------------- measurements


def echo_round_trips(
    address: Address, *, count: int, size: int = 64, max_seconds: float = 10.0
) -> list[float]:
    """Seconds per round trip of `size` bytes, up to `count` of them (at least one)."""
    payload = b"x" * size
    buffer = memoryview(bytearray(size))
    with _connect(address) as sock:

        def round_trip() -> None:
            sock.sendall(payload)
            _recv_exactly(sock, buffer)

        for _ in range(10):  # warm up: first segments, thread start in the server
            round_trip()
        return time_calls(round_trip, count=count, max_seconds=max_seconds)


def echo_throughput(address: Address, *, count: int, size: int = 64) -> float:
    """Messages per second echoed when `count` messages are sent back to back.

    One sendall per message (as a session sends one frame per message); a
    second thread reads the echo while the first still sends.
    """
    payload = b"x" * size
    total = count * size
    errors: list[BaseException] = []
    with _connect(address) as sock:

        def send() -> None:
            try:
                for _ in range(count):
                    sock.sendall(payload)
            except OSError as exc:
                errors.append(exc)

        buffer = bytearray(256 * 1024)
        sender = threading.Thread(target=send, daemon=True)
        start = time.perf_counter()
        sender.start()
        received = 0
        while received < total:
            n = sock.recv_into(buffer)
            if n == 0:
                raise ConnectionError("echo server closed the connection")
            received += n
        elapsed = time.perf_counter() - start
        sender.join(SOCKET_TIMEOUT)
    if errors:
        raise errors[0]
    return count / elapsed


def connect_times(address: Address, *, count: int, max_seconds: float = 10.0) -> list[float]:
    """Seconds for socket() + connect() to `address`, up to `count` times (at least one)."""

    def connect() -> float:
        start = time.perf_counter_ns()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(SOCKET_TIMEOUT)
            sock.connect(address)
            return (time.perf_counter_ns() - start) / 1e9  # closing is not part of it

    return bounded(connect, count=count, max_seconds=max_seconds)


def python_start_times(*, count: int, max_seconds: float = 10.0) -> list[float]:
    """Seconds for `python -c pass` (this interpreter) to start and exit."""
    command = [sys.executable, "-c", "pass"]
    return time_calls(
        lambda: subprocess.run(command, check=True, timeout=SOCKET_TIMEOUT),
        count=count,
        max_seconds=max_seconds,
    )


# --------------------------------------------------------------------------- summaries


def echo_latency(address: Address, sizes: Sizes) -> tuple[Summary, Summary]:
    """(median, p99) of the echo round trip in seconds, each over `sizes.runs` runs."""
    runs = bounded(
        lambda: echo_round_trips(
            address, count=sizes.round_trips, size=sizes.message_size, max_seconds=sizes.max_seconds
        ),
        count=sizes.runs,
        max_seconds=sizes.max_seconds,
    )
    return summarize_runs(runs)


def echo_rate(address: Address, sizes: Sizes) -> Summary:
    """Pipelined echo messages per second over `sizes.runs` runs."""
    rates = bounded(
        lambda: echo_throughput(address, count=sizes.throughput_messages, size=sizes.message_size),
        count=sizes.runs,
        max_seconds=sizes.max_seconds,
    )
    return summarize(rates)


def connect_latency(address: Address, sizes: Sizes) -> Summary:
    """Median bare connect time in seconds, over `sizes.runs` runs."""
    runs = bounded(
        lambda: connect_times(address, count=sizes.connects, max_seconds=sizes.max_seconds),
        count=sizes.runs,
        max_seconds=sizes.max_seconds,
    )
    return summarize_runs(runs)[0]


def python_start(sizes: Sizes) -> Summary:
    """`python -c pass` start time in seconds; each start is one run."""
    return summarize(python_start_times(count=sizes.starts, max_seconds=sizes.max_seconds))


def run(quick: bool, *, sizes: Sizes | None = None) -> list[Row]:
    sizes = sizes or (QUICK if quick else FULL)
    size = sizes.message_size
    with echo_server() as address:
        rtt_median, rtt_p99 = echo_latency(address, sizes)
        rate = echo_rate(address, sizes)
        connect = connect_latency(address, sizes)
    start = python_start(sizes)
    rtt_median, rtt_p99, connect, start = (
        s.scaled(1000) for s in (rtt_median, rtt_p99, connect, start)
    )
    return [
        figure_row(
            f"raw TCP echo round trip ({size} B), median",
            rtt_median.median,
            "ms",
            spread=rtt_median.spread(),
        ),
        figure_row(
            f"raw TCP echo round trip ({size} B), p99",
            rtt_p99.median,
            "ms",
            spread=rtt_p99.spread(),
        ),
        figure_row(
            f"raw TCP echo throughput, pipelined ({size} B messages)",
            rate.median,
            "msg/s",
            spread=rate.spread(),
        ),
        figure_row("bare TCP connect, median", connect.median, "ms", spread=connect.spread()),
        figure_row("python -c pass, start to exit", start.median, "ms", spread=start.spread()),
    ]
