"""The benchmark harness on tiny sizes: every registered figure yields a numeric row.

Not a timing test: nothing here asserts how fast anything is, only that the
harness measures, judges and reports what it is given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import json
import mmap
import os
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest

from bench import baselines, bench_legacy_flood, bench_sessions
from bench.__main__ import collect, main
from bench.harness import (
    Target,
    apply_targets,
    as_number,
    at_least,
    at_most,
    complete_row,
    convert,
    figure_row,
    format_markdown,
    format_table,
    percentile,
    ratio_at_most,
    summarize,
    summarize_runs,
    under,
    within_baseline_plus,
    write_json,
)
from bench.registry import REGISTRY, Entry
from peerchat.limits import MAX_CONNECTIONS_PER_ADDRESS, MAX_PENDING_PER_ADDRESS

TINY = baselines.Sizes(
    runs=2,
    round_trips=20,
    message_size=64,
    throughput_messages=200,
    connects=5,
    starts=1,
    max_seconds=2.0,
)

# Registered modules that other people are still writing: skipped while they cannot be
# imported. Remove a name once its module lands.
NOT_YET_WRITTEN: frozenset[str] = frozenset()


# --------------------------------------------------------------------------- statistics


def test_summary_of_known_samples() -> None:
    summary = summarize([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (summary.median, summary.q1, summary.q3) == (3.0, 2.0, 4.0)
    assert (summary.minimum, summary.maximum, summary.n) == (1.0, 5.0, 5)
    assert summary.spread() == "IQR 2.000-4.000 (n=5)"
    assert summarize([1.0, 3.0]).spread() == "min-max 1.000-3.000 (n=2)"
    assert percentile([float(i) for i in range(1, 101)], 99) == pytest.approx(99.01)
    assert summary.scaled(1000).median == 3000.0


def test_runs_are_summarized_by_their_medians_and_p99s() -> None:
    medians, p99s = summarize_runs([[1.0, 2.0, 3.0], [10.0, 20.0, 30.0], [5.0, 6.0, 7.0], []])
    assert medians.n == 3
    assert medians.median == 6.0  # median of run medians 2, 20, 6
    assert p99s.maximum == pytest.approx(29.8)  # 20 + 0.98 * (30 - 20)


# --------------------------------------------------------------------------- rows and targets


def test_units_convert_only_within_one_dimension() -> None:
    assert convert(1500.0, "us", "ms") == pytest.approx(1.5)
    assert convert(2.0, "MiB", "KiB") == 2048.0
    assert convert(1.0, "ms", "KiB") is None
    assert convert(1.0, "furlongs", "ms") is None


def test_ratio_is_computed_in_one_unit() -> None:
    row = figure_row("x", 2.0, "ms", baseline=500.0, baseline_unit="us")
    assert row["ratio"] == pytest.approx(4.0)
    assert figure_row("x", 2.0, "ms", baseline=1.0, baseline_unit="KiB")["ratio"] is None


def test_targets_judge_rows() -> None:
    fast = figure_row("latency median", 1500.0, "us", baseline=0.1, baseline_unit="ms")
    assert under(2.0, "ms")(fast) is True
    assert under(1.0, "ms")(fast) is False
    assert ratio_at_most(8.0)(fast) is False  # 15x the baseline
    assert at_least(10_000.0, "msg/s")(figure_row("rate", 9_999.0, "msg/s")) is False
    assert at_least(10_000.0, "msg/s")(figure_row("rate", 10_000.0, "msg/s")) is True
    removal = figure_row("removed", 3.9, "s", baseline=3.0, baseline_unit="s")
    assert within_baseline_plus(1.0, "s")(removal) is True
    late = figure_row("removed", 4.2, "s", baseline=3.0, baseline_unit="s")
    assert within_baseline_plus(1.0, "s")(late) is False
    assert under(2.0, "ms")(figure_row("memory", 3.0, "KiB")) is None  # not comparable


def test_registry_target_replaces_a_looser_one_from_the_module() -> None:
    row = complete_row({"figure": "history median", "value": 20.0, "unit": "ms"})
    row["target"], row["holds"] = "under 1 s", True
    judged = apply_targets(row, [Target("under 10 ms", under(10.0, "ms"), match=("median",))])
    assert (judged["target"], judged["holds"]) == ("under 10 ms", False)


def test_a_miss_the_module_found_for_the_same_target_stands() -> None:
    # The module knows only 5 of the 1,000 sessions were held; the registry sees only KiB.
    row = complete_row(figure_row("RSS per session, 5 sessions", 16.0, "KiB"))
    row["target"], row["holds"] = "1,000 sessions, at most 64 KiB each", False
    target = Target("1,000 sessions, at most 64 KiB each", at_most(64.0, "KiB"), ("per session",))
    assert apply_targets(row, [target])["holds"] is False
    row["target"] = "some looser target of its own"
    assert apply_targets(row, [target])["holds"] is True


def test_target_applies_only_to_rows_that_name_it() -> None:
    targets = [Target("p99 under 2 ms", under(2.0, "ms"), match=("p99",))]
    median = apply_targets(complete_row(figure_row("latency, median", 5.0, "ms")), targets)
    p99 = apply_targets(complete_row(figure_row("latency, p99", 5.0, "ms")), targets)
    assert (median["target"], median["holds"]) == ("", None)
    assert (p99["target"], p99["holds"]) == ("p99 under 2 ms", False)


def test_table_shows_every_column_and_verdict() -> None:
    rows = [
        {**figure_row("a", 1.0, "ms", spread="IQR 1-2"), "target": "t", "holds": True},
        {**figure_row("b", 2.0, "ms"), "target": "t", "holds": False},
        figure_row("c: not available: x", None, ""),
    ]
    lines = format_table(rows).splitlines()
    for column in ("figure", "value", "spread", "baseline", "ratio", "target", "holds"):
        assert column in lines[0]
    assert lines[2].rstrip().endswith("yes")
    assert lines[3].rstrip().endswith("no")
    assert lines[4].rstrip().endswith("n.a.")


def test_json_has_machine_info_and_rows(tmp_path: Path) -> None:
    path = tmp_path / "results" / "latest.json"
    from bench.harness import machine_info

    write_json(path, [figure_row("a", 1.0, "ms")], machine=machine_info(), quick=True)

    document = json.loads(path.read_text())
    for key in ("platform", "python", "cpu_model", "cpu_count", "date"):
        assert document["machine"][key], key
    assert document["quick"] is True
    assert document["rows"][0]["figure"] == "a"
    assert list(path.parent.iterdir()) == [path]  # no .tmp left behind


# --------------------------------------------------------------------------- registry


def test_a_module_that_cannot_be_imported_gives_a_not_available_row() -> None:
    rows = collect(Entry("ghost", "bench.no_such_module_here"), quick=True)
    assert len(rows) == 1
    assert "ghost: not available: bench.no_such_module_here is not written yet" in str(
        rows[0]["figure"]
    )
    assert rows[0]["value"] is None
    assert rows[0]["holds"] is None


def test_a_module_that_fails_gives_a_failed_row(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = types.ModuleType("bench_broken_for_test")

    def run(quick: bool) -> list[dict[str, object]]:
        raise RuntimeError("socket exploded")

    broken.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bench_broken_for_test", broken)

    rows = collect(Entry("broken", "bench_broken_for_test"), quick=True)

    assert [row["figure"] for row in rows] == ["broken: failed: RuntimeError: socket exploded"]
    assert rows[0]["status"] == "failed"


def test_a_target_that_names_no_figure_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("bench_renamed_for_test")
    module.run = lambda quick: [{"figure": "renamed thing", "value": 1.0, "unit": "ms"}]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bench_renamed_for_test", module)
    entry = Entry("renamed", "bench_renamed_for_test", (Target("t", under(1.0, "s"), ("p99",)),))

    rows = collect(entry, quick=True)

    assert [row["figure"] for row in rows] == [
        "renamed thing",
        "renamed: no figure for target 't'",
    ]


def test_registry_names_are_unique_and_modules_live_in_bench() -> None:
    names = [entry.name for entry in REGISTRY]
    assert len(names) == len(set(names))
    assert all(entry.module.startswith("bench.") for entry in REGISTRY)


def _tiny_history(monkeypatch: pytest.MonkeyPatch, cache_dir: Path) -> None:
    history = importlib.import_module("bench.bench_history")
    monkeypatch.setattr(
        history,
        "run",
        functools.partial(history.run, count=200, runs=2, queries=3, cache_dir=cache_dir),
    )


def _tiny_discovery(monkeypatch: pytest.MonkeyPatch, cache_dir: Path) -> None:
    discovery = importlib.import_module("bench.bench_discovery")
    measure = discovery.measure

    def tiny_measure(count: int, runs: int, **options: object) -> list[float]:
        return measure(min(count, 4), 1, **options)  # type: ignore[no-any-return]

    monkeypatch.setattr(discovery, "measure", tiny_measure)


def _tiny(module_name: str, **sizes: object) -> Callable[[pytest.MonkeyPatch, Path], None]:
    """A patch that runs `module_name` with its QUICK sizes made tiny (its real code path)."""

    def patch(monkeypatch: pytest.MonkeyPatch, results_dir: Path) -> None:
        module = importlib.import_module(module_name)
        tiny = dataclasses.replace(module.QUICK, **sizes)
        monkeypatch.setattr(module, "run", functools.partial(module.run, sizes=tiny))

    return patch


def _tiny_profile(monkeypatch: pytest.MonkeyPatch, results_dir: Path) -> None:
    profile = importlib.import_module("bench.bench_profile")
    tiny = dataclasses.replace(profile.QUICK, sends=10, pipelined=50)
    # Tiny profiles go to the test's folder, not over the real ones in bench/results.
    monkeypatch.setattr(
        profile, "run", functools.partial(profile.run, sizes=tiny, results_dir=results_dir)
    )


def _tiny_kill(monkeypatch: pytest.MonkeyPatch, results_dir: Path) -> None:
    monkeypatch.setattr(importlib.import_module("bench.bench_liveness"), "QUICK_RUNS", 1)


# How each module is made small enough for this test (its real code path, tiny sizes).
TINY_PATCHES: dict[str, Callable[[pytest.MonkeyPatch, Path], None]] = {
    "history": _tiny_history,
    "discovery": _tiny_discovery,
    "messages": _tiny(
        "bench.bench_messages", runs=1, sends=10, warmup_sends=2, pipelined=50, handshakes=3
    ),
    "sessions": _tiny("bench.bench_sessions", sessions=5, sessions_per_address=5, hold_seconds=0.1),
    "start": _tiny("bench.bench_start", starts=1),
    "profile": _tiny_profile,
    "costs": _tiny("bench.bench_costs", repeats=1, messages=4, prefill=10),
    "menu": _tiny("bench.bench_menu", runs=1, messages=10),
    "kill": _tiny_kill,
    "flood": _tiny(
        "bench.bench_flood", runs=1, work_runs=1, seconds=0.2, memory_seconds=0.2, warmup=5
    ),
    "junkflood": _tiny("bench.bench_junk_flood", runs=1, seconds=0.3, warmup=5),
    "legacy-flood": _tiny(
        "bench.bench_legacy_flood", runs=1, seconds=0.3, warmup=5, max_seconds=10.0
    ),
    "pex": lambda monkeypatch, _: monkeypatch.setattr(
        importlib.import_module("bench.bench_pex"),
        "run",
        functools.partial(importlib.import_module("bench.bench_pex").run, peers=3),
    ),
    "reach": lambda monkeypatch, _: monkeypatch.setattr(
        importlib.import_module("bench.bench_reach"),
        "run",
        functools.partial(importlib.import_module("bench.bench_reach").run, runs=1),
    ),
    "verify": lambda monkeypatch, _: monkeypatch.setattr(
        importlib.import_module("bench.bench_verify"),
        "run",
        functools.partial(importlib.import_module("bench.bench_verify").run, sizes=(1, 3)),
    ),
    "transfer": _tiny("bench.bench_transfer", runs=1, file_mib=4, chat_sends=5),
}


@pytest.fixture
def tiny_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Make the figure modules run on tiny sizes through the real registry."""
    monkeypatch.setattr(baselines, "run", functools.partial(baselines.run, sizes=TINY))
    for patch in TINY_PATCHES.values():
        with contextlib.suppress(ModuleNotFoundError):  # the registry test reports it
            patch(monkeypatch, tmp_path)


