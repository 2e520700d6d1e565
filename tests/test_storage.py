from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

import storage
from crypto_utils import Identity, Sealer, fingerprint_of
from peerchat.errors import StorageError
from peerchat.policy import trust
from peerchat.policy.trust import pin_key
from storage import (
    DeliveryState,
    Direction,
    HistoryStore,
    PeerRecord,
    StoredMessage,
)
from tests.support import cannot_set_up, mount_tmpfs, unmount

REPO = Path(__file__).resolve().parent.parent
PEER_A = fingerprint_of(b"peer a")
PEER_B = fingerprint_of(b"peer b")


def msg(
    n: int,
    *,
    direction: Direction = Direction.OUT,
    peer: str | None = PEER_A,
    text: str | None = None,
    state: DeliveryState | None = None,
    msg_id: str | None = None,
    name: str = "Bob",
) -> StoredMessage:
    if state is None:
        state = DeliveryState.PENDING if direction is Direction.OUT else DeliveryState.RECEIVED
    return StoredMessage(
        msg_id=msg_id or f"{n:032x}",
        peer_fp=peer,
        peer_name=name,
        peer_host="10.0.0.7",
        peer_port=5001,
        direction=direction,
        text=f"message {n}" if text is None else text,
        sent_at=1000.0 + n,
        stored_at=2000.0 + n,
        state=state,
    )


def incoming(n: int, **kwargs: object) -> StoredMessage:
    return msg(n, direction=Direction.IN, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def fernet_key() -> bytes:
    return Fernet.generate_key()


@pytest.fixture
def sealer(fernet_key: bytes) -> Sealer:
    return Sealer(fernet_key)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "chat_history.db"


@pytest.fixture
def store(db_path: Path, sealer: Sealer) -> Iterator[HistoryStore]:
    with HistoryStore.open(db_path, sealer) as opened:
        yield opened


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tiny tmpfs mounted at `path` (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        cannot_set_up("needs root to mount a tmpfs")
    mount_tmpfs(path, size)
    try:
        yield path
    finally:
        unmount(path)


# --------------------------------------------------------------------------- opening


def test_new_database_is_private_wal_and_versioned(store: HistoryStore, db_path: Path) -> None:
    assert db_path.stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(db_path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("PRAGMA user_version").fetchone()[0] == storage.SCHEMA_VERSION
    other.close()


def test_history_persists_across_reopen(db_path: Path, sealer: Sealer) -> None:
    with HistoryStore.open(db_path, sealer) as first:
        first.add_outgoing([msg(1)])
        first.add_incoming([incoming(2)])
    with HistoryStore.open(db_path, sealer) as second:
        assert [m.text for m in second.history()] == ["message 1", "message 2"]
        assert [m.msg_id for m in second.pending_messages()] == [msg(1).msg_id]


def _open_and_write_concurrently(path: Path, sealer: Sealer, openers: int) -> list[object]:
    """`openers` threads open the same history at once and each adds one message."""
    barrier = threading.Barrier(openers)
    outcomes: list[object] = []

    def opener(number: int) -> None:
        barrier.wait()
        try:
            with HistoryStore.open(path, sealer) as opened:
                opened.add_outgoing([msg(number)])
            outcomes.append("ok")
        except BaseException as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=opener, args=(n,)) for n in range(openers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_concurrent_first_open_creates_one_schema(tmp_path: Path, sealer: Sealer) -> None:
    # Peers opening a new history at the same moment race for the switch to WAL;
    # a single round lost that race about one time in five, so run many rounds.
    openers = 8
    for round_number in range(30):
        db_path = tmp_path / f"round-{round_number}" / "chat_history.db"
        outcomes = _open_and_write_concurrently(db_path, sealer, openers)
        assert outcomes == ["ok"] * openers, f"round {round_number}"
        with HistoryStore.open(db_path, sealer) as opened:
            assert len(opened.history()) == openers


def test_closed_store_raises_storage_error(db_path: Path, sealer: Sealer) -> None:
    opened = HistoryStore.open(db_path, sealer)
    opened.close()
    opened.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        opened.history()


def test_history_sealed_with_another_key_refused_at_open(db_path: Path, sealer: Sealer) -> None:
    with HistoryStore.open(db_path, sealer) as first:
        first.add_outgoing([msg(1)])
    with pytest.raises(StorageError, match=r"another secret\.key"):
        HistoryStore.open(db_path, Sealer.generate())


def _make_history(path: Path, sealer: Sealer) -> None:
    with HistoryStore.open(path, sealer) as opened:
        opened.add_outgoing([msg(i) for i in range(20)])


def _garbage(path: Path, sealer: Sealer) -> None:
    path.write_bytes(os.urandom(8192))


def _text(path: Path, sealer: Sealer) -> None:
    path.write_bytes(b"these are my notes, not a database\n")


def _truncated(path: Path, sealer: Sealer) -> None:
    _make_history(path, sealer)
    path.write_bytes(path.read_bytes()[:5000])


def _bad_header(path: Path, sealer: Sealer) -> None:
    _make_history(path, sealer)
    data = bytearray(path.read_bytes())
    data[21] = 0x7F  # the fixed "maximum embedded payload fraction" (64)
    path.write_bytes(bytes(data))


def _damaged_schema_page(path: Path, sealer: Sealer) -> None:
    _make_history(path, sealer)
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xa5" * 3996  # page 1 after the header: the schema's root
    path.write_bytes(bytes(data))


def _other_application(path: Path, sealer: Sealer) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE recipes (name TEXT)")
    conn.commit()
    conn.close()


def _newer_schema(path: Path, sealer: Sealer) -> None:
    _make_history(path, sealer)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_garbage, "not a database"),
        (_text, "not a database"),
        (_truncated, "corrupt"),
        (_bad_header, "corrupt"),
        (_damaged_schema_page, "corrupt|not a database"),
        (_other_application, "not a peer_chat history"),
        (_newer_schema, "newer peer_chat"),
    ],
    ids=["garbage", "text", "truncated", "bad-header", "schema-page", "other-app", "newer"],
)
def test_unusable_file_at_open_gives_storage_error_and_is_untouched(
    db_path: Path,
    sealer: Sealer,
    damage: Callable[[Path, Sealer], None],
    expected: str,
) -> None:
    damage(db_path, sealer)
    before = sha256_file(db_path)
    listing = sorted(os.listdir(db_path.parent))
    with pytest.raises(StorageError, match=expected) as info:
        HistoryStore.open(db_path, sealer)
    assert str(db_path) in str(info.value)
    assert "\n" not in str(info.value)
    assert sha256_file(db_path) == before
    assert sorted(os.listdir(db_path.parent)) == listing  # no -wal/-shm left behind


