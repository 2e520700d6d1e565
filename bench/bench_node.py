"""A running peer over loopback: latency, throughput, handshake, sessions, start time.

Peer B is always a real `peer_chat.py` process (piped standard input kept
open, --no-discovery, --bind 127.0.0.1). Peer A is a Node in this process,
built as peer_chat.run() builds one (KeyManager, HistoryStore, Node), for the
message figures; the handshake and session figures drive channel.SecureChannel
over asyncio from this process. Only 127.0.0.0/8 is ever used.

Figures, each beside a baseline measured in the same run (interleaved with the
figure's own runs where both are cheap):

- send to acknowledgement of one chat message, stored on both sides
  (Node.send_to_peer returns DELIVERED only after B committed it, acknowledged
  it and A marked it delivered): median and p99, vs a raw TCP echo round trip;
- acknowledged, stored messages per second on one session, pipelined
  (Node.submit of N, then wait_delivered), vs raw TCP echo throughput;
- handshake: TCP connect, Noise XX with identities, first frame answered (a
  Ping and B's Pong), vs a bare TCP connect;
- B's resident memory per authenticated session with 1,000 sessions open,
  vs a bare asyncio server holding as many plain TCP connections;
- start to menu with existing keys, vs `python -c pass`.

Beside them, to explain the message figures: the floor of the design (a call
from this thread into an event-loop thread that sends to another asyncio
process and awaits its echo: send_to_peer minus crypto, storage and
bookkeeping), and the CPU time per message of A's network thread and of B.

Then a cProfile (clock: the thread's CPU time) of A's network thread and of
B's network thread on the latency and the throughput paths, written to
bench/results/profile-latency.txt and profile-throughput.txt.

Identities: A and B use 3072-bit keys made by KeyManager, the session clients
2048-bit ones; all are generated once and kept under bench/.cache/.

    python -m bench.bench_node [--quick] [--only messages sessions start profile]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import cProfile
import io
import os
import pstats
import resource
import selectors
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Coroutine, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from bench.baselines import (
    connect_times,
    echo_round_trips,
    echo_server,
    echo_throughput,
    python_start_times,
)
from bench.harness import (
    RESULTS_DIR,
    Row,
    Summary,
    figure_row,
    format_table,
    read_line,
    rss_kib,
    stop_child,
    summarize,
    summarize_runs,
)
from crypto_utils import Identity, KeyManager
from peerchat.errors import ProtocolError
from peerchat.events import Outcome, Problem, UiEvent
from peerchat.net.node import Node, NodeConfig
from peerchat.protocol.channel import (
    Credentials,
    HandshakeComplete,
    MessageReceived,
    Role,
    SecureChannel,
)
from peerchat.protocol.messages import Bye, Ping, Pong
from storage import HistoryStore
from tests.support import free_tcp_port

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "peer_chat.py"
CACHE_DIR = Path(__file__).resolve().parent / ".cache"
LOOPBACK = "127.0.0.1"
PROMPT = b"Enter choice:"
TEXT = "benchmark message: a line of ordinary chat text, about this long."  # 65 B
ECHO_SIZE = len(TEXT.encode())
SESSION_KEY_BITS = 2048
FIRST_PING = 1
STEP_TIMEOUT = 20.0  # no single step (a start, a connect, a batch) may take longer


@dataclass(frozen=True)
class Sizes:
    runs: int  # repeated runs per figure
    sends: int  # sequential sends per latency run
    warmup_sends: int
    pipelined: int  # messages per throughput run (under MAX_QUEUED_PER_PEER)
    handshakes: int  # handshakes per run
    sessions: int  # concurrent sessions held by B
    sessions_per_address: int  # under MAX_CONNECTIONS_PER_ADDRESS and MAX_PENDING_HANDSHAKES
    hold_seconds: float  # how long the sessions are held (B pings them after 5 s of silence)
    starts: int  # timed starts to the menu
    profile_sends: int
    profile_pipelined: int
    max_seconds: float  # time budget of one measurement loop


FULL = Sizes(
    runs=7,
    sends=1_000,
    warmup_sends=100,
    pipelined=8_000,
    handshakes=100,
    sessions=1_000,
    sessions_per_address=50,
    hold_seconds=7.0,
    starts=15,
    profile_sends=2_000,
    profile_pipelined=8_000,
    max_seconds=30.0,
)
QUICK = Sizes(
    runs=3,
    sends=200,
    warmup_sends=30,
    pipelined=2_000,
    handshakes=20,
    sessions=100,
    sessions_per_address=50,
    hold_seconds=0.5,
    starts=5,
    profile_sends=300,
    profile_pipelined=3_000,
    max_seconds=5.0,
)


# --------------------------------------------------------------------------- small helpers


def raise_fd_limit(wanted: int) -> None:
    """Room for `wanted` descriptors here and in the peers started from here (inherited)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PEER_CHAT_PASSPHRASE", None)
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def peer_command(name: str, port: int, data_dir: Path) -> list[str]:
    return [
        str(SCRIPT),
        "--name",
        name,
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--bind",
        LOOPBACK,
        "--no-discovery",
    ]


