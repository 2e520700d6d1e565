"""File transfers in the history: recorded, updated, found again; and histories from before them."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import storage
from crypto_utils import Sealer
from storage import (
    DeliveryState,
    Direction,
    HistoryStore,
    StoredMessage,
    StoredTransfer,
    TransferState,
)

PEER = "A" * 52

# The schema as it was before file transfers (user_version 1), written out in full so
# that this test keeps meaning "a history from before" whatever the schema becomes.
_OLD_SCHEMA = (
    """CREATE TABLE messages (
        seq INTEGER PRIMARY KEY,
        msg_id TEXT NOT NULL,
        peer_fp TEXT,
        peer_name TEXT NOT NULL,
        peer_host TEXT NOT NULL,
        peer_port INTEGER NOT NULL,
        direction TEXT NOT NULL CHECK (direction IN ('out', 'in')),
        body BLOB NOT NULL,
        sent_at REAL NOT NULL,
        stored_at REAL NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed', 'received')),
        detail TEXT,
        UNIQUE (msg_id, direction, peer_fp)
    )""",
    "CREATE INDEX messages_by_peer ON messages (peer_fp, seq)",
    "CREATE INDEX messages_pending ON messages (seq) WHERE state = 'pending'",
    """CREATE TABLE peers (
        fingerprint TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        public_der BLOB NOT NULL,
        host TEXT,
        port INTEGER,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        verified INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX peers_by_address ON peers (host, port)",
    "CREATE TABLE pins (pin_key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL)",
)


@pytest.fixture
def sealer() -> Sealer:
    return Sealer.generate()


@pytest.fixture
def store(tmp_path: Path, sealer: Sealer) -> Iterator[HistoryStore]:
    with HistoryStore.open(tmp_path / "history.db", sealer) as opened:
        yield opened


def transfer(n: int, **changes: object) -> StoredTransfer:
    fields: dict[str, object] = {
        "transfer_id": f"{n:032x}",
        "peer_fp": PEER,
        "peer_name": "Bob",
        "direction": Direction.OUT,
        "file_name": f"report {n}.pdf",
        "size": 2_400_000 + n,
        "sha256": f"{n:064x}",
        "state": TransferState.WAITING,
        "local_path": f"/home/alice/report {n}.pdf",
        "created_at": 1000.0 + n,
        "updated_at": 1000.0 + n,
    }
    fields.update(changes)
    return StoredTransfer(**fields)  # type: ignore[arg-type]


def test_a_transfer_is_recorded_and_found_again(store: HistoryStore) -> None:
    store.add_transfer(transfer(1))
    assert store.get_transfer(f"{1:032x}", Direction.OUT, PEER) == transfer(1)
    assert store.get_transfer(f"{1:032x}", Direction.IN, PEER) is None
    assert store.unfinished_transfers() == [transfer(1)]


def test_states_move_on_and_finished_transfers_are_not_taken_up_again(
    store: HistoryStore,
) -> None:
    for n in range(1, 4):
        store.add_transfer(transfer(n))
    store.update_transfer(f"{1:032x}", Direction.OUT, PEER, TransferState.ACTIVE, 2000.0)
    store.update_transfer(
        f"{2:032x}",
        Direction.OUT,
        PEER,
        TransferState.FAILED,
        2001.0,
        detail="the file does not match its SHA-256 digest",
        abort_code=3,
    )
    store.update_transfer(
        f"{3:032x}", Direction.OUT, PEER, TransferState.COMPLETE, 2002.0, local_path="/x/y"
    )
    unfinished = store.unfinished_transfers()
    assert [(t.transfer_id, t.state, t.updated_at) for t in unfinished] == [
        (f"{1:032x}", TransferState.ACTIVE, 2000.0)
    ]
    failed = store.get_transfer(f"{2:032x}", Direction.OUT, PEER)
    assert failed is not None
    assert (failed.detail, failed.abort_code) == ("the file does not match its SHA-256 digest", 3)
    done = store.get_transfer(f"{3:032x}", Direction.OUT, PEER)
    assert done is not None and done.local_path == "/x/y"
    assert [t.transfer_id for t in store.transfers(limit=2)] == [f"{2:032x}", f"{3:032x}"]


def test_the_same_id_in_both_directions_and_from_two_peers_are_separate(
    store: HistoryStore,
) -> None:
    store.add_transfer(transfer(1))
    store.add_transfer(transfer(1, direction=Direction.IN, local_path=None))
    store.add_transfer(transfer(1, peer_fp="B" * 52))
    assert len(store.transfers()) == 3


def test_file_names_and_paths_are_sealed_at_rest(tmp_path: Path, sealer: Sealer) -> None:
    with HistoryStore.open(tmp_path / "h.db", sealer) as store:
        store.add_transfer(transfer(7, file_name="secret plans.pdf", local_path="/secret/dir"))
        raw = b"".join(path.read_bytes() for path in tmp_path.glob("h.db*"))
        assert b"Bob" in raw  # the row is there to be read (names are not sealed)
    assert b"secret plans" not in raw and b"/secret/dir" not in raw


def test_undecodable_local_paths_survive(store: HistoryStore) -> None:
    odd = "/home/alice/caf\udce9.txt"  # a file name that is not UTF-8 on disk
    store.add_transfer(transfer(1, local_path=odd))
    found = store.get_transfer(f"{1:032x}", Direction.OUT, PEER)
    assert found is not None and found.local_path == odd


def _old_history(path: Path, sealer: Sealer) -> None:
    conn = sqlite3.connect(path)
    for statement in _OLD_SCHEMA:
        conn.execute(statement)
    conn.execute(
        "INSERT INTO messages (msg_id, peer_fp, peer_name, peer_host, peer_port, direction, "
        "body, sent_at, stored_at, state) VALUES (?, ?, 'Bob', '10.0.0.7', 5001, 'out', ?, "
        "1.0, 2.0, 'delivered')",
        # Sealed to its row, as this version seals every body it writes.
        (
            "ab" * 16,
            PEER,
            sealer.seal(b"from before", storage._row_binding("ab" * 16, "out", PEER)),
        ),
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def test_a_history_from_before_transfers_gains_the_table_and_keeps_its_messages(
    tmp_path: Path, sealer: Sealer
) -> None:
    path = tmp_path / "old.db"
    _old_history(path, sealer)
    with HistoryStore.open(path, sealer) as store:
        assert [m.text for m in store.history()] == ["from before"]
        store.add_transfer(transfer(1))
        assert store.unfinished_transfers() == [transfer(1)]
    with sqlite3.connect(path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_schema")}
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    assert "transfers" in tables
    assert version == storage.SCHEMA_VERSION  # the other migrations ran too; transfers is a table
    with HistoryStore.open(path, sealer) as again:  # opening twice adds nothing twice
        assert again.unfinished_transfers() == [transfer(1)]


def test_an_old_history_still_works_for_messages_after_the_upgrade(
    tmp_path: Path, sealer: Sealer
) -> None:
    path = tmp_path / "old.db"
    _old_history(path, sealer)
    with HistoryStore.open(path, sealer) as store:
        store.add_outgoing(
            [
                StoredMessage(
                    msg_id="cd" * 16,
                    peer_fp=PEER,
                    peer_name="Bob",
                    peer_host="10.0.0.7",
                    peer_port=5001,
                    direction=Direction.OUT,
                    text="after",
                    sent_at=3.0,
                    stored_at=3.0,
                    state=DeliveryState.PENDING,
                )
            ]
        )
        assert [m.text for m in store.history()] == ["from before", "after"]