def test_every_registered_module_has_a_tiny_size() -> None:
    # A module without one would run at --quick sizes here: slow, and easy to miss.
    assert set(TINY_PATCHES) == {entry.name for entry in REGISTRY} - {"baselines", "crypto"}


@pytest.mark.slow
@pytest.mark.usefixtures("tiny_runs")
@pytest.mark.parametrize("entry", REGISTRY, ids=[entry.name for entry in REGISTRY])
def test_every_registered_figure_gives_a_numeric_row(entry: Entry) -> None:
    rows = collect(entry, quick=True)

    if rows[0].get("status") == "not available" and entry.name in NOT_YET_WRITTEN:
        reason = str(rows[0]["figure"])
        print(reason)
        pytest.skip(reason)
    assert rows
    for row in rows:
        assert as_number(row["value"]) is not None, row["figure"]
        assert isinstance(row["unit"], str) and row["unit"], row["figure"]
    if entry.targets:
        assert any(row["holds"] is not None for row in rows), "no row was judged"


# --------------------------------------------------------------------------- the real pieces


def test_echo_baselines_measure_loopback() -> None:
    with baselines.echo_server() as address:
        assert address[0] == "127.0.0.1"
        round_trips = baselines.echo_round_trips(address, count=20, max_seconds=5)
        rate = baselines.echo_throughput(address, count=200)
        connects = baselines.connect_times(address, count=5, max_seconds=5)
    assert len(round_trips) == 20
    assert all(0 < t < 5 for t in round_trips)
    assert rate > 0
    assert len(connects) == 5
    assert all(0 < t < 5 for t in connects)