class Budget:
    """A deadline for one measurement loop (every loop here is bounded in count and time)."""

    def __init__(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds

    def exhausted(self) -> bool:
        return time.monotonic() >= self._deadline


def _ms(summary: Summary) -> Summary:
    return summary.scaled(1000)


# --------------------------------------------------------------------------- identities


def peer_profile(name: str, into: Path, cache_dir: Path = CACHE_DIR) -> Path:
    """A data folder for peer `name` holding its cached keys (made once by KeyManager)."""
    cached = cache_dir / "node-peers" / name
    if not (cached / "complete").exists():
        shutil.rmtree(cached, ignore_errors=True)
        keys = KeyManager(cached)
        keys.load_or_create_identity()
        keys.load_or_create_sealer()
        (cached / "complete").write_text("keys made by KeyManager\n")
    folder = into / name
    folder.mkdir(mode=0o700)
    for file in ("private.pem", "public.pem", "secret.key"):
        shutil.copy2(cached / file, folder / file)
    return folder


def _new_key_der(_: int) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=SESSION_KEY_BITS)
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def session_identities(count: int, cache_dir: Path = CACHE_DIR) -> list[Identity]:
    """`count` distinct 2048-bit identities, generated once (in parallel) and cached."""
    path = cache_dir / f"node-session-identities-{SESSION_KEY_BITS}.txt"
    ders = [base64.b64decode(line) for line in path.read_text().split()] if path.exists() else []
    if len(ders) < count:
        missing = count - len(ders)
        print(f"bench: generating {missing} RSA-{SESSION_KEY_BITS} keys (cached)", file=sys.stderr)
        with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            ders += list(pool.map(_new_key_der, range(missing), chunksize=8))
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(base64.b64encode(der).decode() + "\n" for der in ders))
        os.replace(tmp, path)
    identities = []
    for der in ders[:count]:
        # Our own freshly made keys: the slow prime check adds nothing here.
        key = serialization.load_der_private_key(
            der, password=None, unsafe_skip_rsa_key_validation=True
        )
        assert isinstance(key, RSAPrivateKey)
        identities.append(Identity.from_private_key(key))
    return identities


# --------------------------------------------------------------------------- peer B


class PeerProcess:
    """A real peer_chat.py with piped standard input kept open; its output goes to files."""

    def __init__(
        self, name: str, data_dir: Path, *, prefix: Sequence[str] = (), port: int | None = None
    ) -> None:
        self.name = name
        self.port = port or free_tcp_port()
        self.data_dir = data_dir
        self._out_path = data_dir.parent / f"{name}-{self.port}.out"
        self._err_path = data_dir.parent / f"{name}-{self.port}.err"
        self._out = open(self._out_path, "wb")  # noqa: SIM115 (closed in close())
        self._err = open(self._err_path, "wb")  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                [sys.executable, *prefix, *peer_command(name, self.port, data_dir)],
                cwd=ROOT,
                env=child_env(),
                stdin=subprocess.PIPE,
                stdout=self._out,
                stderr=self._err,
            )
        except BaseException:
            self._out.close()
            self._err.close()
            raise

    @property
    def address(self) -> tuple[str, int]:
        return (LOOPBACK, self.port)

    def wait_ready(self, timeout: float = STEP_TIMEOUT) -> None:
        budget = Budget(timeout)
        while not budget.exhausted():
            if PROMPT in self._out_path.read_bytes():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        raise RuntimeError(f"peer {self.name} did not reach its menu: {self.tail()}")

    def tail(self) -> str:
        text = self._err_path.read_text(errors="replace") or self._out_path.read_text(
            errors="replace"
        )
        return text.strip()[-500:] or f"exit code {self.proc.poll()}"

    def close(self, timeout: float = 10.0) -> None:
        """End of input is the user leaving: the peer says goodbye and exits."""
        try:
            stop_child(self.proc, timeout)
        finally:
            self._out.close()
            self._err.close()


