"""Start to menu: a real `peer_chat.py` with existing keys and history, against `python -c pass`.

The clock starts before the process is spawned and stops when "Enter choice:"
arrives on its standard output (a pipe read in this thread, no polling). The
peer listens on 127.0.0.1 without discovery; its keys are cached under
bench/.cache/, and a first untimed start creates its history. Starts of the
peer and of `python -c pass` alternate.

    python -m bench.bench_start [--quick]
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.baselines import python_start_times
from bench.harness import Row, Summary, figure_row, stop_child, summarize
from bench.peers import (
    PROMPT,
    ROOT,
    STEP_TIMEOUT,
    Budget,
    child_env,
    peer_command,
    peer_profile,
)
from bench.registry import module_main
from tests.support import free_tcp_port


@dataclass(frozen=True)
class Sizes:
    starts: int  # timed starts to the menu
    max_seconds: float  # time budget of all starts


FULL = Sizes(starts=15, max_seconds=60.0)
QUICK = Sizes(starts=5, max_seconds=10.0)


def start_to_menu_times(data_dir: Path, *, count: int, max_seconds: float) -> list[float]:
    """Seconds from spawning peer_chat.py until "Enter choice:" is on its standard output."""
    samples: list[float] = []
    budget = Budget(max_seconds)
    while len(samples) < count and (not samples or not budget.exhausted()):
        command = peer_command("S", free_tcp_port(), data_dir)
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
    data_dir = peer_profile("S", tmp)
    start_to_menu_times(data_dir, count=1, max_seconds=STEP_TIMEOUT)  # history created
    menu: list[float] = []
    bare: list[float] = []
    budget = Budget(sizes.max_seconds)
    while len(menu) < sizes.starts and (not menu or not budget.exhausted()):
        bare += python_start_times(count=1)
        menu += start_to_menu_times(data_dir, count=1, max_seconds=STEP_TIMEOUT)
    return summarize(menu), summarize(bare)


def start_rows(menu: Summary, bare: Summary) -> list[Row]:
    return [
        figure_row(
            "start to menu with existing keys, median",
            menu.median,
            "s",
            baseline=bare.median,
            baseline_unit="s",
            spread=menu.spread(),
        )
    ]


def run(quick: bool, *, sizes: Sizes | None = None) -> list[Row]:
    sizes = sizes or (QUICK if quick else FULL)
    with tempfile.TemporaryDirectory(prefix="bench-start-") as tmp:
        return start_rows(*measure_start(sizes, Path(tmp)))


def main(argv: list[str] | None = None) -> int:
    return module_main(run, __doc__ or "start to menu", argv, entry="start")


if __name__ == "__main__":
    sys.exit(main())
