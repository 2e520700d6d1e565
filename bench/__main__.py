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
from pathlib import Path

from bench.harness import (
    RESULTS_DIR,
    Row,
    apply_targets,
    as_number,
    complete_row,
    failed_row,
    figure_row,
    format_table,
    machine_info,
    unavailable_row,
    write_json,
)
from bench.registry import GROUPS, REGISTRY, Entry


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
