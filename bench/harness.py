"""Statistics, rows, targets, the table and the JSON file of the benchmarks.

A figure is the median over repeated runs, shown with its spread (IQR from four
runs on, min-max below that) and next to a baseline measured in the same run.
A row is a plain dict so that every figure module can build one without
importing anything; `figure_row` builds a complete one.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
import selectors
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, AnyStr, TypeVar

Row = dict[str, object]
T = TypeVar("T")

ROW_KEYS = (
    "figure",
    "value",
    "unit",
    "baseline",
    "baseline_unit",
    "ratio",
    "spread",
    "target",
    "holds",
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# --------------------------------------------------------------------------- statistics


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    p99: float
    q1: float
    q3: float
    minimum: float
    maximum: float

    def scaled(self, factor: float) -> Summary:
        """The same summary in another unit (seconds -> ms is factor 1000)."""
        return Summary(
            self.n,
            self.median * factor,
            self.p99 * factor,
            self.q1 * factor,
            self.q3 * factor,
            self.minimum * factor,
            self.maximum * factor,
        )

    def spread(self) -> str:
        """IQR when there are enough runs for quartiles to mean something, else min-max."""
        if self.n >= 4:
            return f"IQR {_num(self.q1)}-{_num(self.q3)} (n={self.n})"
        return f"min-max {_num(self.minimum)}-{_num(self.maximum)} (n={self.n})"


def summarize(samples: Sequence[float]) -> Summary:
    if not samples:
        raise ValueError("no samples")
    return Summary(
        n=len(samples),
        median=statistics.median(samples),
        p99=percentile(samples, 99),
        q1=percentile(samples, 25),
        q3=percentile(samples, 75),
        minimum=min(samples),
        maximum=max(samples),
    )


def summarize_runs(runs: Sequence[Sequence[float]]) -> tuple[Summary, Summary]:
    """Per-run medians and per-run p99s, each summarized over the runs.

    The figure for "median" is then the median of the run medians, and its
    spread says how much the runs disagreed; the same for p99.
    """
    runs = [run for run in runs if run]
    if not runs:
        raise ValueError("no runs with samples")
    medians = [statistics.median(run) for run in runs]
    p99s = [percentile(run, 99) for run in runs]
    return summarize(medians), summarize(p99s)


def bounded(produce: Callable[[], T], *, count: int, max_seconds: float) -> list[T]:
    """Up to `count` results of `produce()`, fewer once `max_seconds` have passed; at least one.

    Every measurement loop goes through here, so each is bounded in count and in time.
    """
    deadline = time.monotonic() + max_seconds
    results = [produce()]
    while len(results) < count and time.monotonic() < deadline:
        results.append(produce())
    return results


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of `fn` takes."""
    start = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - start) / 1e9


def time_calls(fn: Callable[[], object], *, count: int, max_seconds: float) -> list[float]:
    """Seconds taken by each of up to `count` calls of `fn` (at least one)."""
    return bounded(lambda: timed(fn), count=count, max_seconds=max_seconds)


# --------------------------------------------------------------------------- child processes


def read_line(
    stream: IO[AnyStr], timeout: float, *, error: str = "no answer from a child process"
) -> AnyStr:
    """One line of a child process's output, stripped; RuntimeError(`error`) if
    nothing comes within `timeout` seconds."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise RuntimeError(error)
    return stream.readline().strip()


def stop_child(
    proc: subprocess.Popen[AnyStr], timeout: float, *, close_stdout: bool = True
) -> None:
    """End of input asks a child process to exit: close its stdin, wait up to `timeout`
    seconds, kill it after that; then close its stdout (a pipe) unless told not to."""
    if proc.stdin is not None and not proc.stdin.closed:
        with contextlib.suppress(OSError):  # a peer that was written to may have gone
            proc.stdin.close()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if close_stdout and proc.stdout is not None:
        proc.stdout.close()


def rss_kib(pid: int) -> int:
    """Resident memory of a process in KiB, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


# --------------------------------------------------------------------------- rows and units

# unit -> (dimension, factor to the dimension's base unit)
_UNITS: dict[str, tuple[str, float]] = {
    "ns": ("time", 1e-9),
    "us": ("time", 1e-6),
    "µs": ("time", 1e-6),
    "ms": ("time", 1e-3),
    "s": ("time", 1.0),
    "B": ("bytes", 1.0),
    "KiB": ("bytes", 1024.0),
    "MiB": ("bytes", 1024.0**2),
    "GiB": ("bytes", 1024.0**3),
    "msg/s": ("rate", 1.0),
    "messages/s": ("rate", 1.0),
    "/s": ("rate", 1.0),
}


def convert(value: float, unit: str, to_unit: str) -> float | None:
    """`value` in `unit` expressed in `to_unit`; None if the units are not comparable."""
    if unit == to_unit:
        return value
    source, target = _UNITS.get(unit), _UNITS.get(to_unit)
    if source is None or target is None or source[0] != target[0]:
        return None
    return value * source[1] / target[1]


