"""The registry of figure modules and the targets they are judged against.

A figure module exposes `run(quick: bool) -> list[dict]`; adding one is one
`Entry(...)` line. The registry names modules by import path only, so a
figure module can use `module_main` from here without a circular import.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from bench.harness import (
    Target,
    apply_targets,
    at_least,
    at_most,
    complete_row,
    format_table,
    ratio_at_most,
    under,
    within_baseline_plus,
)


@dataclass(frozen=True)
class Entry:
    name: str  # what --only selects
    module: str  # import path of the figure module
    targets: tuple[Target, ...] = ()


# The targets of the benchmark issue. A missed target is reported as missed, never loosened.
# Match words are specific enough for one module to carry several figures (bench_messages).
# Ratio and "baseline +" targets need the row's baseline: the latency rows carry the echo
# round trip (bench.baselines.echo_latency), the kill-to-removal row the --peer-timeout used.
# A row takes the first target that names it, so the more specific targets come first.
LATENCY = (
    Target("median at most 8x the echo", ratio_at_most(8.0), match=("acknowledgement", "median")),
    Target("p99 under 2 ms", under(2.0, "ms"), match=("acknowledgement", "p99")),
)
THROUGHPUT = (Target("at least 10,000/s", at_least(10_000.0, "msg/s"), match=("per second",)),)
HANDSHAKE = (Target("median under 5 ms", under(5.0, "ms"), match=("handshake", "median")),)
SESSIONS = (
    Target("1,000 sessions, at most 64 KiB each", at_most(64.0, "KiB"), match=("per session",)),
)
START_TO_MENU = (Target("under 0.6 s", under(0.6, "s"), match=("menu",)),)
DISCOVERY = (Target("under 2 s", under(2.0, "s"), match=("list each other",)),)
KILL_TO_REMOVAL = (
    Target("within timeout + 1 s", within_baseline_plus(1.0, "s"), match=("removed",)),
)
HISTORY = (Target("under 10 ms", under(10.0, "ms"), match=("history", "median")),)

# The per-message cost targets of the performance work: judged against the floor of the
# design (a thread hop plus an asyncio echo, measured in the same run) and in CPU time.
COST = (
    Target(
        "median at most 1.5x the floor",
        ratio_at_most(1.5),
        match=("acknowledgement", "median", "against the floor"),
    ),
    Target(
        "p99 under 1 ms", under(1.0, "ms"), match=("acknowledgement", "p99", "against the floor")
    ),
    Target(
        "at least 25,000/s", at_least(25_000.0, "msg/s"), match=("per second", "against the floor")
    ),
    Target("at most 250 us", at_most(250.0, "us"), match=("CPU per sequential send",)),
    Target("at most 25 us", at_most(25.0, "us"), match=("CPU per pipelined message",)),
)
MENU = (
    Target(
        "at least 2,000 msg/s", at_least(2_000.0, "msg/s"), match=("through the menu", "per second")
    ),
    Target(
        "within 1.5x of the node's sequential rate",
        at_most(1.5, "x"),
        match=("through the menu", "slower than"),
    ),
)
TRANSFER = (
    Target("at least 150 MB/s", at_least(150.0, "MB/s"), match=("file transfer", "throughput")),
)
JUNK_KEY_FLOOD = (Target("p99 under 20 ms", under(20.0, "ms"), match=("junk identity", "p99")),)

REGISTRY: tuple[Entry, ...] = (
    Entry("baselines", "bench.baselines"),
    Entry("crypto", "bench.bench_crypto"),
    Entry("discovery", "bench.bench_discovery", DISCOVERY),
    Entry("history", "bench.bench_history", HISTORY),
    Entry("messages", "bench.bench_messages", COST + LATENCY + THROUGHPUT + HANDSHAKE),
    Entry("sessions", "bench.bench_sessions", SESSIONS),
    Entry("start", "bench.bench_start", START_TO_MENU),
    Entry("profile", "bench.bench_profile"),
    Entry("menu", "bench.bench_menu", MENU),
    Entry("kill", "bench.bench_liveness", KILL_TO_REMOVAL),
    Entry("flood", "bench.bench_flood"),
    Entry("junkflood", "bench.bench_junk_flood", JUNK_KEY_FLOOD),
    Entry("verify", "bench.bench_verify"),
    Entry("legacy-flood", "bench.bench_legacy_flood"),
    Entry("pex", "bench.bench_pex"),
    Entry("reach", "bench.bench_reach"),
    Entry("transfer", "bench.bench_transfer", TRANSFER),
)

# Names that select several entries: "node" is what one module measured before it was split.
GROUPS: dict[str, tuple[str, ...]] = {"node": ("messages", "sessions", "start", "profile")}


def module_main(
    run: Callable[[bool], Sequence[Mapping[str, object]]],
    description: str,
    argv: Sequence[str] | None = None,
    *,
    entry: str | None = None,
) -> int:
    """`python -m bench.<module> [--quick]`: run one figure module and print its table.

    With `entry`, the name the module is registered under below,
    the rows are judged against the registry's targets as in a full run.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer and shorter runs")
    args = parser.parse_args(argv)
    rows = [complete_row(row) for row in run(args.quick)]
    if entry is not None:
        targets = [t for e in REGISTRY if e.name == entry for t in e.targets]
        rows = [apply_targets(row, targets) for row in rows]
    print(format_table(rows))
    return 0
