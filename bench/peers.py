"""Real peers for the benchmarks: peer_chat.py processes, an in-process Node, helper programs.

Every peer here listens on 127.0.0.1 only, without discovery (--bind
127.0.0.1, --no-discovery), and keeps the keys it was given under
bench/.cache/, so a start costs no key generation. Helper programs live in
bench/programs/ and are started as scripts with the project root on their
import path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TypeVar

from bench.harness import stop_child
from crypto_utils import KeyManager
from peerchat.events import Outcome, Problem, UiEvent
from peerchat.net.node import Node, NodeConfig
from storage import HistoryStore
from tests.support import free_tcp_port

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "peer_chat.py"
PROGRAMS = Path(__file__).resolve().parent / "programs"
CACHE_DIR = Path(__file__).resolve().parent / ".cache"
LOOPBACK = "127.0.0.1"
PROMPT = b"Enter choice:"
RECEIVED = b"Received from "  # the receiver's line for each message it shows
SENT = b"Message sent to "  # the sender's line for each acknowledged message
TEXT = "benchmark message: a line of ordinary chat text, about this long."  # 65 B
STEP_TIMEOUT = 20.0  # no single step (a start, a connect, a batch) may take longer


class Budget:
    """A deadline for one measurement loop (every loop here is bounded in count and time)."""

    def __init__(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds

    def exhausted(self) -> bool:
        return time.monotonic() >= self._deadline


def raise_fd_limit(wanted: int) -> None:
    """Room for `wanted` descriptors here and in the peers started from here (inherited)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (clock-tick resolution)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- child processes


def child_env() -> dict[str, str]:
    """The environment of every child: no passphrase, UTF-8, the project importable."""
    env = dict(os.environ)
    env.pop("PEER_CHAT_PASSPHRASE", None)
    env["PYTHONIOENCODING"] = "utf-8"
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + path if path else "")
    return env


def program(name: str, *args: object) -> list[str]:
    """The command line of bench/programs/<name>.py, run as a script by this interpreter."""
    script = PROGRAMS / f"{name}.py"
    if not script.exists():
        raise FileNotFoundError(f"no benchmark program {script}")
    return [sys.executable, str(script), *(str(arg) for arg in args)]


def peer_args(name: str, port: int, data_dir: Path) -> list[str]:
    """peer_chat's flags for a loopback-only peer without discovery."""
    return [
        "--name",
        name,
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--bind",
        LOOPBACK,
        "--no-discovery",
        # Throughput runs store far more than a stranger may per hour.
        "--quota-messages",
        "1000000",
        "--quota-mb",
        "1000000",
    ]


def peer_command(name: str, port: int, data_dir: Path) -> list[str]:
    return [sys.executable, str(SCRIPT), *peer_args(name, port, data_dir)]


def peer_profile(name: str, into: Path, cache_dir: Path = CACHE_DIR) -> Path:
    """A new data folder for peer `name` under `into`, holding its cached keys."""
    cached = cache_dir / "node-peers" / name
    if not (cached / "complete").exists():
        shutil.rmtree(cached, ignore_errors=True)
        keys = KeyManager(cached)
        keys.load_or_create_identity()
        keys.load_or_create_sealer()
        (cached / "complete").write_text("keys made by KeyManager\n")
    into.mkdir(parents=True, exist_ok=True)
    folder = into / name
    folder.mkdir(mode=0o700)
    for file in ("private.pem", "public.pem", "secret.key"):
        shutil.copy2(cached / file, folder / file)
    return folder


# --------------------------------------------------------------------------- output watching