@contextlib.contextmanager
def peer_process(
    name: str, data_dir: Path, *, prefix: Sequence[str] = (), port: int | None = None
) -> Iterator[PeerProcess]:
    peer = PeerProcess(name, data_dir, prefix=prefix, port=port)
    try:
        peer.wait_ready()
        yield peer
    finally:
        peer.close()


# --------------------------------------------------------------------------- peer A


class LocalPeer:
    """A Node in this process, built as peer_chat.run() builds it."""

    def __init__(self, name: str, data_dir: Path) -> None:
        keys = KeyManager(data_dir)
        identity = keys.load_or_create_identity()
        sealer = keys.load_or_create_sealer()
        self.store = HistoryStore.open(data_dir / "chat_history.db", sealer)
        self.problems: list[str] = []
        config = NodeConfig(
            name=name, port=free_tcp_port(), data_dir=data_dir, bind=LOOPBACK, discovery=False
        )
        try:
            self.node = Node(config, identity, self.store, self._on_event)
            self.node.start()
        except BaseException:
            self.store.close()
            raise
        self.node.run()

    def _on_event(self, event: UiEvent) -> None:
        if isinstance(event, Problem) and len(self.problems) < 20:
            self.problems.append(event.text)

    def connect(self, peer: PeerProcess) -> str:
        """A session to `peer`; returns its fingerprint."""
        result = self.node.connect(*peer.address)
        if not result.ok:
            raise RuntimeError(f"cannot connect to {peer.name}: {result.detail}")
        record = self.store.peer_by_address(*peer.address)
        if record is None:
            raise RuntimeError(f"{peer.name} is connected but not recorded")
        return record.fingerprint

    def in_loop(self, fn: Callable[[], T]) -> T:
        """Run `fn` in the node's network thread (to start or stop a profiler there)."""

        async def call() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self.node.loop).result(STEP_TIMEOUT)

    def close(self) -> None:
        try:
            self.node.close()
        finally:
            self.store.close()


@contextlib.contextmanager
def local_peer(name: str, data_dir: Path) -> Iterator[LocalPeer]:
    peer = LocalPeer(name, data_dir)
    try:
        yield peer
    finally:
        peer.close()


def send_times(peer: LocalPeer, fp: str, *, count: int, max_seconds: float) -> list[float]:
    """Seconds from send_to_peer to its DELIVERED result, for up to `count` sequential sends."""
    samples: list[float] = []
    budget = Budget(max_seconds)
    node = peer.node
    while len(samples) < count and (not samples or not budget.exhausted()):
        start = time.perf_counter_ns()
        result = node.send_to_peer(fp, TEXT)
        samples.append((time.perf_counter_ns() - start) / 1e9)
        if result.outcome is not Outcome.DELIVERED:
            raise RuntimeError(f"send ended {result.outcome.value}: {result.detail}")
    return samples


def pipelined_rate(peer: LocalPeer, fp: str, *, count: int) -> float:
    """Messages per second from submit of `count` until all are acknowledged."""
    texts = [TEXT] * count
    start = time.perf_counter()
    ids = peer.node.submit(fp, texts)
    if not peer.node.wait_delivered(ids, timeout=max(STEP_TIMEOUT, count / 500)):
        raise RuntimeError(f"{count} pipelined messages were not all acknowledged in time")
    return count / (time.perf_counter() - start)


def stored_incoming(data_dir: Path) -> int:
    """Incoming messages in a stopped peer's history (read-only)."""
    uri = "file:" + str((data_dir / "chat_history.db").absolute()) + "?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        row = conn.execute("SELECT COUNT(*) FROM messages WHERE direction = 'in'").fetchone()
    return int(row[0])


# --------------------------------------------------------------------------- channel client


