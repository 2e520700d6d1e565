"""Legitimate message latency to a real peer under a garbage connection flood, and without.

A real peer_chat process (piped standard input, no discovery) listens on
127.0.0.1. This process is a legitimate peer: it completes the handshake with
channel.SecureChannel and a real identity, then sends one chat message at a
time and times it until the acknowledgement comes back (the peer stores the
message, then acknowledges it). The flood is another process that keeps 32
connections in flight from another loopback address, each sending random
bytes until the peer closes it, then opening the next.

Runs alternate: one without the flood (the baseline), one with it, so both
see the same machine in the same minute. Each figure is the median over runs
of the per-run median or p99, with its spread; the flood's own rate and the
peer's memory growth over all flooded runs are reported beside them.

    python -m bench.bench_flood [--quick]
"""

from __future__ import annotations

import collections
import contextlib
import errno
import random
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

from bench.harness import (
    Row,
    figure_row,
    module_main,
    read_line,
    rss_kib,
    stop_child,
    summarize,
    summarize_runs,
)
from crypto_utils import KeyManager
from peerchat.protocol.channel import (
    Credentials,
    HandshakeComplete,
    MessageReceived,
    Role,
    SecureChannel,
)
from peerchat.protocol.messages import Ack, Chat, Ping, Pong, new_msg_id
from tests.support import free_tcp_port

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "peer_chat.py"
HOST = "127.0.0.1"
SOCKET_TIMEOUT = 30.0  # no single wait of this benchmark may be longer
IN_FLIGHT = 32  # flood connections open at once (half the per-address limit)
TEXT = "x" * 64


@dataclass(frozen=True)
class Sizes:
    runs: int  # runs of each kind (baseline, flooded), alternating
    seconds: float  # length of one run: round trips one after the other, for this long
    max_messages: int  # ... but never more than this many in one run
    warmup: int  # untimed round trips before the first run
    max_seconds: float  # time budget of all runs together


FULL = Sizes(runs=7, seconds=3.0, max_messages=50_000, warmup=200, max_seconds=120.0)
QUICK = Sizes(runs=3, seconds=1.0, max_messages=20_000, warmup=50, max_seconds=30.0)


# --------------------------------------------------------------------------- the flood


def flood(port: int, source: str, max_seconds: float, stop: threading.Event) -> tuple[int, int]:
    """Garbage connections to HOST:port from `source`, IN_FLIGHT at a time.

    Returns (connections made, connections the peer closed). Stops when `stop`
    is set or after `max_seconds`.
    """
    rng = random.Random(1)
    made = closed = 0
    deadline = time.monotonic() + max_seconds
    socks: dict[int, socket.socket] = {}
    with selectors.DefaultSelector() as selector:
        while not stop.is_set() and time.monotonic() < deadline:
            while len(socks) < IN_FLIGHT:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                sock.bind((source, 0))
                made += 1
                if sock.connect_ex((HOST, port)) not in (0, errno.EINPROGRESS):
                    sock.close()
                    break  # out of ports or refused: select, then try again
                selector.register(sock, selectors.EVENT_WRITE, "connecting")
                socks[sock.fileno()] = sock
            for key, _ in selector.select(0.1):
                sock = socks[key.fd]
                if key.data == "connecting":
                    try:
                        sock.send(rng.randbytes(rng.randrange(4, 512)))
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


def flood_main(port: int, source: str, max_seconds: float) -> None:
    """The flood process: says "ready", floods until its stdin closes, prints its counts."""
    stop = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    # One connection first, so "ready" means the flood reaches the peer.
    with socket.create_connection((HOST, port), timeout=SOCKET_TIMEOUT, source_address=(source, 0)):
        pass
    print("ready", flush=True)
    start = time.monotonic()
    made, closed = flood(port, source, max_seconds, stop)
    print(f"{made} {closed} {time.monotonic() - start:.3f}", flush=True)