class OutputWatcher:
    """Reads a child's output in a thread, counts markers in it and keeps its tail.

    The output is read in chunks (a prompt has no newline); a marker split
    across two chunks is still counted once. `expect` returns the moment a
    count was reached, taken by the reading thread when the chunk arrived.
    """

    def __init__(self, stream: IO[bytes], markers: Sequence[bytes]) -> None:
        self._fd = stream.fileno()
        self._cond = threading.Condition()
        self._counts = dict.fromkeys(markers, 0)
        self._carry = dict.fromkeys(markers, b"")
        self._tail = b""
        self._ended = False
        self._expected: list[tuple[bytes, int, list[float]]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while chunk := os.read(self._fd, 65536):
            now = time.perf_counter()
            with self._cond:
                self._tail = (self._tail + chunk)[-4000:]
                for marker, carry in self._carry.items():
                    text = carry + chunk
                    self._counts[marker] += text.count(marker)
                    self._carry[marker] = text[-(len(marker) - 1) :] if len(marker) > 1 else b""
                for marker, want, when in self._expected:
                    if not when and self._counts[marker] >= want:
                        when.append(now)
                self._cond.notify_all()
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def count(self, marker: bytes) -> int:
        with self._cond:
            return self._counts[marker]

    def tail(self) -> str:
        with self._cond:
            return self._tail.decode("utf-8", "replace")

    def expect(self, marker: bytes, count: int) -> Callable[[float], float]:
        """Register now; the returned wait gives the perf_counter time `count` was reached."""
        when: list[float] = []
        with self._cond:
            if self._counts[marker] >= count:
                when.append(time.perf_counter())
            self._expected.append((marker, count, when))

        def wait(timeout: float) -> float:
            with self._cond:
                if not self._cond.wait_for(lambda: bool(when) or self._ended, timeout) or not when:
                    raise RuntimeError(
                        f"saw {self._counts[marker]} of {count} {marker.decode()!r} "
                        f"in the output: {self.tail()[-300:]}"
                    )
                return when[0]

        return wait

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


# --------------------------------------------------------------------------- a peer_chat process


class PeerProcess:
    """A real peer_chat.py with piped standard input kept open.

    Its output goes to a file by default, so that no thread of the measuring
    process competes with what it measures; with `watch`, a thread counts
    those markers in it instead. `command` replaces `python peer_chat.py`
    (for a profiled peer), the flags stay the same.
    """

    def __init__(
        self,
        name: str,
        data_dir: Path,
        *,
        command: Sequence[str] | None = None,
        port: int | None = None,
        watch: Sequence[bytes] = (),
    ) -> None:
        self.name = name
        self.port = port or free_tcp_port()
        self.data_dir = data_dir
        self._out_path = data_dir.parent / f"{name}-{self.port}.out"
        self._err_path = data_dir.parent / f"{name}-{self.port}.err"
        self._out = None if watch else open(self._out_path, "wb")  # noqa: SIM115 (close())
        self._err = open(self._err_path, "wb")  # noqa: SIM115
        head = list(command) if command is not None else [sys.executable, str(SCRIPT)]
        try:
            self.proc = subprocess.Popen(
                [*head, *peer_args(name, self.port, data_dir)],
                cwd=ROOT,
                env=child_env(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE if watch else self._out,
                stderr=self._err,
            )
        except BaseException:
            if self._out is not None:
                self._out.close()
            self._err.close()
            raise
        self.watcher: OutputWatcher | None = None
        if watch:
            assert self.proc.stdout is not None
            self.watcher = OutputWatcher(self.proc.stdout, [PROMPT, *watch])

    @property
    def address(self) -> tuple[str, int]:
        return (LOOPBACK, self.port)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = STEP_TIMEOUT) -> None:
        if self.watcher is not None:
            try:
                self.watcher.expect(PROMPT, 1)(timeout)
            except RuntimeError:
                raise RuntimeError(
                    f"peer {self.name} did not reach its menu: {self.tail()}"
                ) from None
            return
        budget = Budget(timeout)
        while not budget.exhausted():
            if PROMPT in self._out_path.read_bytes():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        raise RuntimeError(f"peer {self.name} did not reach its menu: {self.tail()}")

    def write(self, data: bytes) -> None:
        """Type `data` at the peer's menu (blocks while its input pipe is full)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def tail(self) -> str:
        out = (
            self.watcher.tail()
            if self.watcher is not None
            else self._out_path.read_text(errors="replace")
        )
        text = self._err_path.read_text(errors="replace") or out
        return text.strip()[-500:] or f"exit code {self.proc.poll()}"

    def close(self, timeout: float = 10.0) -> None:
        """End of input is the user leaving: the peer says goodbye and exits."""
        try:
            stop_child(self.proc, timeout, close_stdout=False)
            if self.watcher is not None:
                self.watcher.join(5)  # ends at the end of output; only then close it
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            if self._out is not None:
                self._out.close()
            self._err.close()


@contextlib.contextmanager
def peer_process(
    name: str,
    data_dir: Path,
    *,
    command: Sequence[str] | None = None,
    port: int | None = None,
    watch: Sequence[bytes] = (),
) -> Iterator[PeerProcess]:
    peer = PeerProcess(name, data_dir, command=command, port=port, watch=watch)
    try:
        peer.wait_ready()
        yield peer
    finally:
        peer.close()


def stored_incoming(data_dir: Path) -> int:
    """Incoming messages in a stopped peer's history (read-only)."""
    uri = "file:" + str((data_dir / "chat_history.db").absolute()) + "?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        row = conn.execute("SELECT COUNT(*) FROM messages WHERE direction = 'in'").fetchone()
    return int(row[0])


# --------------------------------------------------------------------------- a Node in this process


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

    def connect(self, address: tuple[str, int]) -> str:
        """A session to the peer at `address`; returns its fingerprint."""
        result = self.node.connect(*address)
        if not result.ok:
            raise RuntimeError(f"cannot connect to {address}: {result.detail}")
        record = self.store.peer_by_address(*address)
        if record is None:
            raise RuntimeError(f"{address} is connected but not recorded")
        return record.fingerprint

    def in_loop(self, fn: Callable[[], T]) -> T:
        """Run `fn` in the node's network thread (to read its CPU clock, or start a profiler)."""

        async def call() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self.node.loop).result(STEP_TIMEOUT)

    def send_times(
        self, fp: str, *, count: int, max_seconds: float, text: str = TEXT
    ) -> list[float]:
        """Seconds from send_to_peer to its DELIVERED result, for up to `count` sequential sends."""
        samples: list[float] = []
        budget = Budget(max_seconds)
        node = self.node
        while len(samples) < count and (not samples or not budget.exhausted()):
            start = time.perf_counter_ns()
            result = node.send_to_peer(fp, text)
            samples.append((time.perf_counter_ns() - start) / 1e9)
            if result.outcome is not Outcome.DELIVERED:
                raise RuntimeError(f"send ended {result.outcome.value}: {result.detail}")
        return samples

    def pipelined_rate(self, fp: str, *, count: int) -> float:
        """Messages per second from submit of `count` until all are acknowledged."""
        texts = [TEXT] * count
        start = time.perf_counter()
        ids = self.node.submit(fp, texts)
        if not self.node.wait_delivered(ids, timeout=max(STEP_TIMEOUT, count / 500)):
            raise RuntimeError(f"{count} pipelined messages were not all acknowledged in time")
        return count / (time.perf_counter() - start)

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