def as_number(value: object) -> float | None:
    """`value` as a float if it is a finite int or float (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def ratio_of(value: object, unit: object, baseline: object, baseline_unit: object) -> float | None:
    """value / baseline once both are in one unit; None when that is not possible."""
    number, base = as_number(value), as_number(baseline)
    if number is None or base is None:
        return None
    if isinstance(unit, str) and isinstance(baseline_unit, str):
        converted = convert(base, baseline_unit, unit)
    else:
        converted = base if unit == baseline_unit else None
    if converted is None or converted == 0:
        return None
    return number / converted


def figure_row(
    figure: str,
    value: float | None,
    unit: str,
    *,
    baseline: float | None = None,
    baseline_unit: str | None = None,
    spread: str | None = None,
    target: str = "",
    holds: bool | None = None,
) -> Row:
    return {
        "figure": figure,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "baseline_unit": baseline_unit,
        "ratio": ratio_of(value, unit, baseline, baseline_unit),
        "spread": spread,
        "target": target,
        "holds": holds,
    }


@contextlib.contextmanager
def reporting_child(
    what: str, argv: Sequence[str], cwd: Path, timeout: float, env: dict[str, str] | None = None
) -> Iterator[list[str]]:
    """A child (`what`: "the flood") that prints "ready", works until its standard input
    closes, then prints one line of three figures: the block runs while it works; the list
    holds the figures after.
    """
    proc = subprocess.Popen(
        list(argv), cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    report: list[str] = []
    silent = f"nothing read from {what} within {timeout} s"
    try:
        if read_line(proc.stdout, timeout, error=silent) != b"ready":
            raise RuntimeError(f"{what} did not start (exit code {proc.poll()})")
        yield report
        proc.stdin.close()
        line = read_line(proc.stdout, timeout, error=silent).split()
        if len(line) != 3:
            raise RuntimeError(f"{what} did not report")
        report.extend(field.decode() for field in line)
    finally:
        stop_child(proc, 10)


def round_trip_rows(
    label: str, baseline_runs: Sequence[Sequence[float]], runs: Sequence[Sequence[float]]
) -> list[Row]:
    """ "LABEL, median" and "LABEL, p99" in ms (samples in seconds), each against its baseline."""
    base_median, base_p99 = (s.scaled(1000) for s in summarize_runs(baseline_runs))
    median, p99 = (s.scaled(1000) for s in summarize_runs(runs))
    return [
        figure_row(
            f"{label}, {which}",
            summary.median,
            "ms",
            baseline=base.median,
            baseline_unit="ms",
            spread=summary.spread(),
        )
        for which, summary, base in (("median", median, base_median), ("p99", p99, base_p99))
    ]


def unavailable_row(name: str, reason: str) -> Row:
    return {**figure_row(f"{name}: not available: {reason}", None, ""), "status": "not available"}


def failed_row(name: str, reason: str) -> Row:
    return {**figure_row(f"{name}: failed: {reason}", None, ""), "status": "failed"}


def complete_row(row: Mapping[str, object]) -> Row:
    """A row from any figure module with every key present and the ratio filled in."""
    full: Row = {key: row.get(key) for key in ROW_KEYS}
    full.update({key: value for key, value in row.items() if key not in full})
    if full["ratio"] is None:
        full["ratio"] = ratio_of(
            full["value"], full["unit"], full["baseline"], full["baseline_unit"]
        )
    if full["target"] is None:
        full["target"] = ""
    return full


# --------------------------------------------------------------------------- targets

Check = Callable[[Row], bool | None]


@dataclass(frozen=True)
class Target:
    """A target from the benchmark issue, applied to the rows whose figure names it.

    `match`: words that must all appear in the row's figure (case-insensitive);
    empty matches every row of the module.
    """

    text: str
    check: Check
    match: tuple[str, ...] = ()

    def applies_to(self, figure: str) -> bool:
        lowered = figure.lower()
        return all(word.lower() in lowered for word in self.match)


def _value_in(row: Row, unit: str) -> float | None:
    value, row_unit = as_number(row.get("value")), row.get("unit")
    if value is None or not isinstance(row_unit, str):
        return None
    return convert(value, row_unit, unit)


def under(limit: float, unit: str) -> Check:
    def check(row: Row) -> bool | None:
        value = _value_in(row, unit)
        return None if value is None else value < limit

    return check


def at_most(limit: float, unit: str) -> Check:
    def check(row: Row) -> bool | None:
        value = _value_in(row, unit)
        return None if value is None else value <= limit

    return check


def at_least(limit: float, unit: str) -> Check:
    def check(row: Row) -> bool | None:
        value = _value_in(row, unit)
        return None if value is None else value >= limit

    return check


def ratio_at_most(limit: float) -> Check:
    def check(row: Row) -> bool | None:
        ratio = as_number(row.get("ratio"))
        return None if ratio is None else ratio <= limit

    return check


def within_baseline_plus(extra: float, unit: str) -> Check:
    """value <= baseline + extra (for "within --peer-timeout + 1 s")."""

    def check(row: Row) -> bool | None:
        value = _value_in(row, unit)
        baseline, baseline_unit = as_number(row.get("baseline")), row.get("baseline_unit")
        if value is None or baseline is None or not isinstance(baseline_unit, str):
            return None
        base = convert(baseline, baseline_unit, unit)
        return None if base is None else value <= base + extra

    return check


def apply_targets(row: Row, targets: Sequence[Target]) -> Row:
    """Set target and holds from the first target that names this row.

    A registry target replaces whatever target the module gave: the issue's
    target is the one reported, never a looser one. Where the module judged the
    same target and found it missed (it may know more, such as how many
    sessions were really held), the miss stands. A row no target names keeps
    its own target and verdict.
    """
    figure = str(row.get("figure", ""))
    if row.get("value") is None:  # not available / failed: nothing to judge
        return {**row, "holds": None}
    for target in targets:
        if target.applies_to(figure):
            holds = target.check(row)
            if holds is None:
                print(
                    f"bench: cannot judge {figure!r} against {target.text!r} "
                    f"(unit {row.get('unit')!r})",
                    file=sys.stderr,
                )
            elif row.get("target") == target.text and row.get("holds") is False:
                holds = False
            return {**row, "target": target.text, "holds": holds}
    own = row.get("holds")
    return {**row, "holds": own if isinstance(own, bool) else None}


# --------------------------------------------------------------------------- output


def _num(value: float) -> str:
    """Four significant digits, no scientific notation for the usual ranges."""
    if value == 0 or not math.isfinite(value):
        return str(value)
    magnitude = math.floor(math.log10(abs(value)))
    if magnitude >= 4:
        return f"{value:,.0f}"
    decimals = max(0, 3 - magnitude)
    return f"{value:.{decimals}f}"


def _cell_value(value: object, unit: object) -> str:
    number = as_number(value)
    if number is None:
        return "-" if value is None else str(value)
    return f"{_num(number)} {unit}" if unit else _num(number)


def _cell_ratio(ratio: object) -> str:
    number = as_number(ratio)
    return "-" if number is None else f"{_num(number)}x"


def _cell_holds(holds: object) -> str:
    if holds is True:
        return "yes"
    if holds is False:
        return "no"
    return "n.a."


def _cell_spread(spread: object) -> str:
    if spread is None:
        return "-"
    if isinstance(spread, list | tuple) and len(spread) == 2:
        return f"{spread[0]}-{spread[1]}"
    return str(spread)


TABLE_COLUMNS = ("figure", "value", "spread", "baseline", "ratio", "target", "holds")


def _cells(rows: Sequence[Mapping[str, object]]) -> list[tuple[str, ...]]:
    return [
        (
            str(row.get("figure", "")),
            _cell_value(row.get("value"), row.get("unit")),
            _cell_spread(row.get("spread")),
            _cell_value(row.get("baseline"), row.get("baseline_unit")),
            _cell_ratio(row.get("ratio")),
            str(row.get("target") or "-"),
            _cell_holds(row.get("holds")),
        )
        for row in rows
    ]


def format_markdown(rows: Sequence[Mapping[str, object]], machine: Mapping[str, object]) -> str:
    """The table as Markdown, headed by the machine it ran on (for the README)."""
    heading = (
        f"Measured {machine.get('date', '?')} on {machine.get('cpu_model', '?')} "
        f"({machine.get('cpu_count', '?')} cores), Python {machine.get('python', '?')}, "
        f"{machine.get('platform', '?')}; load average at start "
        f"{machine.get('load_average', '?')}."
    )
    lines = [
        heading,
        "",
        "| " + " | ".join(TABLE_COLUMNS) + " |",
        "|" + "---|" * len(TABLE_COLUMNS),
    ]
    lines += [
        "| " + " | ".join(c.strip().replace("|", "/") for c in line) + " |" for line in _cells(rows)
    ]
    return "\n".join(lines)


def format_table(rows: Sequence[Mapping[str, object]]) -> str:
    cells = _cells(rows)
    widths = [
        max([len(header), *(len(line[i]) for line in cells)])
        for i, header in enumerate(TABLE_COLUMNS)
    ]

    def fmt(line: Sequence[str]) -> str:
        return " | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))

    separator = "-+-".join("-" * width for width in widths)
    return "\n".join([fmt(TABLE_COLUMNS), separator, *(fmt(line) for line in cells)])


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Processor", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, object]:
    info: dict[str, object] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    if hasattr(os, "sched_getaffinity"):
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return info


def write_json(
    path: Path,
    rows: Sequence[Mapping[str, object]],
    *,
    machine: Mapping[str, object],
    **extra: object,
) -> None:
    """Write the results atomically: a .tmp beside the file, then rename over it."""
    document = {"machine": dict(machine), **extra, "rows": list(rows)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n")
    os.replace(tmp, path)