def test_history_cache_is_built_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    history = pytest.importorskip("bench.bench_history")

    first = history.run(True, count=120, runs=1, queries=2, cache_dir=tmp_path)
    assert "building a history of 120 messages" in capsys.readouterr().err
    second = history.run(True, count=120, runs=1, queries=2, cache_dir=tmp_path)
    assert "building" not in capsys.readouterr().err

    assert [row["figure"] for row in first] == [row["figure"] for row in second]
    assert all("120 stored (quick)" in str(row["figure"]) for row in first)
    assert len(list(tmp_path.iterdir())) == 1  # one complete cache folder, nothing half-built


@pytest.mark.usefixtures("tiny_runs")
def test_command_line_writes_table_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "out.json"

    assert main(["--quick", "--only", "baselines", "--json", str(path)]) == 0

    out = capsys.readouterr().out
    assert "raw TCP echo round trip (64 B), median" in out
    assert "python -c pass" in out
    document = json.loads(path.read_text())
    assert document["modules"] == ["baselines"]
    assert all(as_number(row["value"]) is not None for row in document["rows"])


def test_markdown_table_names_the_machine_and_every_row() -> None:
    rows = [
        complete_row({"figure": "echo | median", "value": 0.07, "unit": "ms"}),
        complete_row(
            {
                "figure": "send",
                "value": 0.5,
                "unit": "ms",
                "baseline": 0.07,
                "baseline_unit": "ms",
                "target": "at most 8x",
                "holds": True,
            }
        ),
    ]
    text = format_markdown(rows, {"date": "2026-01-01", "cpu_model": "CPU X", "cpu_count": 2})
    lines = text.splitlines()
    assert "CPU X (2 cores)" in lines[0] and "2026-01-01" in lines[0]
    assert lines[2].startswith("| figure | value |")
    assert lines[4].startswith("| echo / median | 0.07")  # a pipe cannot break the table
    assert lines[5].endswith("| at most 8x | yes |")