def test_damage_deep_in_the_file_surfaces_as_storage_error(db_path: Path, sealer: Sealer) -> None:
    with HistoryStore.open(db_path, sealer) as opened:
        opened.add_outgoing([msg(n, text="x" * 200) for n in range(3000)])
    data = bytearray(db_path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    middle = (len(data) // page // 2) * page
    data[middle : middle + 4 * page] = b"\xa5" * (4 * page)
    db_path.write_bytes(bytes(data))
    with HistoryStore.open(db_path, sealer) as damaged:  # the cheap check at open passes
        with pytest.raises(StorageError, match="corrupt"):
            damaged.history(limit=10_000)
        assert len(damaged.history(limit=5)) == 5  # the intact newest rows still read


def test_read_only_database_gives_storage_error(tmp_path: Path, sealer: Sealer) -> None:
    if os.geteuid() == 0:
        # Root ignores file modes; a read-only mount is what stops root.
        with tmpfs(tmp_path / "mnt", "1m") as mnt:
            path = mnt / "chat_history.db"
            _make_history(path, sealer)
            before = sha256_file(path)
            subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
            with pytest.raises(StorageError, match="read-only"):
                HistoryStore.open(path, sealer)
            assert sha256_file(path) == before
    else:
        path = tmp_path / "chat_history.db"
        _make_history(path, sealer)
        path.chmod(0o400)
        tmp_path.chmod(0o500)
        try:
            with pytest.raises(StorageError, match="read-only"):
                HistoryStore.open(path, sealer)
        finally:
            tmp_path.chmod(0o700)


def test_locked_database_gives_storage_error(
    store: HistoryStore, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.add_outgoing([msg(1)])
    other = sqlite3.connect(db_path, isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        store._connection().execute("PRAGMA busy_timeout = 50")
        with pytest.raises(StorageError, match="locked"):
            store.add_outgoing([msg(2)])
    finally:
        other.execute("ROLLBACK")
        other.close()
    store.add_outgoing([msg(3)])
    assert [m.text for m in store.history()] == ["message 1", "message 3"]


def test_disk_full_gives_storage_error_and_keeps_earlier_rows(
    tmp_path: Path, sealer: Sealer
) -> None:
    with tmpfs(tmp_path / "mnt", "256k") as mnt:
        path = mnt / "chat_history.db"
        with HistoryStore.open(path, sealer) as full:
            full.add_outgoing([msg(i) for i in range(5)])
            big = os.urandom(16 * 1024).hex()  # 32 KiB of text per message
            with pytest.raises(StorageError, match="database or disk is full"):
                for n in range(100, 200):
                    full.add_outgoing([msg(n, text=big)])
            kept = [m.text for m in full.history(limit=1000)]
            assert kept[:5] == [f"message {i}" for i in range(5)]
            assert all(text == big for text in kept[5:])
        with HistoryStore.open(path, sealer) as reopened:
            assert [m.text for m in reopened.history(limit=1000)] == kept


# --------------------------------------------------------------------------- messages


def test_outgoing_pending_then_delivered_or_failed(store: HistoryStore) -> None:
    store.add_outgoing([msg(1), msg(2), msg(3)])
    assert [m.state for m in store.history()] == [DeliveryState.PENDING] * 3
    store.mark_delivered([msg(1).msg_id])
    store.mark_failed([msg(2).msg_id], "peer unreachable for 7 days")
    by_id = {m.msg_id: m for m in store.history()}
    assert by_id[msg(1).msg_id].state is DeliveryState.DELIVERED
    assert by_id[msg(2).msg_id].state is DeliveryState.FAILED
    assert by_id[msg(2).msg_id].detail == "peer unreachable for 7 days"
    assert by_id[msg(3).msg_id].state is DeliveryState.PENDING
    assert [m.msg_id for m in store.pending_messages()] == [msg(3).msg_id]
    # A late acknowledgement is proof of delivery; a late failure does not undo one.
    store.mark_delivered([msg(2).msg_id])
    store.mark_failed([msg(1).msg_id], "too late")
    by_id = {m.msg_id: m for m in store.history()}
    assert by_id[msg(2).msg_id].state is DeliveryState.DELIVERED
    assert by_id[msg(2).msg_id].detail is None
    assert by_id[msg(1).msg_id].state is DeliveryState.DELIVERED


def test_marking_ignores_incoming_with_the_same_id(store: HistoryStore) -> None:
    store.add_incoming([incoming(1)])
    store.mark_failed([msg(1).msg_id], "x")
    store.mark_delivered([msg(1).msg_id])
    assert store.history()[0].state is DeliveryState.RECEIVED


def test_pending_messages_oldest_first(store: HistoryStore) -> None:
    store.add_outgoing([msg(5), msg(3)])
    store.add_incoming([incoming(9)])
    store.add_outgoing([msg(1, peer=PEER_B), msg(4, peer=None)])
    store.mark_delivered([msg(3).msg_id])
    pending = store.pending_messages()
    assert [m.msg_id for m in pending] == [msg(5).msg_id, msg(1).msg_id, msg(4).msg_id]
    assert pending[2].peer_fp is None
    assert all(m.direction is Direction.OUT for m in pending)


def test_incoming_duplicates_are_ignored(store: HistoryStore) -> None:
    assert store.add_incoming([incoming(1), incoming(2)]) == [True, True]
    assert store.add_incoming([incoming(1, text="a replayed copy")]) == [False]
    assert store.add_incoming([incoming(3), incoming(3)]) == [True, False]
    # The same id from another peer is another message.
    assert store.add_incoming([incoming(1, peer=PEER_B)]) == [True]
    assert [m.text for m in store.history()] == [
        "message 1",
        "message 2",
        "message 3",
        "message 1",
    ]


def test_wrong_direction_is_a_programming_error(store: HistoryStore) -> None:
    with pytest.raises(ValueError, match="outgoing"):
        store.add_outgoing([incoming(1)])
    with pytest.raises(ValueError, match="incoming"):
        store.add_incoming([msg(1)])


def test_history_order_limit_and_peer_filter(store: HistoryStore) -> None:
    for n in range(10):
        peer = PEER_A if n % 2 == 0 else PEER_B
        if n % 3 == 0:
            store.add_incoming([incoming(n, peer=peer)])
        else:
            store.add_outgoing([msg(n, peer=peer)])
    assert [m.text for m in store.history(limit=3)] == ["message 7", "message 8", "message 9"]
    assert len(store.history()) == 10
    assert [m.text for m in store.history(PEER_A, limit=2)] == ["message 6", "message 8"]
    assert [m.sent_at for m in store.history(PEER_B)] == [1001.0, 1003.0, 1005.0, 1007.0, 1009.0]
    assert store.history(limit=0) == []
    first = store.history(PEER_A)[0]
    assert first == incoming(0)


def test_history_search_is_case_insensitive_on_opened_text(store: HistoryStore) -> None:
    store.add_outgoing([msg(1, text="Meet at the Café")])
    store.add_incoming([incoming(2, text="no match here"), incoming(3, text="CAFÉ again?")])
    store.add_outgoing([msg(4, peer=PEER_B, text="café for Bob")])
    assert [m.msg_id for m in store.history(search="café")] == [
        msg(1).msg_id,
        incoming(3).msg_id,
        msg(4).msg_id,
    ]
    assert [m.text for m in store.history(PEER_A, search="CAFÉ", limit=1)] == ["CAFÉ again?"]
    assert store.history(search="nowhere") == []


def test_history_search_pages_through_many_rows(store: HistoryStore) -> None:
    rows = [msg(n, text=f"needle {n}" if n % 100 == 7 else f"hay {n}") for n in range(1500)]
    store.add_outgoing(rows)
    found = store.history(search="NEEDLE", limit=4)
    assert [m.text for m in found] == ["needle 1107", "needle 1207", "needle 1307", "needle 1407"]
    assert len(store.history(search="needle", limit=100)) == 15


def test_history_query_uses_the_peer_index(store: HistoryStore) -> None:
    plan = " ".join(
        str(row[-1])
        for row in store._connection().execute(
            "EXPLAIN QUERY PLAN " + storage._Q_HISTORY_PEER, (PEER_A, 1 << 62, 50)
        )
    )
    assert "messages_by_peer" in plan
    assert "TEMP B-TREE" not in plan  # no sort of the peer's rows


def test_bodies_are_not_stored_in_clear(db_path: Path, sealer: Sealer) -> None:
    secret = "the rendezvous is at the old mill at noon"
    with HistoryStore.open(db_path, sealer) as opened:
        opened.add_outgoing([msg(1, text=secret, name="Bob-the-peer")])
        opened.add_incoming([incoming(2, text=secret.upper())])
        files = [p for p in db_path.parent.iterdir() if p.name.startswith(db_path.name)]
        on_disk = b"".join(p.read_bytes() for p in files)
        assert b"Bob-the-peer" in on_disk  # the grep does find what is stored in clear
        assert secret.encode() not in on_disk
        assert secret.upper().encode() not in on_disk
    assert secret.encode() not in db_path.read_bytes()


# --------------------------------------------------------------------------- consistency


def test_failed_transaction_leaves_nothing(store: HistoryStore) -> None:
    store.add_outgoing([msg(1)])
    batch = [msg(2), msg(3), msg(1), msg(4)]  # msg 1 again: fails midway
    with pytest.raises(StorageError):
        store.add_outgoing(batch)
    assert [m.text for m in store.history()] == ["message 1"]
    store.add_outgoing([msg(2)])  # the store is still usable
    assert len(store.history()) == 2


def _run_child(script: str, db_path: Path, key: bytes) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script, str(db_path), key.decode()],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


_CHILD_PRELUDE = """
import os, sys
from pathlib import Path
from crypto_utils import Sealer
from storage import DeliveryState, Direction, HistoryStore, StoredMessage
store = HistoryStore.open(Path(sys.argv[1]), Sealer(sys.argv[2].encode()))
def msg(n):
    return StoredMessage(f"{n:032x}", None, "Bob", "10.0.0.7", 5001, Direction.OUT,
                         f"message {n}", 0.0, 0.0, DeliveryState.PENDING)
store.add_outgoing([msg(1)])
"""


def test_process_killed_before_commit_leaves_nothing(db_path: Path, fernet_key: bytes) -> None:
    script = _CHILD_PRELUDE + (
        # Die the moment the next COMMIT is about to run: the batch is written, not committed.
        "store._connection().set_trace_callback("
        "lambda sql: os._exit(17) if sql == 'COMMIT' else None)\n"
        "store.add_outgoing([msg(2), msg(3)])\n"
    )
    result = _run_child(script, db_path, fernet_key)
    assert result.returncode == 17, result.stderr
    with HistoryStore.open(db_path, Sealer(fernet_key)) as reopened:
        assert [m.text for m in reopened.history()] == ["message 1"]


def test_committed_rows_survive_a_process_crash(db_path: Path, fernet_key: bytes) -> None:
    script = _CHILD_PRELUDE + "store.add_outgoing([msg(2)])\nos._exit(9)\n"
    result = _run_child(script, db_path, fernet_key)
    assert result.returncode == 9, result.stderr
    with HistoryStore.open(db_path, Sealer(fernet_key)) as reopened:
        assert [m.text for m in reopened.history()] == ["message 1", "message 2"]


def test_safe_from_many_threads(store: HistoryStore) -> None:
    errors: list[BaseException] = []

    def writer(base: int) -> None:
        try:
            for n in range(base, base + 100):
                store.add_outgoing([msg(n)])
                if n % 10 == 0:
                    store.mark_delivered([msg(n).msg_id])
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(50):
                store.history(limit=20, search="message")
                store.pending_messages()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k * 1000,)) for k in range(6)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(store.history(limit=10_000)) == 600
    assert len(store.pending_messages()) == 540


# --------------------------------------------------------------------------- peers and pins


@pytest.fixture(scope="module")
def alice() -> Identity:
    return Identity.generate(2048)


def test_upsert_and_get_peer(store: HistoryStore, alice: Identity) -> None:
    fp = alice.fingerprint
    assert store.get_peer(fp) is None
    store.upsert_peer(fp, "Alice", alice.public_der, "10.0.0.5", 5000, now=100.0)
    store.upsert_peer(fp, "Alicia", alice.public_der, None, None, now=150.0)
    store.upsert_peer(fp, "Alicia", alice.public_der, "10.0.0.6", 5002, now=120.0)
    assert store.get_peer(fp) == PeerRecord(
        fingerprint=fp,
        name="Alicia",
        public_der=alice.public_der,
        host="10.0.0.6",
        port=5002,
        first_seen=100.0,
        last_seen=150.0,  # never goes backwards
        verified=False,
    )
    store.set_verified(fp, True)
    record = store.get_peer(fp)
    assert record is not None
    assert record.verified
    store.set_verified(fingerprint_of(b"unknown"), True)  # no-op


def test_upsert_refuses_a_key_that_does_not_match(store: HistoryStore, alice: Identity) -> None:
    with pytest.raises(ValueError, match="fingerprint"):
        store.upsert_peer(PEER_A, "Mallory", alice.public_der, "10.0.0.9", 1, now=1.0)


def test_peer_by_address_and_known_peers(store: HistoryStore, alice: Identity) -> None:
    bob = Identity.generate(2048)
    store.upsert_peer(alice.fingerprint, "Alice", alice.public_der, "10.0.0.5", 5000, now=10.0)
    store.upsert_peer(bob.fingerprint, "Bob", bob.public_der, "10.0.0.5", 5000, now=20.0)
    store.upsert_peer(bob.fingerprint, "Bob", bob.public_der, "10.0.0.5", 5000, now=30.0)
    found = store.peer_by_address("10.0.0.5", 5000)
    assert found is not None
    assert found.fingerprint == bob.fingerprint  # the one seen there last
    assert store.peer_by_address("10.0.0.5", 5001) is None
    assert [p.name for p in store.known_peers()] == ["Bob", "Alice"]


def test_pins_are_keyed_by_normalized_name(store: HistoryStore) -> None:
    assert store.pins() == {}
    store.pin("Alice", PEER_A)
    store.pin("Bob", PEER_B)
    assert store.pins() == {pin_key("Alice"): PEER_A, "bob": PEER_B}
    store.pin("ALICE", PEER_B)  # replaces
    assert store.pins()["alice"] == PEER_B
    assert len(store.pins()) == 2


# --------------------------------------------------------------------------- schema 1 -> 2

_V1_TABLES = (
    """CREATE TABLE messages (
        seq INTEGER PRIMARY KEY, msg_id TEXT NOT NULL, peer_fp TEXT, peer_name TEXT NOT NULL,
        peer_host TEXT NOT NULL, peer_port INTEGER NOT NULL,
        direction TEXT NOT NULL CHECK (direction IN ('out', 'in')), body BLOB NOT NULL,
        sent_at REAL NOT NULL, stored_at REAL NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed', 'received')),
        detail TEXT, UNIQUE (msg_id, direction, peer_fp))""",
    "CREATE INDEX messages_by_peer ON messages (peer_fp, seq)",
    "CREATE INDEX messages_pending ON messages (seq) WHERE state = 'pending'",
    """CREATE TABLE peers (fingerprint TEXT PRIMARY KEY, name TEXT NOT NULL,
        public_der BLOB NOT NULL, host TEXT, port INTEGER, first_seen REAL NOT NULL,
        last_seen REAL NOT NULL, verified INTEGER NOT NULL DEFAULT 0)""",
    "CREATE TABLE pins (pin_key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL)",
)


def test_history_of_schema_1_is_migrated_and_keeps_its_messages(
    db_path: Path, sealer: Sealer
) -> None:
    """A history written before legacy marks existed opens, unmarked, and takes marked rows."""
    with sqlite3.connect(db_path) as old:
        for statement in _V1_TABLES:
            old.execute(statement)
        old.execute(
            "INSERT INTO messages (msg_id, peer_fp, peer_name, peer_host, peer_port, direction, "
            "body, sent_at, stored_at, state, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                "a" * 32,
                PEER_A,
                "Bob",
                "10.0.0.7",
                5001,
                "out",
                # Sealed to its row, as this version seals every body it writes.
                sealer.seal(b"from before", storage._row_binding("a" * 32, "out", PEER_A)),
                1.0,
                1.0,
                "pending",
                None,
            ),
        )
        old.execute("PRAGMA user_version = 1")
    old.close()
    with HistoryStore.open(db_path, sealer) as store:
        (kept,) = store.history()
        assert (kept.text, kept.state, kept.legacy) == ("from before", DeliveryState.PENDING, False)
        assert [m.msg_id for m in store.pending_messages()] == ["a" * 32]
        marked = StoredMessage(
            "b" * 32,
            None,
            "Team7",
            "10.0.0.9",
            7000,
            Direction.IN,
            "plain hello",
            2.0,
            2.0,
            DeliveryState.RECEIVED,
            legacy=True,
        )
        assert store.add_incoming([marked]) == [True]
    with HistoryStore.open(db_path, sealer) as store:
        assert [(m.text, m.legacy) for m in store.history()] == [
            ("from before", False),
            ("plain hello", True),
        ]
    with sqlite3.connect(db_path) as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == storage.SCHEMA_VERSION == 3
    check.close()