class ChannelClient(asyncio.Protocol):
    """An initiator session from this process: handshake, then Ping; answers B's pings."""

    def __init__(self, credentials: Credentials, loop: asyncio.AbstractEventLoop) -> None:
        self.channel = SecureChannel(Role.INITIATOR, credentials)
        self.transport: asyncio.Transport | None = None
        self.answered: asyncio.Future[None] = loop.create_future()  # B's Pong to our first Ping
        self.lost: asyncio.Future[None] = loop.create_future()
        self.pinged = 0  # pings from B answered (B pings a session that is quiet)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.channel.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            events = self.channel.receive_data(data)
        except ProtocolError as exc:
            self._broken(f"protocol error: {exc}")
            return
        for event in events:
            if isinstance(event, HandshakeComplete):
                self.channel.send_message(Ping(FIRST_PING))  # goes out with message 3
            elif isinstance(event, MessageReceived):
                message = event.message
                if isinstance(message, Pong) and message.nonce == FIRST_PING:
                    if not self.answered.done():
                        self.answered.set_result(None)
                elif isinstance(message, Ping):
                    self.pinged += 1
                    self.channel.send_message(Pong(message.nonce))
                elif isinstance(message, Bye):
                    self._broken(f"peer said goodbye: {message.reason}")
                    return
        out = self.channel.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._settle_answered(f"connection lost: {exc}" if exc else "connection closed")
        if not self.lost.done():
            self.lost.set_result(None)

    def _broken(self, why: str) -> None:
        self._settle_answered(why)
        if self.transport is not None:
            self.transport.abort()

    def _settle_answered(self, why: str) -> None:
        if not self.answered.done():
            self.answered.set_exception(ConnectionError(why))
            self.answered.exception()  # retrieved: nobody may be waiting any more

    @property
    def alive(self) -> bool:
        return not self.lost.done()

    async def close(self, timeout: float = STEP_TIMEOUT) -> None:
        """Half-close and wait until B has closed too (so B has dropped the session)."""
        transport = self.transport
        if transport is None or self.lost.done():
            return
        if not transport.is_closing():
            transport.write_eof()
        try:
            await asyncio.wait_for(asyncio.shield(self.lost), timeout)
        except TimeoutError:
            transport.abort()


async def open_client(
    credentials: Credentials,
    address: tuple[str, int],
    *,
    source: str | None = None,
    timeout: float = STEP_TIMEOUT,
) -> ChannelClient:
    """An authenticated session to `address` whose first Ping has been answered."""
    loop = asyncio.get_running_loop()
    local = (source, 0) if source is not None else None
    _, client = await asyncio.wait_for(
        loop.create_connection(
            lambda: ChannelClient(credentials, loop), *address, local_addr=local
        ),
        timeout,
    )
    try:
        await asyncio.wait_for(asyncio.shield(client.answered), timeout)
    except BaseException:
        if client.transport is not None:
            client.transport.abort()
        raise
    return client


async def handshake_times(
    credentials: Credentials, address: tuple[str, int], *, count: int, max_seconds: float
) -> list[float]:
    """Seconds from connect() to B's answer to the first frame, one session after another."""
    samples: list[float] = []
    budget = Budget(max_seconds)
    while len(samples) < count and (not samples or not budget.exhausted()):
        start = time.perf_counter_ns()
        client = await open_client(credentials, address)
        samples.append((time.perf_counter_ns() - start) / 1e9)
        await client.close()  # B keeps one session per identity: gone before the next
    return samples


# --------------------------------------------------------------------------- architecture floor

_ASYNCIO_ECHO = """
import asyncio, sys

class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), stop.set)
    await stop.wait()

asyncio.run(main())
"""


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
    event loop thread that sends a message to another asyncio process and awaits its
    echo (Node.send_to_peer minus crypto, storage and bookkeeping)."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _ASYNCIO_ECHO],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._client = _EchoClient()
        self._payload = TEXT.encode()
        try:
            assert self._proc.stdout is not None
            port = int(read_line(self._proc.stdout, STEP_TIMEOUT))
            self._thread.start()
            self._call(self._connect(port))
        except BaseException:
            self.close()
            raise

    async def _connect(self, port: int) -> None:
        await self._loop.create_connection(lambda: self._client, LOOPBACK, port)

    async def _round_trip(self) -> None:
        client = self._client
        assert client.transport is not None
        client.waiter = self._loop.create_future()
        client.expected = len(self._payload)
        client.transport.write(self._payload)
        await asyncio.wait_for(client.waiter, STEP_TIMEOUT)

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(STEP_TIMEOUT)

    def round_trips(self, *, count: int, max_seconds: float) -> list[float]:
        samples: list[float] = []
        budget = Budget(max_seconds)
        while len(samples) < count and (not samples or not budget.exhausted()):
            start = time.perf_counter_ns()
            self._call(self._round_trip())
            samples.append((time.perf_counter_ns() - start) / 1e9)
        return samples

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


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (clock-tick resolution)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU time spent by A's network thread and by the whole B process."""

    def __init__(self, peer_a: LocalPeer, peer_b: PeerProcess) -> None:
        self._peer_a = peer_a
        self._pid_b = peer_b.proc.pid
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
    latency_cpu_a: Summary  # microseconds of CPU per message
    latency_cpu_b: Summary
    rate: Summary
    echo_rate: Summary
    rate_cpu_a: Summary
    rate_cpu_b: Summary
    handshake: Summary
    connect: Summary