# --------------------------------------------------------------------------- the split modules


def test_node_group_selects_what_the_node_module_measured() -> None:
    from bench.__main__ import select
    from bench.registry import GROUPS

    assert not set(GROUPS) & {entry.name for entry in REGISTRY}
    assert all(part in {e.name for e in REGISTRY} for parts in GROUPS.values() for part in parts)
    assert [e.name for e in select(REGISTRY, ["node"])] == [
        "messages",
        "sessions",
        "start",
        "profile",
    ]
    assert [e.name for e in select(REGISTRY, ["kill", "history"])] == ["history", "kill"]
    assert select(REGISTRY, None) == list(REGISTRY)


def test_message_rows_keep_their_names_and_each_takes_its_own_target() -> None:
    messages = importlib.import_module("bench.bench_messages")
    from bench.registry import REGISTRY as registry

    one = summarize([0.001])
    figures = messages.MessageFigures(*([one] * len(dataclasses.fields(messages.MessageFigures))))
    rows = messages.message_rows(figures, messages.FULL)
    targets = next(entry.targets for entry in registry if entry.name == "messages")
    judged = {str(row["figure"]): apply_targets(complete_row(row), targets) for row in rows}

    send = "send to acknowledgement, stored on both sides (1000 sends per run)"
    cpu = "A's network thread (baseline: B, whole process)"
    rate = "acknowledged stored messages per second, one session, pipelined (8,000 per run)"
    expected = {  # the names of the committed results, and the target each is judged by
        f"{send}, median": "median at most 8x the echo",
        f"{send}, p99": "p99 under 2 ms",
        rate: "at least 10,000/s",
        "floor of the design: call into a loop thread + asyncio TCP echo round trip, median": "",
        f"CPU per sequential send: {cpu}": "at most 250 us",
        f"CPU per pipelined message: {cpu}": "at most 25 us",
        "handshake: connect, authenticate, first frame answered, median": "median under 5 ms",
        f"{send}, median, against the floor of the design": "median at most 1.5x the floor",
        f"{send}, p99, against the floor of the design": "p99 under 1 ms",
        f"{rate}, against the floor of the design": "at least 25,000/s",
    }
    assert {figure: row["target"] for figure, row in judged.items()} == expected


