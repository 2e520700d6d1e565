"""History query time: the last 50 messages of one peer with many stored, vs an empty database.

The stored messages come through the real write path (HistoryStore.add_incoming,
sealed at rest), spread round-robin over PEERS peers, so the queried peer's
rows are interleaved with everyone else's as in a real history. Building a
million rows takes a while, so the database is kept under bench/.cache/, keyed
by the row count and a hash of storage.py (a changed schema or sealing means a
rebuild); a build happens in a side folder that is renamed into place only
once it is complete.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
import time
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


def peer_fingerprints(peers: int = PEERS) -> list[str]:
    return [fingerprint_of(f"bench peer {i}".encode()) for i in range(peers)]


def _messages(start: int, stop: int, fingerprints: list[str]) -> list[StoredMessage]:
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
        for n in range(start, stop)
    ]


def fill(store: HistoryStore, count: int, *, peers: int = PEERS, batch: int = BATCH) -> None:
    """Store `count` incoming messages spread over `peers` peers, `batch` per transaction."""
    fingerprints = peer_fingerprints(peers)
    for i, fingerprint in enumerate(fingerprints):
        der = f"bench peer {i}".encode()
        store.upsert_peer(fingerprint, f"peer{i}", der, "127.0.0.1", 5000 + i, BASE_TIME)
    for start in range(0, count, batch):
        stop = min(count, start + batch)
        if not all(store.add_incoming(_messages(start, stop, fingerprints))):
            raise RuntimeError("benchmark messages collided with existing ones")


def _cache_key() -> str:
    return hashlib.sha256(STORAGE_SOURCE.read_bytes()).hexdigest()[:12]


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

    with tempfile.TemporaryDirectory(prefix="bench-history-") as empty_dir:
        empty_path = Path(empty_dir) / "chat_history.db"
        empty_sealer = Sealer.generate()
        with HistoryStore.open(empty_path, empty_sealer) as store:
            empty_median, empty_p99 = query_times(
                store, peer_fp, runs=runs, queries=queries, max_seconds=max_seconds
            )
        empty_first = first_query_times(
            empty_path, empty_sealer, peer_fp, runs=runs, max_seconds=max_seconds
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
    return rows
