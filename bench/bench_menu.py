"""Through the menu: the original's own workload, against the node's own sequential sends.

The workload: a script on piped standard input into a real `peer_chat.py`
(`1`, the receiver's IP, its port, a 100-byte message; N times), written in
one go once the sender shows its menu. The clock stops when the receiver, a
real `peer_chat.py` too, has shown all N messages on its standard output
(its "Received from ..." lines, timestamped by a reader thread as they
arrive). The baseline is the node's own sequential send rate, measured in the
same run, on the same receiver and the same clock: a Node in a process of its
own (bench/programs/node_sender.py) sends the same N messages one after the
other through Node.send_to_peer. Runs of the two alternate; a few messages of
each go first untimed, so both senders have their session open.

All peers listen on 127.0.0.1 without discovery.

    python -m bench.bench_menu [--quick]
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.harness import Row, figure_row, read_line, stop_child, summarize
from bench.peers import (
    RECEIVED,
    ROOT,
    SENT,
    STEP_TIMEOUT,
    PeerProcess,
    child_env,
    peer_process,
    peer_profile,
    program,
)
from bench.registry import module_main

MESSAGE_BYTES = 100
MESSAGE = ("a message typed at the menu, as the original's own test script typed it; " * 2)[
    :MESSAGE_BYTES
]
WARMUP = 5


@dataclass(frozen=True)
class Sizes:
    runs: int  # runs of each sender, alternating
    messages: int  # messages per run


FULL = Sizes(runs=3, messages=1_000)
QUICK = Sizes(runs=2, messages=200)


def menu_script(host: str, port: int, count: int) -> bytes:
    """What the original's test script typed: option 1, the IP, the port, the message."""
    return f"1\n{host}\n{port}\n{MESSAGE}\n".encode() * count


class NodeSender:
    """bench/programs/node_sender.py: sends N messages one after the other on command."""

    def __init__(self, data_dir: Path, address: tuple[str, int]) -> None:
        self.proc = subprocess.Popen(
            program("node_sender", data_dir, "N", address[0], address[1], MESSAGE_BYTES),
            cwd=ROOT,
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if read_line(self.proc.stdout, STEP_TIMEOUT, error="node sender did not start") != "ready":
            stop_child(self.proc, 5)
            raise RuntimeError(f"node sender did not connect (exit code {self.proc.poll()})")

    def send(self, count: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{count}\n")
        self.proc.stdin.flush()

    def wait_done(self, timeout: float) -> float:
        """The sender's own seconds for the last batch."""
        assert self.proc.stdout is not None
        line = read_line(self.proc.stdout, timeout, error="node sender did not finish")
        if not line.startswith("done "):
            raise RuntimeError(f"node sender said {line!r}")
        return float(line.split()[1])


@contextlib.contextmanager
def node_sender(data_dir: Path, address: tuple[str, int]) -> Iterator[NodeSender]:
    sender = NodeSender(data_dir, address)
    try:
        yield sender
    finally:
        stop_child(sender.proc, 10)


def _batch_timeout(count: int) -> float:
    return STEP_TIMEOUT + count / 20  # at 20 messages per second something is broken


def menu_batch(sender: PeerProcess, receiver: PeerProcess, count: int) -> float:
    """Seconds from writing the script until the receiver has shown all `count` messages."""
    assert sender.watcher is not None and receiver.watcher is not None
    shown = receiver.watcher.expect(RECEIVED, receiver.watcher.count(RECEIVED) + count)
    said = sender.watcher.expect(SENT, sender.watcher.count(SENT) + count)
    host, port = receiver.address
    start = time.perf_counter()
    sender.write(menu_script(host, port, count))
    elapsed = shown(_batch_timeout(count)) - start
    said(STEP_TIMEOUT)  # every one was also acknowledged to the sender ("Message sent to")
    return elapsed


def node_batch(sender: NodeSender, receiver: PeerProcess, count: int) -> float:
    """Seconds from the command until the receiver has shown all `count` messages."""
    assert receiver.watcher is not None
    shown = receiver.watcher.expect(RECEIVED, receiver.watcher.count(RECEIVED) + count)
    start = time.perf_counter()
    sender.send(count)
    elapsed = shown(_batch_timeout(count)) - start
    sender.wait_done(STEP_TIMEOUT)
    return elapsed


def run(quick: bool, *, sizes: Sizes | None = None) -> list[Row]:
    sizes = sizes or (QUICK if quick else FULL)
    n = sizes.messages
    menu_rates: list[float] = []
    node_rates: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-menu-") as name:
        tmp = Path(name)
        with (
            peer_process("R", peer_profile("R", tmp), watch=[RECEIVED]) as receiver,
            peer_process("M", peer_profile("M", tmp), watch=[SENT]) as menu,
            node_sender(peer_profile("N", tmp), receiver.address) as node,
        ):
            menu_batch(menu, receiver, WARMUP)
            node_batch(node, receiver, WARMUP)
            for _ in range(sizes.runs):
                menu_rates.append(n / menu_batch(menu, receiver, n))
                node_rates.append(n / node_batch(node, receiver, n))
    menu_rate, node_rate = summarize(menu_rates), summarize(node_rates)
    slower = summarize([b / a for a, b in zip(menu_rates, node_rates, strict=True)])
    workload = f"{n:,} messages of {MESSAGE_BYTES} B"
    return [
        figure_row(
            f"through the menu: {workload} typed on piped standard input, until the "
            "receiver shows them all, messages per second (baseline: the node's own "
            "sequential sends)",
            menu_rate.median,
            "msg/s",
            baseline=node_rate.median,
            baseline_unit="msg/s",
            spread=menu_rate.spread(),
        ),
        figure_row(
            f"through the menu: {workload}, slower than the node's own sequential sends by",
            slower.median,
            "x",
            spread=slower.spread(),
        ),
        figure_row(
            f"the node's own sequential sends (Node.send_to_peer): {workload}, until the "
            "receiver shows them all, messages per second",
            node_rate.median,
            "msg/s",
            spread=node_rate.spread(),
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    return module_main(run, __doc__ or "through the menu", argv, entry="menu")


if __name__ == "__main__":
    sys.exit(main())