def test_output_watcher_counts_markers_split_across_reads() -> None:
    from bench.peers import OutputWatcher

    read_fd, write_fd = os.pipe()
    with open(read_fd, "rb", buffering=0) as reader:
        watcher = OutputWatcher(reader, [b"Received from "])
        reached = watcher.expect(b"Received from ", 3)
        for chunk in (b"Recei", b"ved from A\nReceived from B\nRece", b"ived", b" from C\n"):
            os.write(write_fd, chunk)
        assert reached(5.0) > 0
        os.close(write_fd)
        watcher.join(5.0)
        assert watcher.count(b"Received from ") == 3
        assert watcher.tail().endswith("from C\n")
        with pytest.raises(RuntimeError, match="saw 3 of 4"):
            watcher.expect(b"Received from ", 4)(0.1)  # output ended: no hanging


def test_page_cache_counts_and_drops_a_files_pages(tmp_path: Path) -> None:
    from bench.page_cache import drop_cached_pages, resident_pages

    path = tmp_path / "data"
    path.write_bytes(os.urandom(40 * mmap.PAGESIZE + 1))
    path.read_bytes()

    pages, resident = resident_pages(path)
    assert pages == 41
    assert 0 <= resident <= pages

    dropped = drop_cached_pages([path, tmp_path / "missing-wal"])
    assert dropped.pages == 41
    assert dropped.cold == (dropped.resident == 0)
    assert ("NOT dropped" in dropped.describe()) == (dropped.method == "none")


def test_history_is_written_out_of_order() -> None:
    history = importlib.import_module("bench.bench_history")

    order = history.write_order(1000)
    assert sorted(order) == list(range(1000))
    assert order != sorted(order)
    assert history.write_order(1000) == order  # the same database for the same count


def test_junk_identity_is_a_3072_bit_key_with_a_huge_exponent() -> None:
    import random

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

    from bench.programs import flood

    der, signature = flood.junk_identity_der(random.Random(1))
    key = serialization.load_der_public_key(der)
    assert isinstance(key, RSAPublicKey)
    numbers = key.public_numbers()
    assert key.key_size == 3072
    assert numbers.e.bit_length() == 3071
    assert len(signature) == 384
    assert int.from_bytes(signature, "big") < numbers.n  # checked in full, not refused early


def test_first_flood_message_is_a_valid_36_byte_noise_message() -> None:
    import random

    from bench.clients import session_identities
    from bench.programs import flood
    from peerchat.protocol.channel import Credentials, Role, SecureChannel

    first, channel = flood.Flood("first", random.Random(1)).opening()
    assert len(first) == 36 and channel is not None
    credentials = Credentials.create(session_identities(1)[0], "Responder", 5000)
    responder = SecureChannel(Role.RESPONDER, credentials)
    assert responder.receive_data(first) == []
    assert len(responder.data_to_send()) > 36  # message 2: the key exchange was done


def test_menu_script_types_what_the_original_script_typed() -> None:
    menu = importlib.import_module("bench.bench_menu")

    assert len(menu.MESSAGE.encode()) == 100
    script = menu.menu_script("127.0.0.1", 5000, 3).decode()
    assert script == f"1\n127.0.0.1\n5000\n{menu.MESSAGE}\n" * 3


def test_the_full_runs_fit_the_limits_of_the_peers_they_measure(tmp_path: Path) -> None:
    """A full run must not trip a defence of the peer it measures: a wave of sessions
    from one address all pending at once, and the keyed round trips of a legacy flood
    run stored by a stranger's quota."""
    per_address = bench_sessions.FULL.sessions_per_address
    assert per_address <= min(MAX_PENDING_PER_ADDRESS, MAX_CONNECTIONS_PER_ADDRESS)
    args = bench_legacy_flood.flood_peer_command(5000, 5001, tmp_path)
    quota = int(args[args.index("--quota-messages") + 1])
    full = bench_legacy_flood.FULL
    assert quota >= 2 * full.runs * full.max_messages  # each run: before and under the flood
    assert args[args.index("--legacy-port") + 1] == "5001"
