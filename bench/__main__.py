"""Run the benchmarks: `python -m bench [--quick] [--json PATH] [--only NAME ...]`.

The registry below names every figure module. A figure module exposes
`run(quick: bool) -> list[dict]`, one dict per figure with the keys of
`bench.harness.ROW_KEYS` (target and holds may be left out: the registry's
targets, from the benchmark issue, are applied here). Adding a module is one
`Entry(...)` line. A module that cannot be imported yields a "not available"
row; one whose run() raises yields a "failed" row; neither stops the others.

A target applies to the rows of its module whose figure names contain all of
its `match` words, so a figure module names its rows after the issue's
wording ("... median", "... p99", "history ...", "... to menu", ...). A target
that matches no row is reported as a row of its own, so a renamed figure never
silently drops its target.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.harness import (
    RESULTS_DIR,
    Row,
    Target,
    apply_targets,
    as_number,
    at_least,
    at_most,
    complete_row,
    failed_row,
    figure_row,
    format_table,
    machine_info,
    ratio_at_most,
    unavailable_row,
    under,
    within_baseline_plus,
    write_json,
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
    Entry("transfer", "bench.bench_transfer", TRANSFER),
)

# Names that select several entries: "node" is what one module measured before it was split.
GROUPS: dict[str, tuple[str, ...]] = {"node": ("messages", "sessions", "start", "profile")}


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def collect(entry: Entry, quick: bool) -> list[Row]:
    """The rows of one figure module, with targets applied; never raises for the module's sake."""
    try:
        module = importlib.import_module(entry.module)
        run = module.run
    except Exception as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == entry.module:
            reason = f"{entry.module} is not written yet"
        else:
            reason = _reason(exc)
        return [unavailable_row(entry.name, reason)]
    try:
        produced = run(quick)
        if not isinstance(produced, list) or not produced:
            raise TypeError(f"run() returned {type(produced).__name__}, not a list of rows")
        rows = [complete_row(row) for row in produced]
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        return [failed_row(entry.name, _reason(exc))]
    rows = [apply_targets(row, entry.targets) for row in rows]
    for target in entry.targets:
        if not any(
            row["target"] == target.text and as_number(row["value"]) is not None for row in rows
        ):
            rows.append(figure_row(f"{entry.name}: no figure for target {target.text!r}", None, ""))
    return rows


def select(registry: Sequence[Entry], only: Sequence[str] | None) -> list[Entry]:
    """The entries `--only` names, directly or through a group; all of them without it."""
    if not only:
        return list(registry)
    wanted = {part for name in only for part in GROUPS.get(name, (name,))}
    return [entry for entry in registry if entry.name in wanted]


def _parser(names: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="peer_chat benchmarks (loopback only)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer runs and smaller sizes (a smoke check)"
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help="where to write the results (default: bench/results/latest.json, "
        "or bench/results/quick.json with --quick)",
    )
    choices = [*names, *GROUPS]
    groups = ", ".join(f"{name} = {' + '.join(parts)}" for name, parts in GROUPS.items())
    parser.add_argument(
        "--only",
        nargs="+",
        choices=choices,
        metavar="NAME",
        help=f"run only: {', '.join(names)}; or a group: {groups}",
    )
    return parser


def main(argv: Sequence[str] | None = None, registry: Sequence[Entry] = REGISTRY) -> int:
    args = _parser([entry.name for entry in registry]).parse_args(argv)
    selected = select(registry, args.only)
    machine = machine_info()
    started = time.monotonic()
    rows: list[Row] = []
    for entry in selected:
        print(f"bench: {entry.name} ...", file=sys.stderr, flush=True)
        module_start = time.monotonic()
        rows.extend(collect(entry, args.quick))
        print(
            f"bench: {entry.name} done in {time.monotonic() - module_start:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    duration = time.monotonic() - started

    print(
        f"{machine['cpu_model']} ({machine['cpu_count']} cores), Python {machine['python']}, "
        f"{machine['platform']}, {machine['date']}" + (", --quick" if args.quick else "")
    )
    print(format_table(rows))
    path = args.json or RESULTS_DIR / ("quick.json" if args.quick else "latest.json")
    write_json(
        path,
        rows,
        machine=machine,
        quick=args.quick,
        modules=[entry.name for entry in selected],
        duration_s=round(duration, 1),
    )
    print(f"results written to {path}")
    return 1 if any(row.get("status") == "failed" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