PEER_C = fingerprint_of(b"peer c")
PEER_D = fingerprint_of(b"peer d")


def _version_1_history(path: Path, pins: list[tuple[str, str]], verified: set[str]) -> None:
    """A history as schema version 1 wrote it: pins keyed by NFKC + casefold of the name."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        for statement in storage._SCHEMA_V1:
            conn.execute(statement)
        for order, (key, fp) in enumerate(pins):
            conn.execute("INSERT INTO pins (pin_key, fingerprint) VALUES (?, ?)", (key, fp))
            conn.execute(
                "INSERT INTO peers (fingerprint, name, public_der, first_seen, last_seen, "
                "verified) VALUES (?, ?, ?, ?, ?, ?)",
                (fp, key, b"der", 100.0 + order, 500.0, int(fp in verified)),
            )
        conn.execute("PRAGMA user_version = 1")
        conn.commit()


def test_version_1_pins_are_rekeyed_by_confusable_skeleton(db_path: Path, sealer: Sealer) -> None:
    # Under version 1 each of these was its own pin; they all look like "Alice".
    _version_1_history(
        db_path,
        [
            ("alice", PEER_A),  # the first seen
            ("\u0430lice", PEER_B),  # Cyrillic a
            ("alice\u1160", PEER_C),  # "Alice" + Hangul filler, after NFKC
            ("bob", PEER_D),
        ],
        verified=set(),
    )
    with HistoryStore.open(db_path, sealer) as store:
        assert store.pins() == {pin_key("Alice"): PEER_A, pin_key("Bob"): PEER_D}
        assert trust.decide(store.pins(), "\u0410lice", PEER_B).verdict is trust.Verdict.CHANGED
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == storage.SCHEMA_VERSION


def test_a_verified_pin_wins_the_rekeying(db_path: Path, sealer: Sealer) -> None:
    _version_1_history(db_path, [("alice", PEER_A), ("\u0430lice", PEER_B)], verified={PEER_B})
    with HistoryStore.open(db_path, sealer) as store:
        assert store.pins() == {pin_key("Alice"): PEER_B}


# --------------------------------------------------------------------------- bodies bound to rows


def _swap_bodies(path: Path, seq_a: int, seq_b: int) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        body_a = conn.execute("SELECT body FROM messages WHERE seq = ?", (seq_a,)).fetchone()[0]
        body_b = conn.execute("SELECT body FROM messages WHERE seq = ?", (seq_b,)).fetchone()[0]
        conn.execute("UPDATE messages SET body = ? WHERE seq = ?", (body_b, seq_a))
        conn.execute("UPDATE messages SET body = ? WHERE seq = ?", (body_a, seq_b))
        conn.commit()


def test_bodies_swapped_between_rows_do_not_open(db_path: Path, sealer: Sealer) -> None:
    with HistoryStore.open(db_path, sealer) as store:
        store.add_incoming([incoming(1, text="pay Bob 10")])
        store.add_incoming([incoming(2, text="pay Eve 1000", peer=PEER_B, name="Eve")])
        store.add_outgoing([msg(3, text="thanks")])
    _swap_bodies(db_path, 1, 2)

    with HistoryStore.open(db_path, sealer) as store:  # the key is right: it opens
        rows = store.history()
        assert [(r.text, r.unreadable) for r in rows] == [
            ("", True),
            ("", True),
            ("thanks", False),
        ]
        assert store.history(search="pay") == []  # an unreadable row matches nothing
        assert [r.text for r in store.history(search="thanks")] == ["thanks"]


def test_a_body_moved_to_the_newest_row_does_not_stop_the_start(
    db_path: Path, sealer: Sealer
) -> None:
    with HistoryStore.open(db_path, sealer) as store:
        store.add_outgoing([msg(1, text="old"), msg(2, text="new")])
    _swap_bodies(db_path, 1, 2)
    with HistoryStore.open(db_path, sealer) as store:
        assert [r.unreadable for r in store.history()] == [True, True]


def test_a_pending_message_whose_body_does_not_open_is_not_sent(
    db_path: Path, sealer: Sealer
) -> None:
    with HistoryStore.open(db_path, sealer) as store:
        store.add_outgoing([msg(1, text="first"), msg(2, text="second"), msg(3, text="third")])
    _swap_bodies(db_path, 1, 2)
    with HistoryStore.open(db_path, sealer) as store:
        assert [m.text for m in store.pending_messages()] == ["third"]
        states = {r.msg_id: (r.state, r.detail) for r in store.history()}
        assert states[msg(1).msg_id][0] is DeliveryState.FAILED
        assert "cannot be read" in str(states[msg(1).msg_id][1])


def _old_format_bodies(key: bytes, texts: list[bytes]) -> list[bytes]:
    """Bodies as earlier versions sealed them: AES-GCM with no associated data, and Fernet."""
    import secrets as _secrets

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    raw = base64.urlsafe_b64decode(key)
    subkey = HKDF(hashes.SHA256(), 32, None, b"peer_chat/1 history seal").derive(raw)
    nonce = _secrets.token_bytes(12)
    gcm = b"\x02" + nonce + AESGCM(subkey).encrypt(nonce, texts[0], None)
    return [gcm, Fernet(key).encrypt(texts[1])]


def test_bodies_sealed_by_earlier_versions_still_open(db_path: Path, fernet_key: bytes) -> None:
    sealer = Sealer(fernet_key)
    with HistoryStore.open(db_path, sealer) as store:
        store.add_incoming([incoming(1), incoming(2)])
    gcm, fernet = _old_format_bodies(fernet_key, [b"sealed without a row", b"a Fernet token"])
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        conn.execute("UPDATE messages SET body = ? WHERE seq = 1", (gcm,))
        conn.execute("UPDATE messages SET body = ? WHERE seq = 2", (fernet,))
        conn.commit()
    with HistoryStore.open(db_path, sealer) as store:
        assert [r.text for r in store.history()] == ["sealed without a row", "a Fernet token"]
