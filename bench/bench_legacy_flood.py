"""Keyed message latency to a real peer while its legacy port is flooded, and without.

A real peer_chat process (piped standard input, no discovery, `--legacy-port`)
listens on 127.0.0.1. This process is a legitimate keyed peer
(bench.clients.BlockingClient): it completes the handshake and times one chat message at
a time to its acknowledgement. The flood is another process that keeps
IN_FLIGHT connections to the legacy port open, from SOURCES loopback addresses
in turn, each carrying one well-formed legacy message and closed, so the flood
goes through admission, decoding, the message budget, the history and the
screen, not only the accept path.

Runs alternate: one without the flood (the baseline), one with it. Each figure
is the median over runs of the per-run median or p99, with its spread; the
flood's rate, the legacy messages the peer showed per second (its limit is
50/s in all) and the peer's memory growth are reported beside them.

    python -m bench.bench_legacy_flood [--quick]
"""

from __future__ import annotations

import collections
import contextlib
import errno
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.bench_flood import SOCKET_TIMEOUT
from bench.clients import BlockingClient
from bench.harness import (
    Row,
    figure_row,
    reporting_child,
    round_trip_rows,
    rss_kib,
    stop_child,
    summarize,
)
from bench.peers import ROOT, peer_command
from bench.registry import module_main
from crypto_utils import KeyManager
from peerchat.limits import LEGACY_MESSAGE_GLOBAL_RATE
from peerchat.protocol.channel import Credentials
from tests.support import free_tcp_port

HOST = "127.0.0.1"
IN_FLIGHT = 32  # legacy connections open at once
SOURCES = 64  # loopback addresses the flood cycles through (127.0.1.1 ...)
SHOWN_MARK = b"[unencrypted]: flood"


@dataclass(frozen=True)
class Sizes:
    runs: int  # runs of each kind (baseline, flooded), alternating
    seconds: float  # length of one run
    max_messages: int  # round trips in one run at most
    warmup: int  # untimed round trips before the first run
    max_seconds: float  # time budget of all runs together


FULL = Sizes(runs=7, seconds=3.0, max_messages=50_000, warmup=200, max_seconds=120.0)
QUICK = Sizes(runs=2, seconds=1.0, max_messages=20_000, warmup=50, max_seconds=30.0)


# --------------------------------------------------------------------------- the flood


def flood(port: int, max_seconds: float, stop: threading.Event) -> tuple[int, int]:
    """Legacy messages to HOST:port, IN_FLIGHT connections at a time; (made, closed)."""
    made = closed = 0
    deadline = time.monotonic() + max_seconds
    socks: dict[int, socket.socket] = {}
    with selectors.DefaultSelector() as selector:
        while not stop.is_set() and time.monotonic() < deadline:
            while len(socks) < IN_FLIGHT:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                sock.bind((f"127.0.1.{1 + made % SOURCES}", 0))
                made += 1
                if sock.connect_ex((HOST, port)) not in (0, errno.EINPROGRESS):
                    sock.close()
                    break
                selector.register(sock, selectors.EVENT_WRITE, "connecting")
                socks[sock.fileno()] = sock
            for key, _ in selector.select(0.1):
                sock = socks[key.fd]
                if key.data == "connecting":
                    try:
                        sock.send(f"127.0.0.1:7000 Flood flood {made}\n".encode())
                        sock.shutdown(socket.SHUT_WR)  # a one-shot sender's close
                    except OSError:
                        selector.unregister(sock)
                        del socks[key.fd]
                        sock.close()
                        closed += 1
                        continue
                    selector.modify(sock, selectors.EVENT_READ, "sent")
                    continue
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    selector.unregister(sock)
                    del socks[key.fd]
                    sock.close()
                    closed += 1
        for sock in socks.values():
            sock.close()
    return made, closed


def flood_main(port: int, max_seconds: float) -> None:
    """The flood process: says "ready", floods until its stdin closes, prints its counts."""
    stop = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    with socket.create_connection((HOST, port), timeout=SOCKET_TIMEOUT):
        pass
    print("ready", flush=True)
    start = time.monotonic()
    made, closed = flood(port, max_seconds, stop)
    print(f"{made} {closed} {time.monotonic() - start:.3f}", flush=True)


