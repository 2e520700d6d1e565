"""File transfer throughput over loopback, against a raw TCP copy and AES-GCM alone, in one run.

- The transfer: two processes (bench/programs/transfer_peer.py), each a
  transfer role over a real SecureChannel and asyncio TCP on 127.0.0.1. The
  sender offers the file (its SHA-256 computed before the clock starts), the
  receiver accepts at once; the clock runs from the offer to the sender
  hearing that the receiver verified the whole digest and saved the file.
- Baseline: the same bytes copied over one raw TCP connection on loopback
  with `socket.sendfile`, into a file, by a receiving process of its own.
- AES-GCM alone: the same bytes sealed chunk by chunk (the transfer's chunk
  size) with one AESGCM key in this process: the cost of the encryption every
  chunk gets, with nothing else.
- SHA-256 alone, for reading the figures: each side hashes every byte once.
- Ping round trip while the file moves, against the same with the link idle:
  a small frame waits behind at most a window of chunks.
- Chat send-to-acknowledgement latency while a file moves, against the same
  with no transfer: a Node in this process (as bench_messages uses) sends to
  a real peer_chat.py that accepted the file through option 12.

Files live on tmpfs (/dev/shm) where it exists, so that the disk does not set
the pace of either copy. Each figure is the median over runs, with its spread.
Each side's CPU time during the transfer is reported as well (MB per CPU
second of its process): unlike the wall-clock rate it does not depend on what
else the machine runs, and the smaller of the two is the rate the pair would
reach with a core of its own each.

    python -m bench.bench_transfer [--quick]
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench.clients import session_identities
from bench.harness import (
    Row,
    figure_row,
    percentile,
    read_line,
    stop_child,
    summarize,
)
from bench.peers import ROOT, child_env, local_peer, peer_process, peer_profile, program
from bench.registry import module_main
from peerchat.limits import CHUNK_BYTES
from peerchat.net.file_store import inspect_source

MB = 1_000_000
MIB = 1024 * 1024
PING_EVERY = 0.02  # seconds between pings while the file moves
TRANSFER_TIMEOUT = 300.0  # seconds a single transfer may take before the run is called failed


@dataclass(frozen=True)
class Sizes:
    file_mib: int
    runs: int
    chat_sends: int = 200  # sequential chat sends per latency sample set


FULL = Sizes(file_mib=1024, runs=3)
QUICK = Sizes(file_mib=64, runs=2, chat_sends=50)
OFFERED = b" offers "
RECEIVED_FILE = b"Received source.bin from "


def _scratch_parent() -> tuple[str | None, str]:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return str(shm), "tmpfs"
    return None, "the temporary folder"


def make_file(path: Path, size: int) -> None:
    """`size` random bytes."""
    with path.open("wb") as out:
        written = 0
        while written < size:
            written += out.write(os.urandom(min(MIB, size - written)))


@contextlib.contextmanager
def _child(args: list[str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield proc
    finally:
        stop_child(proc, 5.0)


def transfer_once(workdir: Path, source: Path) -> dict[str, object]:
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    with _child(program("transfer_peer", "receive", run_dir)) as receiver:
        assert receiver.stdout is not None
        port = int(read_line(receiver.stdout, 30.0, error="the receiver did not start"))
        sender_args = program("transfer_peer", "send", run_dir, port, source, PING_EVERY)
        with _child(sender_args) as sender:
            assert sender.stdout is not None
            line = read_line(sender.stdout, TRANSFER_TIMEOUT, error="the transfer did not end")
        saved = read_line(receiver.stdout, 30.0, error="the receiver said nothing")
    result: dict[str, object] = json.loads(line)
    said, outcome, receiver_cpu = saved.split()
    if result["outcome"] != "complete" or (said, outcome) != ("saved", "complete"):
        raise RuntimeError(f"transfer ended {result['outcome']} / {saved}")
    result["receiver_cpu"] = float(receiver_cpu)
    received = next((run_dir / "receiver-downloads").iterdir())
    if received.stat().st_size != source.stat().st_size:
        raise RuntimeError("the received file has the wrong size")
    received.unlink()
    return result


def raw_copy_once(workdir: Path, source: Path) -> float:
    """Seconds to copy `source` over one raw loopback TCP connection into a file."""
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    with _child(program("transfer_peer", "sink", run_dir)) as sink:
        assert sink.stdout is not None
        port = int(read_line(sink.stdout, 30.0, error="the sink did not start"))
        started = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port)) as connection, source.open("rb") as f:
            connection.sendfile(f)
            connection.shutdown(socket.SHUT_WR)
            done = read_line(sink.stdout, TRANSFER_TIMEOUT, error="the raw copy did not end")
        elapsed = time.perf_counter() - started
    if done != f"received {source.stat().st_size}":
        raise RuntimeError(f"raw copy: {done}")
    (run_dir / "raw-copy").unlink()
    return elapsed


def seal_once(source: Path) -> float:
    """Seconds to AES-GCM seal `source` chunk by chunk (reading it from the page cache)."""
    aead = AESGCM(os.urandom(32))
    encrypt = aead.encrypt
    started = time.perf_counter()
    with source.open("rb", buffering=0) as f:
        counter = 0
        while chunk := f.read(CHUNK_BYTES):
            encrypt(counter.to_bytes(12, "big"), chunk, None)
            counter += 1
    return time.perf_counter() - started


def hash_once(source: Path) -> float:
    started = time.perf_counter()
    digest = hashlib.sha256()
    with source.open("rb", buffering=0) as f:
        while block := f.read(MIB):
            digest.update(block)
    return time.perf_counter() - started


def chat_during_transfer(
    workdir: Path, source: Path, sends: int
) -> tuple[list[float], list[float]]:
    """Chat send-to-ack times with no transfer, then while `source` moves."""
    with local_peer("Alice", peer_profile("Alice", workdir / "chat")) as alice:
        node = alice.node
        with peer_process(
            "Bob", peer_profile("Bob", workdir / "chat"), watch=(OFFERED, RECEIVED_FILE)
        ) as bob:
            assert bob.watcher is not None
            fp = alice.connect(bob.address)
            idle = alice.send_times(fp, count=sends, max_seconds=60.0)
            offered = bob.watcher.expect(OFFERED, 1)
            received = bob.watcher.expect(RECEIVED_FILE, 1)
            node.send_file(fp, inspect_source(source))
            offered(30.0)
            bob.write(b"12\n1\na\n")  # option 12: the first offer, accepted
            busy: list[float] = []
            while bob.watcher.count(RECEIVED_FILE) == 0:
                busy += alice.send_times(fp, count=1, max_seconds=60.0)
            received(TRANSFER_TIMEOUT)
            return idle, busy[:-1]  # the last send may have ended after the file


def _rate_row(
    figure: str, rates: list[float], baseline: list[float] | None = None, unit: str = "MB/s"
) -> Row:
    summary = summarize(rates)
    return figure_row(
        figure,
        round(summary.median, 1),
        unit,
        baseline=None if baseline is None else round(statistics.median(baseline), 1),
        baseline_unit=None if baseline is None else unit,
        spread=summary.spread(),
    )


def _latency_rows(idle: list[float], busy: list[float]) -> list[Row]:
    rows = []
    for name, q in (("median", 50), ("p99", 99)):
        value = statistics.quantiles(busy, n=100)[q - 1] if len(busy) > 1 else busy[0]
        base = statistics.quantiles(idle, n=100)[q - 1] if len(idle) > 1 else idle[0]
        rows.append(
            figure_row(
                f"ping round trip while a file moves on the same session, {name} "
                "(baseline: the session idle)",
                round(value * 1e3, 3),
                "ms",
                baseline=round(base * 1e3, 3),
                baseline_unit="ms",
                spread=f"n={len(busy)} pings",
            )
        )
    return rows


def _chat_rows(idle: list[float], busy: list[float], label: str) -> list[Row]:
    rows = []
    for name, q in (("median", 50.0), ("p99", 99.0)):
        rows.append(
            figure_row(
                f"chat send to acknowledgement while {label} moves on the same session, "
                f"{name} (baseline: no transfer)",
                round(percentile(busy, q) * 1e3, 3),
                "ms",
                baseline=round(percentile(idle, q) * 1e3, 3),
                baseline_unit="ms",
                spread=f"n={len(busy)} sends during, {len(idle)} without",
            )
        )
    return rows


def run(quick: bool, *, sizes: Sizes | None = None) -> list[Row]:
    sizes = sizes or (QUICK if quick else FULL)
    session_identities(2)  # generated (and cached) here, not inside a timed child
    parent, where = _scratch_parent()
    size = sizes.file_mib * MIB
    label = f"{sizes.file_mib} MiB" if sizes.file_mib < 1024 else f"{sizes.file_mib // 1024} GiB"
    with tempfile.TemporaryDirectory(dir=parent, prefix="peerchat-bench-") as tmp:
        workdir = Path(tmp)
        source = workdir / "source.bin"
        make_file(source, size)
        transfer_rates: list[float] = []
        sender_cpu: list[float] = []
        receiver_cpu: list[float] = []
        raw_rates: list[float] = []
        seal_rates: list[float] = []
        hash_rates: list[float] = []
        idle: list[float] = []
        busy: list[float] = []
        for _ in range(sizes.runs):  # interleaved, so that a slow moment hits all alike
            result = transfer_once(workdir, source)
            transfer_rates.append(size / MB / float(result["seconds"]))  # type: ignore[arg-type]
            sender_cpu.append(size / MB / float(result["cpu"]))  # type: ignore[arg-type]
            receiver_cpu.append(size / MB / float(result["receiver_cpu"]))  # type: ignore[arg-type]
            idle += result["idle_pings"]  # type: ignore[arg-type]
            busy += result["busy_pings"]  # type: ignore[arg-type]
            raw_rates.append(size / MB / raw_copy_once(workdir, source))
            seal_rates.append(size / MB / seal_once(source))
            hash_rates.append(size / MB / hash_once(source))
        chat = chat_during_transfer(workdir, source, sizes.chat_sends)
    rows = [
        _rate_row(
            f"file transfer, {label} over loopback (role + SecureChannel, offer to saved, "
            f"files on {where}), throughput vs raw TCP copy (socket.sendfile)",
            transfer_rates,
            raw_rates,
        ),
        _rate_row(
            f"file transfer, {label}: sender's CPU cost, in MB per CPU second of its process",
            sender_cpu,
            unit="MB/CPU-s",
        ),
        _rate_row(
            f"file transfer, {label}: receiver's CPU cost, in MB per CPU second of its process",
            receiver_cpu,
            unit="MB/CPU-s",
        ),
        _rate_row(f"raw TCP copy of the same {label} (socket.sendfile into a file)", raw_rates),
        _rate_row(
            f"AES-GCM sealing of the same {label} alone ({CHUNK_BYTES // 1024} KiB chunks)",
            seal_rates,
        ),
        _rate_row(f"SHA-256 of the same {label} alone", hash_rates),
    ]
    if busy and idle:
        rows += _latency_rows(idle, busy)
    if chat[1]:
        rows += _chat_rows(chat[0], chat[1], f"a {label} file")
    return rows


def main(argv: list[str] | None = None) -> int:
    return module_main(
        run,
        __doc__.splitlines()[0] if __doc__ else "file transfer",
        argv,
        entry="transfer",
    )


if __name__ == "__main__":
    sys.exit(main())
