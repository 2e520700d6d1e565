"""History query time: the last 50 messages of one peer with many stored, vs an empty database.

The stored messages come through the real write path (HistoryStore.add_incoming,
sealed at rest), spread over PEERS peers and written out of order: message n
(its id, its time, its peer n % PEERS) goes in at a shuffled position, so
neither ids nor times follow the order of the rows on disk, and the queried
peer's rows are interleaved with everyone else's as in a real history.
Building a million rows takes a while, so the database is kept under
bench/.cache/, keyed by the row count, the layout and a hash of storage.py (a
changed schema or sealing means a rebuild); a build happens in a side folder
that is renamed into place only once it is complete.

Figures (the baseline of each is the same measurement on an empty database):

- warm: repeated queries on an open store, median and p99;
- first query after open, warm: the store opened again in this process, its
  pages still in the OS page cache;
- first query after open, cold: a fresh process (bench/programs/history_query.py)
  started after the database's pages were dropped from the OS page cache
  (bench/page_cache.py says how, and how many pages stayed cached; a run where
  they could not be dropped is reported as warm, never as cold).

    python -m bench.bench_history [--quick]
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.harness import (
    Row,
    Summary,
    bounded,
    figure_row,
    summarize,
    summarize_runs,
    time_calls,
    timed,
)
from bench.page_cache import Dropped, drop_cached_pages
from bench.peers import ROOT, STEP_TIMEOUT, child_env, program
from bench.registry import module_main
from crypto_utils import KeyManager, Sealer, fingerprint_of
from storage import DeliveryState, Direction, HistoryStore, StoredMessage

CACHE_DIR = Path(__file__).resolve().parent / ".cache"
STORAGE_SOURCE = Path(__file__).resolve().parent.parent / "storage.py"
FULL_COUNT = 1_000_000
QUICK_COUNT = 20_000
PEERS = 10
LIMIT = 50
BATCH = 50_000
BASE_TIME = 1_700_000_000.0
TEXT = "benchmark message {n}: a line of ordinary chat text, about this long"
LAYOUT = "shuffled-v1"  # part of the cache key: how the rows are laid out on disk
SHUFFLE_SEED = 18
DB_FILES = ("chat_history.db", "chat_history.db-wal", "chat_history.db-shm")


def peer_fingerprints(peers: int = PEERS) -> list[str]:
    return [fingerprint_of(f"bench peer {i}".encode()) for i in range(peers)]


def _messages(numbers: Sequence[int], fingerprints: list[str]) -> list[StoredMessage]:
    return [
        StoredMessage(
            msg_id=f"{n:032x}",
            peer_fp=fingerprints[n % len(fingerprints)],
            peer_name=f"peer{n % len(fingerprints)}",
            peer_host="127.0.0.1",
            peer_port=5000 + n % len(fingerprints),
            direction=Direction.IN,
            text=TEXT.format(n=n),
            sent_at=BASE_TIME + n * 0.01,
            stored_at=BASE_TIME + n * 0.01,
            state=DeliveryState.RECEIVED,
        )
        for n in numbers
    ]


def write_order(count: int) -> list[int]:
    """The message numbers 0..count-1 in the order they are written: shuffled, reproducibly."""
    numbers = list(range(count))
    random.Random(SHUFFLE_SEED).shuffle(numbers)
    return numbers


def fill(store: HistoryStore, count: int, *, peers: int = PEERS, batch: int = BATCH) -> None:
    """Store `count` incoming messages over `peers` peers, out of order, `batch` per transaction."""
    fingerprints = peer_fingerprints(peers)
    for i, fingerprint in enumerate(fingerprints):
        der = f"bench peer {i}".encode()
        store.upsert_peer(fingerprint, f"peer{i}", der, "127.0.0.1", 5000 + i, BASE_TIME)
    order = write_order(count)
    for start in range(0, count, batch):
        if not all(store.add_incoming(_messages(order[start : start + batch], fingerprints))):
            raise RuntimeError("benchmark messages collided with existing ones")


def _cache_key() -> str:
    return hashlib.sha256(LAYOUT.encode() + STORAGE_SOURCE.read_bytes()).hexdigest()[:12]


def cached_history(count: int, cache_dir: Path = CACHE_DIR) -> tuple[Path, Sealer]:
    """The folder of a history with `count` messages (built once), and its sealer."""
    key = _cache_key()
    folder = cache_dir / f"history-{count}-{key}"
    if not folder.exists():  # only a finished build is ever renamed to this name
        cache_dir.mkdir(parents=True, exist_ok=True)
        for stale in cache_dir.glob(f"history-{count}-*"):
            shutil.rmtree(stale)  # older builds and interrupted ones
        building = cache_dir / f"history-{count}-{key}.building"
        building.mkdir()
        print(f"bench: building a history of {count:,} messages (cached)", file=sys.stderr)
        started = time.monotonic()
        sealer = KeyManager(building).load_or_create_sealer()
        with HistoryStore.open(building / "chat_history.db", sealer) as store:
            fill(store, count)
        building.rename(folder)
        print(f"bench: built in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return folder, KeyManager(folder).load_or_create_sealer()


def query_times(
    store: HistoryStore, peer_fp: str, *, runs: int, queries: int, max_seconds: float
) -> tuple[Summary, Summary]:
    """(median, p99) seconds of `history(peer_fp, 50)`, each over `runs` runs of `queries`."""

    def query() -> None:
        store.history(peer_fp, limit=LIMIT)

    query()  # warm up
    all_runs = bounded(
        lambda: time_calls(query, count=queries, max_seconds=max_seconds),
        count=runs,
        max_seconds=max_seconds,
    )
    return summarize_runs(all_runs)


def first_query_times(
    path: Path, sealer: Sealer, peer_fp: str, *, runs: int, max_seconds: float
) -> Summary:
    """Seconds of the first `history(peer_fp, 50)` after opening the store, over `runs` opens."""

    def open_and_query() -> float:
        with HistoryStore.open(path, sealer) as store:
            return timed(lambda: store.history(peer_fp, limit=LIMIT))

    return summarize(bounded(open_and_query, count=runs, max_seconds=max_seconds))


def cold_first_query_times(
    folder: Path, peer_fp: str, *, runs: int, max_seconds: float
) -> tuple[Summary, list[Dropped]]:
    """Seconds of the first `history(peer_fp, 50)` in a fresh process, the database's pages
    dropped from the OS page cache before each start; and how each drop went."""
    drops: list[Dropped] = []

    def one() -> float:
        drops.append(drop_cached_pages([folder / name for name in DB_FILES]))
        done = subprocess.run(
            program("history_query", folder, peer_fp, LIMIT),
            cwd=ROOT,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"history query process failed: {done.stderr.strip()[-300:]}")
        return float(json.loads(done.stdout)["query_s"])

    return summarize(bounded(one, count=runs, max_seconds=max_seconds)), drops


def _cold_spread(summary: Summary, drops: Sequence[Dropped]) -> str:
    """The spread, and how the page cache was emptied (the worst drop of the runs)."""
    worst = max(drops, key=lambda d: (d.method == "none", d.resident))
    methods = sorted({d.method for d in drops})
    how = (
        worst.describe() if len(methods) == 1 else f"{'/'.join(methods)}; worst: {worst.describe()}"
    )
    return f"{summary.scaled(1000).spread()}; {how}"


def run(
    quick: bool,
    *,
    count: int | None = None,
    runs: int | None = None,
    queries: int | None = None,
    cache_dir: Path = CACHE_DIR,
) -> list[Row]:
    count = count if count is not None else (QUICK_COUNT if quick else FULL_COUNT)
    runs = runs if runs is not None else (5 if quick else 9)
    queries = queries if queries is not None else (50 if quick else 200)
    max_seconds = 10.0 if quick else 60.0
    peer_fp = peer_fingerprints()[0]
    stored = f"{count:,} stored" + (" (quick)" if quick else "")

    folder, sealer = cached_history(count, cache_dir)
    full_path = folder / "chat_history.db"
    with HistoryStore.open(full_path, sealer) as store:
        got = store.history(peer_fp, limit=LIMIT)
        if len(got) != min(LIMIT, count // PEERS + (count % PEERS > 0)):
            raise RuntimeError(f"history returned {len(got)} messages")
        full_median, full_p99 = query_times(
            store, peer_fp, runs=runs, queries=queries, max_seconds=max_seconds
        )
    full_first = first_query_times(full_path, sealer, peer_fp, runs=runs, max_seconds=max_seconds)

    full_cold, full_drops = cold_first_query_times(
        folder, peer_fp, runs=runs, max_seconds=max_seconds
    )

    with tempfile.TemporaryDirectory(prefix="bench-history-") as empty_name:
        empty_dir = Path(empty_name)
        empty_path = empty_dir / "chat_history.db"
        empty_sealer = KeyManager(empty_dir).load_or_create_sealer()
        with HistoryStore.open(empty_path, empty_sealer) as store:
            empty_median, empty_p99 = query_times(
                store, peer_fp, runs=runs, queries=queries, max_seconds=max_seconds
            )
        empty_first = first_query_times(
            empty_path, empty_sealer, peer_fp, runs=runs, max_seconds=max_seconds
        )
        empty_cold, _ = cold_first_query_times(
            empty_dir, peer_fp, runs=runs, max_seconds=max_seconds
        )

    rows: list[Row] = []
    for label, full, empty in [
        ("median", full_median, empty_median),
        ("p99", full_p99, empty_p99),
        ("first query after open, median", full_first, empty_first),
    ]:
        full_ms, empty_ms = full.scaled(1000), empty.scaled(1000)
        rows.append(
            figure_row(
                f"history: last {LIMIT} of one peer, {stored}, {label}",
                full_ms.median,
                "ms",
                baseline=empty_ms.median,
                baseline_unit="ms",
                spread=full_ms.spread(),
            )
        )
    cold = all(drop.cold for drop in full_drops)
    label = (
        "first query after open, cold (fresh process, pages dropped from the OS cache), median"
        if cold
        else "first query after open, fresh process, pages NOT dropped from the OS cache, median"
    )
    print(f"bench: history cold start: {_cold_spread(full_cold, full_drops)}", file=sys.stderr)
    rows.append(
        figure_row(
            f"history: last {LIMIT} of one peer, {stored}, {label}",
            full_cold.scaled(1000).median,
            "ms",
            baseline=empty_cold.scaled(1000).median,
            baseline_unit="ms",
            spread=_cold_spread(full_cold, full_drops),
        )
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    return module_main(run, __doc__ or "history queries", argv, entry="history")


if __name__ == "__main__":
    sys.exit(main())