@contextlib.contextmanager
def flooding(port: int, source: str, max_seconds: float) -> Iterator[list[float]]:
    """A flood process for the duration of the block; yields [made, closed, seconds] after."""
    code = (
        f"from bench.bench_flood import flood_main; flood_main({port}, {source!r}, {max_seconds})"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    counts: list[float] = []
    silent = f"nothing read within {SOCKET_TIMEOUT} s"
    try:
        if read_line(proc.stdout, SOCKET_TIMEOUT, error=silent) != b"ready":
            raise RuntimeError(f"the flood did not start (exit code {proc.poll()})")
        yield counts
        proc.stdin.close()
        line = read_line(proc.stdout, SOCKET_TIMEOUT, error=silent).split()
        if len(line) != 3:
            raise RuntimeError("the flood did not report")
        counts.extend(float(x) for x in line)
    finally:
        stop_child(proc, 10)


# --------------------------------------------------------------------------- the peer


@contextlib.contextmanager
def running_peer(data_dir: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A peer_chat process with piped stdin; yields it and its port once it is listening."""
    port = free_tcp_port()
    args = [sys.executable, str(SCRIPT), "--name", "Bench", "--port", str(port)]
    args += ["--data-dir", str(data_dir), "--no-discovery"]
    proc = subprocess.Popen(
        args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdin is not None and proc.stdout is not None
    listening = threading.Event()
    stdout = proc.stdout
    last_lines: collections.deque[bytes] = collections.deque(maxlen=5)

    def drain() -> None:
        # The peer prints a line per message: read everything so it never blocks on us.
        for line in stdout:
            last_lines.append(line)
            if b"Server listening on port" in line:
                listening.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        if not listening.wait(SOCKET_TIMEOUT):
            said = b" / ".join(line.strip() for line in last_lines).decode("utf-8", "replace")
            raise RuntimeError(f"the peer did not start (exit code {proc.poll()}): {said}")
        yield proc, port
    finally:
        stop_child(proc, 10, close_stdout=False)  # end of input quits the menu
        reader.join(5)  # the reader ends at the end of output; only then close it
        stdout.close()


class Client:
    """A legitimate peer: one session, one message at a time, timed to its acknowledgement."""

    def __init__(self, credentials: Credentials, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=SOCKET_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.channel = SecureChannel(Role.INITIATOR, credentials)
        self._flush()
        while True:
            events = self.channel.receive_data(self._recv())
            self._flush()
            if any(isinstance(e, HandshakeComplete) for e in events):
                break

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the peer closed the session")
        return data

    def _flush(self) -> None:
        data = self.channel.data_to_send()
        if data:
            self.sock.sendall(data)

    def round_trip(self) -> float:
        """Seconds from sending one chat message to its acknowledgement."""
        chat = Chat(new_msg_id(), time.time(), TEXT)
        start = time.perf_counter_ns()
        self.channel.send_message(chat)
        self._flush()
        while True:
            for event in self.channel.receive_data(self._recv()):
                if not isinstance(event, MessageReceived):
                    continue
                message = event.message
                if isinstance(message, Ack) and chat.msg_id in message.msg_ids:
                    return (time.perf_counter_ns() - start) / 1e9
                if isinstance(message, Ping):
                    self.channel.send_message(Pong(message.nonce))
                    self._flush()

    def round_trips(self, seconds: float, count: int) -> list[float]:
        """Round trips one after the other for `seconds`, at most `count`, at least one."""
        deadline = time.monotonic() + seconds
        samples = [self.round_trip()]
        while len(samples) < count and time.monotonic() < deadline:
            samples.append(self.round_trip())
        return samples

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------- the figures


def run(quick: bool, *, sizes: Sizes | None = None) -> list[Row]:
    sizes = sizes or (QUICK if quick else FULL)
    baseline_runs: list[list[float]] = []
    flood_runs: list[list[float]] = []
    flood_rates: list[float] = []
    made_total = closed_total = 0
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp:
        identity = KeyManager(Path(tmp) / "client").load_or_create_identity()
        with running_peer(Path(tmp) / "peer") as (proc, port):
            client = Client(Credentials.create(identity, "Client", 1), port)
            try:
                for _ in range(sizes.warmup):
                    client.round_trip()
                rss_before = rss_kib(proc.pid)
                deadline = time.monotonic() + sizes.max_seconds
                for index in range(sizes.runs):
                    baseline_runs.append(client.round_trips(sizes.seconds, sizes.max_messages))
                    # A fresh source address per run spreads the flood's ephemeral ports.
                    source = f"127.0.0.{2 + index}"
                    with flooding(port, source, sizes.max_seconds) as counts:
                        flood_runs.append(client.round_trips(sizes.seconds, sizes.max_messages))
                    made, closed, seconds = counts
                    made_total += int(made)
                    closed_total += int(closed)
                    flood_rates.append(made / seconds)
                    if time.monotonic() > deadline:  # bounded in time as in count
                        break
                rss_after = rss_kib(proc.pid)
            finally:
                client.close()
            if proc.poll() is not None:
                raise RuntimeError(f"the peer exited during the flood ({proc.returncode})")
    if closed_total < made_total - IN_FLIGHT * len(flood_runs):
        raise RuntimeError(f"the peer closed {closed_total} of {made_total} garbage connections")

    base_median, base_p99 = (s.scaled(1000) for s in summarize_runs(baseline_runs))
    flood_median, flood_p99 = (s.scaled(1000) for s in summarize_runs(flood_runs))
    rate = summarize(flood_rates)
    label = "legitimate message round trip (to ack) under a garbage connection flood"
    return [
        figure_row(
            f"{label}, median",
            flood_median.median,
            "ms",
            baseline=base_median.median,
            baseline_unit="ms",
            spread=flood_median.spread(),
        ),
        figure_row(
            f"{label}, p99",
            flood_p99.median,
            "ms",
            baseline=base_p99.median,
            baseline_unit="ms",
            spread=flood_p99.spread(),
        ),
        figure_row(
            f"garbage connections opened and closed during the flood ({IN_FLIGHT} in flight)",
            rate.median,
            "/s",
            spread=rate.spread(),
        ),
        figure_row(
            f"peer memory growth over {made_total:,} garbage connections",
            (rss_after - rss_before) / 1024,
            "MiB",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    return module_main(run, __doc__ or "garbage connection flood", argv)


if __name__ == "__main__":
    sys.exit(main())
