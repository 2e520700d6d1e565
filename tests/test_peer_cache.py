from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from crypto_utils import fingerprint_of
from peerchat.net.peer_cache import MAX_CACHED_PEERS, read_peer_cache, write_peer_cache
from storage import PeerRecord


def record(n: int, *, host: str | None = "10.0.0.5", port: int | None = 5000) -> PeerRecord:
    return PeerRecord(
        fingerprint=fingerprint_of(f"peer {n}".encode()),
        name=f"Peer{n}",
        public_der=b"\x30\x00",
        host=host,
        port=port,
        first_seen=float(n),
        last_seen=100.0 + n,
        verified=True,
    )


def test_roundtrip_most_recent_first(tmp_path: Path) -> None:
    path = tmp_path / "peers.json"
    write_peer_cache(path, [record(1), record(3, host=None, port=None), record(2)])
    assert read_peer_cache(path) == [
        {
            "fingerprint": record(3).fingerprint,
            "name": "Peer3",
            "host": None,
            "port": None,
            "last_seen": 103.0,
        },
        {
            "fingerprint": record(2).fingerprint,
            "name": "Peer2",
            "host": "10.0.0.5",
            "port": 5000,
            "last_seen": 102.0,
        },
        {
            "fingerprint": record(1).fingerprint,
            "name": "Peer1",
            "host": "10.0.0.5",
            "port": 5000,
            "last_seen": 101.0,
        },
    ]
    assert path.stat().st_mode & 0o777 == 0o600
    # Hints only: no trust, no key material.
    text = path.read_text()
    assert "verified" not in text
    assert "public" not in text


def test_write_replaces_atomically_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "peers.json"
    write_peer_cache(path, [record(1)])
    inode = path.stat().st_ino
    write_peer_cache(path, [record(2)])
    assert path.stat().st_ino != inode  # a new file renamed over the old one
    assert [entry["name"] for entry in read_peer_cache(path)] == ["Peer2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["peers.json"]


def test_write_keeps_the_most_recent_peers(tmp_path: Path) -> None:
    path = tmp_path / "peers.json"
    write_peer_cache(path, [record(n) for n in range(MAX_CACHED_PEERS + 5)])
    entries = read_peer_cache(path)
    assert len(entries) == MAX_CACHED_PEERS
    assert entries[0]["name"] == f"Peer{MAX_CACHED_PEERS + 4}"


def test_write_failure_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="peer_cache"):
        write_peer_cache(tmp_path / "missing-dir" / "peers.json", [record(1)])
    assert "cannot write" in caplog.text


def test_missing_file_reads_as_empty(tmp_path: Path) -> None:
    assert read_peer_cache(tmp_path / "peers.json") == []


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b"\xff\xfe",
        b"[]",
        b'[["10.0.0.5", 5000]]',  # the original program's kind of list
        b'{"version": 2, "peers": []}',
        b'{"version": 1, "peers": {}}',
        b"[" * 100_000,
    ],
    ids=["empty", "broken", "not-utf8", "list", "legacy", "future", "peers-not-list", "deep"],
)
def test_corrupt_file_reads_as_empty(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "peers.json"
    path.write_bytes(content)
    assert read_peer_cache(path) == []


def test_oversized_file_reads_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "peers.json"
    with path.open("wb") as handle:
        handle.write(b'{"version": 1, "peers": [')
        handle.write(b" " * (2 * 1024 * 1024))
        handle.write(b"]}")
    assert read_peer_cache(path) == []


def test_malformed_entries_are_skipped(tmp_path: Path) -> None:
    good = {
        "fingerprint": record(1).fingerprint,
        "name": "Peer1",
        "host": "10.0.0.5",
        "port": 5000,
        "last_seen": 1,
    }
    bad = [
        "a string",
        {**good, "fingerprint": "SHORT"},
        {**good, "name": ""},
        {**good, "name": 7},
        {**good, "host": 5},
        {**good, "port": 0},
        {**good, "port": 70000},
        {**good, "port": True},
        {**good, "port": "5000"},
        {**good, "last_seen": "yesterday"},
        {**good, "last_seen": None},
    ]
    path = tmp_path / "peers.json"
    path.write_text(json.dumps({"version": 1, "peers": [*bad, good]}))
    assert read_peer_cache(path) == [{**good, "last_seen": 1.0}]


def test_non_finite_time_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "peers.json"
    entry = f'{{"fingerprint": "{record(1).fingerprint}", "name": "P", "host": null, '
    path.write_text('{"version": 1, "peers": [' + entry + '"port": null, "last_seen": NaN}]}')
    assert read_peer_cache(path) == []


def test_unreadable_path_reads_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "peers.json"
    os.mkdir(path)
    assert read_peer_cache(path) == []