def measure_messages(
    sizes: Sizes, tmp: Path, handshake_identity: Identity
) -> tuple[MessageFigures, int]:
    """Latency, throughput and handshake against one peer B; returns also messages sent."""
    latency_runs: list[list[float]] = []
    echo_runs: list[list[float]] = []
    floor_runs: list[list[float]] = []
    rates: list[float] = []
    echo_rates: list[float] = []
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
        fp = peer_a.connect(peer_b)
        sent += len(send_times(peer_a, fp, count=sizes.warmup_sends, max_seconds=sizes.max_seconds))
        latency_cpu = CpuMeter(peer_a, peer_b)
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
                    send_times(peer_a, fp, count=sizes.sends, max_seconds=sizes.max_seconds)
                )
            sent += len(latency_runs[-1])

        sent += sizes.pipelined // 4
        pipelined_rate(peer_a, fp, count=sizes.pipelined // 4)  # warm up
        rate_cpu = CpuMeter(peer_a, peer_b)
        budget = Budget(sizes.max_seconds)
        while len(rates) < sizes.runs and (not rates or not budget.exhausted()):
            echo_rates.append(echo_throughput(echo, count=sizes.pipelined, size=ECHO_SIZE))
            with rate_cpu.per_message(lambda: sizes.pipelined):
                rates.append(pipelined_rate(peer_a, fp, count=sizes.pipelined))
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
    figures = MessageFigures(
        latency_median=latency_median,
        latency_p99=latency_p99,
        echo_median=echo_median,
        echo_p99=echo_p99,
        floor_median=summarize_runs(floor_runs)[0],
        latency_cpu_a=summarize(latency_cpu.a_us),
        latency_cpu_b=summarize(latency_cpu.b_us),
        rate=summarize(rates),
        echo_rate=summarize(echo_rates),
        rate_cpu_a=summarize(rate_cpu.a_us),
        rate_cpu_b=summarize(rate_cpu.b_us),
        handshake=summarize_runs(handshake_runs)[0],
        connect=summarize_runs(connect_runs)[0],
    )
    return figures, sent


@dataclass(frozen=True)
class MemoryFigures:
    sessions: int
    per_session_kib: Summary
    idle_kib: int
    held_kib: int
    pings_answered: int
    bare_per_connection_kib: Summary
    bare_idle_kib: int


_BARE_SERVER = """
import asyncio, sys

class Hold(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        transport.write(b"+")

    def data_received(self, data):
        pass

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Hold, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), stop.set)
    await stop.wait()

asyncio.run(main())
"""


@contextlib.contextmanager
def bare_server() -> Iterator[tuple[subprocess.Popen[bytes], tuple[str, int]]]:
    """A bare asyncio server process that accepts and holds TCP connections."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _BARE_SERVER],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = read_line(proc.stdout, STEP_TIMEOUT)
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
    idle = min(await _settled_rss(peer.proc.pid, samples=3, interval=0.2))
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
        held = await _settled_rss(
            peer.proc.pid, samples=samples, interval=sizes.hold_seconds / samples
        )
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
    with peer_process("B2", peer_profile("B", tmp / "memory")) as peer:
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


def start_to_menu_times(data_dir: Path, *, count: int, max_seconds: float) -> list[float]:
    """Seconds from spawning peer_chat.py until "Enter choice:" is on its standard output."""
    samples: list[float] = []
    budget = Budget(max_seconds)
    while len(samples) < count and (not samples or not budget.exhausted()):
        command = [sys.executable, *peer_command("S", free_tcp_port(), data_dir)]
        start = time.perf_counter_ns()
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            seen = b""
            with selectors.DefaultSelector() as selector:
                selector.register(proc.stdout, selectors.EVENT_READ)
                deadline = time.monotonic() + STEP_TIMEOUT
                while PROMPT not in seen:
                    left = deadline - time.monotonic()
                    if left <= 0 or not selector.select(left):
                        raise RuntimeError("peer_chat did not reach its menu in time")
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        raise RuntimeError(f"peer_chat exited before its menu: {seen[-300:]!r}")
                    seen += chunk
            samples.append((time.perf_counter_ns() - start) / 1e9)
        finally:
            stop_child(proc, 10)
    return samples


def measure_start(sizes: Sizes, tmp: Path) -> tuple[Summary, Summary]:
    """(start to menu, python -c pass), in seconds."""
    data_dir = peer_profile("S", tmp / "start")
    start_to_menu_times(data_dir, count=1, max_seconds=STEP_TIMEOUT)  # history created
    menu: list[float] = []
    bare: list[float] = []
    budget = Budget(sizes.max_seconds * 2)
    while len(menu) < sizes.starts and (not menu or not budget.exhausted()):
        bare += python_start_times(count=1)
        menu += start_to_menu_times(data_dir, count=1, max_seconds=STEP_TIMEOUT)
    return summarize(menu), summarize(bare)


# --------------------------------------------------------------------------- profiles

# Runs peer_chat with a profiler in the node's network thread; stats go to argv[1] at exit.
_PROFILED_PEER = """
import cProfile, sys, time
import peer_chat
from peerchat.net import node

profiler = cProfile.Profile(time.thread_time)
run_loop = node.Node._run_loop

def profiled_run_loop(self):
    profiler.enable()
    try:
        run_loop(self)
    finally:
        profiler.disable()
        profiler.dump_stats(sys.argv[1])

node.Node._run_loop = profiled_run_loop
sys.exit(peer_chat.main(sys.argv[3:]))  # after "-c", the stats path, peer_chat.py
"""


def _stats_text(stats_source: cProfile.Profile | str, title: str) -> str:
    stream = io.StringIO()
    stream.write(f"==== {title}\n")
    stats = pstats.Stats(stats_source, stream=stream).strip_dirs()
    stream.write("\n---- top 30 by cumulative time\n")
    stats.sort_stats(pstats.SortKey.CUMULATIVE).print_stats(30)
    stream.write("\n---- top 30 by own time (tottime)\n")
    stats.sort_stats(pstats.SortKey.TIME).print_stats(30)
    return stream.getvalue()


def profile_paths(sizes: Sizes, tmp: Path, results_dir: Path = RESULTS_DIR) -> list[Path]:
    """cProfile of A's and B's network threads on the latency and throughput paths."""
    results_dir.mkdir(parents=True, exist_ok=True)
    b_dir = peer_profile("B", tmp / "profile")
    written: list[Path] = []
    with local_peer("A", peer_profile("A", tmp / "profile")) as peer_a:
        work: list[tuple[str, str, Callable[[str], object]]] = [
            (
                "latency",
                f"{sizes.profile_sends} sequential Node.send_to_peer calls",
                lambda fp: send_times(
                    peer_a, fp, count=sizes.profile_sends, max_seconds=STEP_TIMEOUT * 3
                ),
            ),
            (
                "throughput",
                f"Node.submit of {sizes.profile_pipelined} messages, then wait_delivered",
                lambda fp: pipelined_rate(peer_a, fp, count=sizes.profile_pipelined),
            ),
        ]
        for label, what, action in work:
            b_stats = tmp / "profile" / f"b-{label}.prof"
            profiler = cProfile.Profile(time.thread_time)
            with peer_process("B", b_dir, prefix=("-c", _PROFILED_PEER, str(b_stats))) as peer_b:
                fp = peer_a.connect(peer_b)
                send_times(peer_a, fp, count=20, max_seconds=STEP_TIMEOUT)  # warm
                peer_a.in_loop(profiler.enable)
                try:
                    action(fp)
                finally:
                    peer_a.in_loop(profiler.disable)
            parts = [
                f"peer_chat bench profile: {label} path, {what}.\n"
                "cProfile with the thread's CPU time as its clock (time.thread_time), so\n"
                "time spent waiting for the other peer is not counted; the profiler's own\n"
                "overhead is, so compare the entries with each other only.\n",
                _stats_text(profiler, "sender: peer A's network thread (in-process Node)"),
            ]
            if b_stats.exists():
                parts.append(
                    _stats_text(
                        str(b_stats), "receiver: peer B's network thread (peer_chat.py process)"
                    )
                )
            else:
                parts.append("==== receiver: no profile was written by peer B\n")
            path = results_dir / f"profile-{label}.txt"
            path.write_text("\n".join(parts))
            written.append(path)
    return written


# --------------------------------------------------------------------------- rows


def message_rows(figures: MessageFigures, sizes: Sizes) -> list[Row]:
    median, p99 = _ms(figures.latency_median), _ms(figures.latency_p99)
    echo_median, echo_p99 = _ms(figures.echo_median), _ms(figures.echo_p99)
    handshake, connect = _ms(figures.handshake), _ms(figures.connect)
    rate, echo_rate = figures.rate, figures.echo_rate
    per_run = f"{sizes.sends} sends per run"
    return [
        figure_row(
            f"send to acknowledgement, stored on both sides ({per_run}), median",
            median.median,
            "ms",
            baseline=echo_median.median,
            baseline_unit="ms",
            spread=median.spread(),
            target="median at most 8x the echo",
            holds=median.median <= 8 * echo_median.median,
        ),
        figure_row(
            f"send to acknowledgement, stored on both sides ({per_run}), p99",
            p99.median,
            "ms",
            baseline=echo_p99.median,
            baseline_unit="ms",
            spread=p99.spread(),
            target="p99 under 2 ms",
            holds=p99.median < 2.0,
        ),
        figure_row(
            f"acknowledged stored messages per second, one session, pipelined "
            f"({sizes.pipelined:,} per run)",
            rate.median,
            "msg/s",
            baseline=echo_rate.median,
            baseline_unit="msg/s",
            spread=rate.spread(),
            target="at least 10,000/s",
            holds=rate.median >= 10_000,
        ),
        figure_row(
            "floor of the design: call into a loop thread + asyncio TCP echo round trip, median",
            _ms(figures.floor_median).median,
            "ms",
            baseline=echo_median.median,
            baseline_unit="ms",
            spread=_ms(figures.floor_median).spread(),
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
            target="median under 5 ms",
            holds=handshake.median < 5.0,
        ),
    ]


def memory_rows(figures: MemoryFigures) -> list[Row]:
    per, bare = figures.per_session_kib, figures.bare_per_connection_kib
    return [
        figure_row(
            f"RSS per session, {figures.sessions:,} authenticated sessions held by one peer "
            f"(baseline: bare asyncio TCP connection)",
            per.median,
            "KiB",
            baseline=bare.median,
            baseline_unit="KiB",
            spread=per.spread(),
            target="1,000 sessions, at most 64 KiB each",
            holds=figures.sessions >= 1000 and per.median <= 64.0,
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


def start_rows(menu: Summary, bare: Summary) -> list[Row]:
    return [
        figure_row(
            "start to menu with existing keys, median",
            menu.median,
            "s",
            baseline=bare.median,
            baseline_unit="s",
            spread=menu.spread(),
            target="under 0.6 s",
            holds=menu.median < 0.6,
        )
    ]


PARTS = ("messages", "sessions", "start", "profile")


def run(quick: bool, *, sizes: Sizes | None = None, parts: Collection[str] = PARTS) -> list[Row]:
    sizes = sizes or (QUICK if quick else FULL)
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown parts: {', '.join(sorted(unknown))}")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-node-") as tmp_name:
        tmp = Path(tmp_name)
        for sub in ("memory", "start", "profile"):
            (tmp / sub).mkdir()
        identities = session_identities(sizes.sessions + 1)
        if "messages" in parts:
            messages, _ = measure_messages(sizes, tmp, identities[0])
            rows += message_rows(messages, sizes)
        if "sessions" in parts:
            rows += memory_rows(measure_memory(sizes, tmp, identities))
        if "start" in parts:
            rows += start_rows(*measure_start(sizes, tmp))
        if "profile" in parts:
            for path in profile_paths(sizes, tmp):
                print(f"bench: profile written to {path}", file=sys.stderr)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_node", description="peer_chat node benchmarks (loopback)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer runs and smaller sizes")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=PARTS, help="parts to run")
    args = parser.parse_args(argv)
    started = time.monotonic()
    print(format_table(run(args.quick, parts=args.only)))
    print(f"({time.monotonic() - started:.1f} s, load average {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