@contextlib.contextmanager
def flooding(port: int, max_seconds: float) -> Iterator[list[float]]:
    """A flood process for the duration of the block; yields [made, closed, seconds] after."""
    code = f"from bench.bench_legacy_flood import flood_main; flood_main({port}, {max_seconds})"
    counts: list[float] = []
    with reporting_child("the flood", [sys.executable, "-c", code], ROOT, SOCKET_TIMEOUT) as report:
        yield counts
    counts.extend(float(x) for x in report)


# --------------------------------------------------------------------------- the peer


class Shown:
    """How many flood messages the peer has printed (read from its output)."""

    def __init__(self) -> None:
        self.count = 0


def flood_peer_command(port: int, legacy_port: int, data_dir: Path) -> list[str]:
    """The bench's usual peer (its quota above what the round trips store), with a legacy port."""
    return [*peer_command("Bench", port, data_dir), "--legacy-port", str(legacy_port)]


@contextlib.contextmanager
def running_peer(data_dir: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, int, Shown]]:
    """A peer_chat process with a legacy port; yields it, its two ports and its flood count."""
    port, legacy_port = free_tcp_port(), free_tcp_port()
    args = flood_peer_command(port, legacy_port, data_dir)
    proc = subprocess.Popen(
        args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdin is not None and proc.stdout is not None
    listening = threading.Event()
    stdout = proc.stdout
    shown = Shown()
    last_lines: collections.deque[bytes] = collections.deque(maxlen=5)

    def drain() -> None:
        for line in stdout:
            last_lines.append(line)
            if SHOWN_MARK in line:
                shown.count += 1
            elif b"Legacy port" in line:
                listening.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        if not listening.wait(SOCKET_TIMEOUT):
            said = b" / ".join(line.strip() for line in last_lines).decode("utf-8", "replace")
            raise RuntimeError(f"the peer did not start (exit code {proc.poll()}): {said}")
        yield proc, port, legacy_port, shown
    finally:
        stop_child(proc, 10, close_stdout=False)
        reader.join(5)
        stdout.close()


# --------------------------------------------------------------------------- the figures


def run(quick: bool, *, sizes: Sizes | None = None) -> list[Row]:
    sizes = sizes or (QUICK if quick else FULL)
    baseline_runs: list[list[float]] = []
    flood_runs: list[list[float]] = []
    flood_rates: list[float] = []
    shown_rates: list[float] = []
    made_total = 0
    with tempfile.TemporaryDirectory(prefix="bench-legacy-flood-") as tmp:
        identity = KeyManager(Path(tmp) / "client").load_or_create_identity()
        with running_peer(Path(tmp) / "peer") as (proc, port, legacy_port, shown):
            client = BlockingClient(Credentials.create(identity, "Client", 1), (HOST, port))
            try:
                for _ in range(sizes.warmup):
                    client.round_trip()
                rss_before = rss_kib(proc.pid)
                deadline = time.monotonic() + sizes.max_seconds
                for _ in range(sizes.runs):
                    baseline_runs.append(client.round_trips(sizes.seconds, sizes.max_messages))
                    shown_before = shown.count
                    with flooding(legacy_port, sizes.max_seconds) as counts:
                        flood_runs.append(client.round_trips(sizes.seconds, sizes.max_messages))
                    made, _closed, seconds = counts
                    made_total += int(made)
                    flood_rates.append(made / seconds)
                    shown_rates.append((shown.count - shown_before) / seconds)
                    if time.monotonic() > deadline:
                        break
                rss_after = rss_kib(proc.pid)
            finally:
                client.close()
            if proc.poll() is not None:
                raise RuntimeError(f"the peer exited during the flood ({proc.returncode})")

    rate = summarize(flood_rates)
    shown_rate = summarize(shown_rates)
    label = "keyed message round trip (to ack) under a legacy-port flood"
    return [
        *round_trip_rows(label, baseline_runs, flood_runs),
        figure_row(
            f"legacy connections during the flood ({IN_FLIGHT} in flight from {SOURCES} addresses)",
            rate.median,
            "/s",
            spread=rate.spread(),
        ),
        figure_row(
            f"legacy messages shown during the flood (limit {LEGACY_MESSAGE_GLOBAL_RATE:g}/s "
            "after a burst)",
            shown_rate.median,
            "msg/s",
            spread=shown_rate.spread(),
        ),
        figure_row(
            f"peer memory growth over {made_total:,} legacy connections",
            (rss_after - rss_before) / 1024,
            "MiB",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    return module_main(run, __doc__ or "legacy-port flood", argv, entry="legacy-flood")


if __name__ == "__main__":
    sys.exit(main())
