"""Liveness: time from SIGKILL of a peer to its removal from another peer's list.

Two real peer_chat processes on loopback, driven through piped standard input:
an observer that stays up, and a victim started, discovered and killed with
SIGKILL once per run (same profile, so the same identity, and a fresh TCP port
each time). Discovery goes to the loopback broadcast address 127.255.255.255
on a free UDP port only. The clock starts just before the kill and stops when
the observer prints "Peer Victim at ... is offline (timed out)"; each line of
the observer's output is timestamped by a reader thread as it arrives.

The baseline is --peer-timeout. A killed peer says no goodbye, so the observer
can only notice silence: removal is expected at the timeout, minus the time
since the victim's last beacon (up to --beacon-interval), plus up to one
housekeeping tick (0.25 s). The kill comes at a random point of the beacon
cycle. The target is "within timeout + 1 s".

    python -m bench.bench_liveness [--quick]
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from bench.harness import Row, bounded, figure_row, stop_child, summarize
from bench.registry import module_main
from tests.support import free_tcp_port, free_udp_port

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "peer_chat.py"
LOOPBACK_BROADCAST = "127.255.255.255"
PEER_TIMEOUT = 3.0
BEACON_INTERVAL = 0.5
START_WAIT = 20.0  # a peer that has not started or been discovered by then has failed
FULL_RUNS, QUICK_RUNS = 9, 3


class PipedPeer:
    """A peer_chat process with piped standard input; its output lines, timestamped."""

    def __init__(self, name: str, data_dir: Path, discovery_port: int) -> None:
        self.name = name
        self.port = free_tcp_port()
        self.addr = f"127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k != "PEER_CHAT_PASSPHRASE"}
        env.update({"PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8", "LC_ALL": "C.UTF-8"})
        data_dir.mkdir(parents=True, exist_ok=True)
        self._stderr_path = data_dir / "stderr.txt"
        self._stderr = self._stderr_path.open("w", encoding="utf-8")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(SCRIPT),
                "--name",
                name,
                "--port",
                str(self.port),
                "--data-dir",
                str(data_dir),
                "--broadcast",
                LOOPBACK_BROADCAST,
                "--discovery-port",
                str(discovery_port),
                "--beacon-interval",
                str(BEACON_INTERVAL),
                "--peer-timeout",
                str(PEER_TIMEOUT),
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            encoding="utf-8",
        )
        self._lines: list[tuple[float, str]] = []
        self._changed = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            stamp = time.monotonic()
            with self._changed:
                self._lines.append((stamp, line))
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    @property
    def seen(self) -> int:
        """How many lines have arrived: pass it as `after` to wait only for newer ones."""
        with self._changed:
            return len(self._lines)

    def wait_for(self, text: str, *, after: int = 0, timeout: float = START_WAIT) -> float:
        """When the first line from index `after` on containing `text` arrived."""
        deadline = time.monotonic() + timeout
        with self._changed:
            index = after
            while True:
                while index < len(self._lines):
                    stamp, line = self._lines[index]
                    if text in line:
                        return stamp
                    index += 1
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    why = "it exited" if self._eof else f"not within {timeout} s"
                    if self._eof:
                        with contextlib.suppress(OSError):
                            why += ": " + self._stderr_path.read_text(encoding="utf-8").strip()
                    raise RuntimeError(f"{self.name}: {text!r} not printed ({why})")
                self._changed.wait(left)

    def kill(self) -> float:
        """SIGKILL; the monotonic time just before the signal was sent."""
        at = time.monotonic()
        self.proc.kill()
        self._reap()
        return at

    def quit(self) -> None:
        """End of input quits the menu, as option 0 does."""
        self._reap()

    def _reap(self) -> None:
        """Close standard input (end of input), wait for the exit, then close the rest."""
        stop_child(self.proc, 5, close_stdout=False)  # the reader owns stdout until it ends
        self._reader.join(5)
        self._stderr.close()
        if self.proc.stdout is not None:
            with contextlib.suppress(OSError):
                self.proc.stdout.close()


@contextlib.contextmanager
def _peer(name: str, data_dir: Path, discovery_port: int) -> Iterator[PipedPeer]:
    peer = PipedPeer(name, data_dir, discovery_port)
    try:
        peer.wait_for(f"Server listening on port {peer.port}")
        yield peer
    finally:
        peer.quit()


def kill_to_removal(observer: PipedPeer, victim_dir: Path, discovery_port: int) -> float:
    """One run: start the victim, wait until both list each other, kill it, time the removal."""
    mark = observer.seen
    victim = PipedPeer("Victim", victim_dir, discovery_port)
    try:
        victim.wait_for(f"Server listening on port {victim.port}")
        observer.wait_for(f"Discovered peer Victim at {victim.addr}", after=mark)
        victim.wait_for(f"Discovered peer Observer at {observer.addr}")
        # Kill at a random point of the beacon cycle, as a crash would come: right
        # after the discovery exchange the last beacon is always fresh, which would
        # bias every run towards the slow end.
        time.sleep(random.uniform(0.0, BEACON_INTERVAL))
        mark = observer.seen
        killed_at = victim.kill()
    finally:
        victim.quit()
    removed_at = observer.wait_for(
        f"Peer Victim at {victim.addr} is offline (timed out)",
        after=mark,
        timeout=PEER_TIMEOUT + START_WAIT,
    )
    return removed_at - killed_at


def measure(runs: int, max_seconds: float) -> list[float]:
    """Seconds from kill to removal, `runs` times (at least once, fewer if time runs out)."""
    discovery_port = free_udp_port()
    with (
        tempfile.TemporaryDirectory(prefix="bench-liveness-") as tmp,
        _peer("Observer", Path(tmp) / "observer", discovery_port) as observer,
    ):
        victim_dir = Path(tmp) / "victim"
        return bounded(
            lambda: kill_to_removal(observer, victim_dir, discovery_port),
            count=runs,
            max_seconds=max_seconds,
        )


def run(quick: bool) -> list[Row]:
    runs = QUICK_RUNS if quick else FULL_RUNS
    samples = measure(runs, max_seconds=30.0 if quick else 120.0)
    summary = summarize(samples)
    setting = f"--peer-timeout {PEER_TIMEOUT:g} s, --beacon-interval {BEACON_INTERVAL:g} s"
    suffix = " (quick)" if quick else ""
    return [
        figure_row(
            f"SIGKILL to removed from another peer's list ({setting}), median{suffix}",
            summary.median,
            "s",
            baseline=PEER_TIMEOUT,
            baseline_unit="s",
            spread=summary.spread(),
        ),
        figure_row(
            f"SIGKILL to removed from another peer's list, worst of {summary.n} runs{suffix}",
            summary.maximum,
            "s",
            baseline=PEER_TIMEOUT,
            baseline_unit="s",
            spread=f"min-max {summary.minimum:.3f}-{summary.maximum:.3f} (n={summary.n})",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    return module_main(run, "kill-to-removal time on loopback", argv, entry="kill")


if __name__ == "__main__":
    sys.exit(main())
