"""Chat history, known peers and TOFU pins in one SQLite file.

One connection, opened with check_same_thread=False and guarded by a lock:
this store is the single writer and is safe to call from any thread. Every
write is one transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any
failure), so a failed or interrupted write leaves nothing half-written.

Durability: WAL with synchronous=NORMAL. A committed transaction survives the
process crashing or being killed; after a power loss or OS crash the last
transactions before it may be lost (never corrupted). Surviving power loss too
would need synchronous=FULL, an fsync per commit.

Message text is sealed at rest with the peer's own Fernet key (`Sealer`),
bound to its row (msg_id, direction, peer) as associated data: a body copied
or swapped into another row does not open and shows as unreadable. Names,
addresses and times are not sealed. Code that changes a row's msg_id,
direction or peer_fp must seal its body again. Search therefore opens the bodies in
Python, newest first, page by page, and stops once it has `limit` matches.

Opening never modifies a file that is not a healthy peer_chat history: the
SQLite header is checked by hand before SQLite touches the file, then the
schema is read (both cheap: no full `PRAGMA quick_check`, which reads every
page and costs seconds on a large history). Damage deeper in the file shows
up as a StorageError when the damaged page is read.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from crypto_utils import Sealer, WrongSealKey, fingerprint_of
from peerchat.errors import StorageError
from peerchat.policy import trust

logger = logging.getLogger(__name__)

# 1: the first schema. 2: messages to and from legacy peers carry a mark. 3: the same
# tables; pins keyed by trust.pin_key's confusable skeleton (older keys are re-keyed
# when the file is opened).
SCHEMA_VERSION: Final = 3
BUSY_TIMEOUT_MS: Final = 5000
CHECKPOINT_INTERVAL: Final = 0.5  # seconds between background WAL checkpoints
# The writer checkpoints by itself only if the background thread falls far behind.
WRITER_AUTOCHECKPOINT_PAGES: Final = 16384
_SEARCH_PAGE: Final = 1024  # rows fetched per lock hold while searching
_MAX_SEQ: Final = (1 << 63) - 1  # above any seq (the largest SQLite integer)
_LEGACY: Final = 12  # index of the legacy mark in a _SELECT_MESSAGES row
_ROW_BINDING: Final = b"peer_chat history row\x00"
_SQLITE_MAGIC: Final = b"SQLite format 3\x00"
_HEADER_SIZE: Final = 100

_SCHEMA_V1: Final = (
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
    # The UNIQUE key is the (peer_fp, direction, msg_id) of the contract with
    # msg_id first, so that the one index also serves acknowledgements, which
    # know only the msg_id. history(peer_fp) reads messages_by_peer backwards
    # (no sort); messages_pending indexes only the few pending rows.
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
# (version, statements): each brings a history from the version before up to it.
_TABLES: Final = frozenset({"messages", "peers", "pins"})

# File transfers, added to a history of any version when it lacks them (the only
# change: a new table, so an older peer_chat still opens the file and ignores it).
# file_name and local_path are sealed like message bodies.
_TRANSFERS_SCHEMA: Final = (
    """CREATE TABLE transfers (
        seq INTEGER PRIMARY KEY,
        transfer_id TEXT NOT NULL,
        peer_fp TEXT NOT NULL,
        peer_name TEXT NOT NULL,
        direction TEXT NOT NULL CHECK (direction IN ('out', 'in')),
        file_name BLOB NOT NULL,
        size INTEGER NOT NULL CHECK (size >= 0),
        sha256 TEXT NOT NULL,
        state TEXT NOT NULL
            CHECK (state IN ('waiting', 'active', 'complete', 'declined', 'failed')),
        local_path BLOB,
        detail TEXT,
        abort_code INTEGER,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (transfer_id, direction, peer_fp)
    )""",
    "CREATE INDEX transfers_unfinished ON transfers (seq) WHERE state IN ('waiting', 'active')",
)
_SELECT_TRANSFERS: Final = (
    "SELECT transfer_id, peer_fp, peer_name, direction, file_name, size, sha256, state, "
    "local_path, detail, abort_code, created_at, updated_at FROM transfers "
)

_SELECT_MESSAGES: Final = (
    "SELECT seq, msg_id, peer_fp, peer_name, peer_host, peer_port, direction, body, sent_at, "
    "stored_at, state, detail, legacy FROM messages "
)
_Q_PENDING: Final = _SELECT_MESSAGES + "WHERE state = 'pending' AND direction = 'out' ORDER BY seq"
_Q_HISTORY_ALL: Final = _SELECT_MESSAGES + "WHERE seq < ? ORDER BY seq DESC LIMIT ?"
_Q_HISTORY_PEER: Final = (
    _SELECT_MESSAGES + "WHERE peer_fp = ? AND seq < ? ORDER BY seq DESC LIMIT ?"
)
_SELECT_PEERS: Final = (
    "SELECT fingerprint, name, public_der, host, port, first_seen, last_seen, verified FROM peers "
)
_Q_PEER: Final = _SELECT_PEERS + "WHERE fingerprint = ?"
_Q_PEER_BY_ADDRESS: Final = (
    _SELECT_PEERS + "WHERE host = ? AND port = ? ORDER BY last_seen DESC LIMIT 1"
)
_Q_PEERS: Final = _SELECT_PEERS + "ORDER BY last_seen DESC"
_INSERT_MESSAGE: Final = (
    "INSERT {or_ignore}INTO messages (msg_id, peer_fp, peer_name, peer_host, peer_port, "
    "direction, body, sent_at, stored_at, state, detail, legacy) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class Direction(StrEnum):
    OUT = "out"
    IN = "in"


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    RECEIVED = "received"


@dataclass(frozen=True)
class StoredMessage:
    msg_id: str
    peer_fp: str | None
    peer_name: str
    peer_host: str
    peer_port: int
    direction: Direction
    text: str
    sent_at: float
    stored_at: float
    state: DeliveryState
    detail: str | None = None  # e.g. why it failed
    legacy: bool = False  # to or from a legacy peer: unencrypted, unverified, no key
    unreadable: bool = False  # its body does not open (altered, or moved from another row)


class TransferState(StrEnum):
    WAITING = "waiting"  # sending: not accepted yet (offered, or waiting for the peer)
    ACTIVE = "active"  # accepted and not finished: resumes on the next session
    COMPLETE = "complete"
    DECLINED = "declined"
    FAILED = "failed"


@dataclass(frozen=True)
class StoredTransfer:
    transfer_id: str
    peer_fp: str
    peer_name: str
    direction: Direction
    file_name: str  # out: the name offered; in: the name offered, as the peer sent it
    size: int
    sha256: str  # 64 lowercase hex characters
    state: TransferState
    local_path: str | None  # out: the source; in: the partial file, then the saved one
    created_at: float
    updated_at: float
    detail: str | None = None  # e.g. why it failed
    abort_code: int | None = None  # failed: the code the other side is told


@dataclass(frozen=True)
class PeerRecord:
    fingerprint: str
    name: str
    public_der: bytes
    host: str | None
    port: int | None
    first_seen: float
    last_seen: float
    verified: bool


_Row = tuple[Any, ...]  # sqlite3 rows are untyped; the schema's CHECKs guard the values


def _row_binding(msg_id: str, direction: str, peer_fp: str | None) -> bytes:
    """The associated data that seals a body to its row: a body moved elsewhere fails to open."""
    fields = (msg_id, direction, peer_fp or "")
    return _ROW_BINDING + b"\x00".join(field.encode("utf-8", "surrogatepass") for field in fields)


def _transfer_binding(transfer_id: str, direction: str, field: str) -> bytes:
    """Associated data sealing a transfer's file name or path to its row and column."""
    return _ROW_BINDING + b"\x00".join(
        part.encode("utf-8", "surrogatepass")
        for part in ("transfer", transfer_id, direction, field)
    )


def _as_float(value: Any) -> float:
    # A REAL column keeps a value that is not a number as text; a damaged row
    # must still show in the history (its time as unknown), not stop it.
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return 0


def _describe(exc: sqlite3.Error, path: Path, action: str) -> str:
    """One clear line for an sqlite3 error."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    where = f"chat history {path}"
    if name.startswith("SQLITE_FULL") or "database or disk is full" in text:
        return f"cannot {action} {where}: database or disk is full"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return (
            f"cannot {action} {where}: the database is locked "
            "(is another peer_chat using the same data directory?)"
        )
    if name.startswith("SQLITE_READONLY"):
        return f"cannot {action} {where}: the database is read-only"
    if name.startswith("SQLITE_NOTADB"):
        return f"{where} is not a database (not an SQLite file)"
    if name.startswith("SQLITE_CORRUPT"):
        return f"{where} is corrupt (database disk image is malformed)"
    if name.startswith("SQLITE_CANTOPEN"):
        return f"cannot open {where}: {text} (missing directory or no permission?)"
    if name.startswith("SQLITE_IOERR"):
        return f"I/O error while trying to {action} {where}: {text}"
    return f"cannot {action} {where}: {text}"


def _read_only_reason(path: Path) -> str | None:
    """Why `path` cannot be written, if it cannot (root ignores modes, not read-only mounts)."""
    try:
        if os.statvfs(path.parent).f_flag & os.ST_RDONLY:
            return "it is on a read-only file system"
    except OSError:
        return None
    if path.exists() and not os.access(path, os.W_OK):
        return "the file is read-only"
    if not os.access(path.parent, os.W_OK):
        return "its directory is read-only (SQLite needs to create -wal and -shm files there)"
    return None


def _open_error(exc: sqlite3.Error, path: Path) -> StorageError:
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return StorageError(_describe(exc, path, "open"))
    reason = _read_only_reason(path)
    if reason is not None:
        return StorageError(
            f"cannot open chat history {path}: the database is read-only ({reason})"
        )
    return StorageError(_describe(exc, path, "open"))


def _check_header(path: Path) -> bool:
    """Check an existing file's SQLite header without letting SQLite write to it.

    Returns False if there is no file (or an empty one: SQLite starts a new
    database in it). Raises StorageError if it cannot be a database.
    """
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            header = handle.read(_HEADER_SIZE)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StorageError(f"cannot read chat history {path}: {exc.strerror or exc}") from exc
    if size == 0:
        return False
    if len(header) < _HEADER_SIZE or not header.startswith(_SQLITE_MAGIC):
        raise StorageError(f"chat history {path} is not a database (not an SQLite file)")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    valid_page = 512 <= page_size <= 65536 and page_size & (page_size - 1) == 0
    if (
        not valid_page
        or header[18] not in (1, 2)
        or header[19] not in (1, 2)
        or header[21:24] != b"\x40\x20\x20"
    ):
        raise StorageError(f"chat history {path} is corrupt (bad database header)")
    if size % page_size:
        raise StorageError(f"chat history {path} is corrupt (truncated)")
    return True


def _create_empty(path: Path) -> None:
    """Create the database file with mode 0600 before SQLite does (it would use 0644)."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StorageError(f"cannot create chat history {path}: {exc.strerror or exc}") from exc


def _switch_to_wal(conn: sqlite3.Connection) -> str:
    """Set WAL mode and return the mode SQLite reports.

    The switch needs an exclusive lock, and SQLite answers SQLITE_BUSY at once,
    without its busy handler, when another connection is opening the same file
    at that moment; so retry for as long as the busy timeout would have waited.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    pause = 0.001
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorname", "").startswith("SQLITE_BUSY")
            if not busy or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


class _Checkpointer:
    """Copies the write-ahead log back into the database, off the writer's path.

    SQLite's automatic checkpoint runs inside whichever commit crosses its
    threshold and fsyncs there, so one message in a few hundred would wait
    milliseconds. The writer's automatic checkpoint is therefore pushed far out
    (a safety net only) and this thread checkpoints on its own connection,
    PASSIVE so that it never blocks the writer; sqlite3 releases the GIL while
    it works.
    """

    def __init__(self, uri: str) -> None:
        self._uri = uri
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self._uri, uri=True, isolation_level=None)
        except sqlite3.Error as exc:
            logger.warning("background checkpoints disabled: %s", exc)
            return
        with contextlib.closing(conn):
            while not self._stop.wait(CHECKPOINT_INTERVAL):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:
                    logger.debug("checkpoint skipped: %s", exc)


def _rekey_pins(conn: sqlite3.Connection) -> None:
    """Schema 2 -> 3: pins keyed by the confusable skeleton of the name.

    Names that were distinct pins before may now share one key ("alice" and a
    Cyrillic "\u0430lice"). One of them keeps the pin: a verified peer first,
    then the one first seen (trust on first use); the others lose it, so their
    next handshake is reported as a changed key, as a look-alike should be.
    """
    rows = conn.execute(
        "SELECT pins.pin_key, pins.fingerprint, COALESCE(peers.verified, 0), "
        "COALESCE(peers.first_seen, 1e308) FROM pins "
        "LEFT JOIN peers ON peers.fingerprint = pins.fingerprint"
    ).fetchall()
    kept: dict[str, tuple[bool, float, str, str]] = {}
    for old_key, fingerprint, verified, first_seen in rows:
        key = trust.rekey_legacy_pin(str(old_key))
        # Lowest wins: verified first, then first seen, then (for a stable result) the old key.
        rank = (not verified, float(first_seen), str(old_key), str(fingerprint))
        if key not in kept or rank < kept[key]:
            if key in kept:
                logger.warning("pin %r now shares its key with %r: dropped", kept[key][2], old_key)
            kept[key] = rank
        else:
            logger.warning("pin %r now shares its key with %r: dropped", old_key, kept[key][2])
    conn.execute("DELETE FROM pins")
    conn.executemany(
        "INSERT INTO pins (pin_key, fingerprint) VALUES (?, ?)",
        [(key, rank[3]) for key, rank in kept.items()],
    )


def _add_legacy_mark(conn: sqlite3.Connection) -> None:
    """Schema 1 -> 2: messages to and from legacy peers (unencrypted, no key) are marked."""
    conn.execute("ALTER TABLE messages ADD COLUMN legacy INTEGER NOT NULL DEFAULT 0")


_MIGRATIONS: Final[tuple[tuple[int, Callable[[sqlite3.Connection], None]], ...]] = (
    (2, _add_legacy_mark),
    (3, _rekey_pins),
)


class HistoryStore:
    """The history database. Construct with `HistoryStore.open`."""

    def __init__(self, conn: sqlite3.Connection, path: Path, sealer: Sealer) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._path = path
        self._sealer = sealer
        self._lock = threading.Lock()
        self._checkpointer: _Checkpointer | None = None

    # ------------------------------------------------------------------ open / close

    @classmethod
    def open(cls, path: Path, sealer: Sealer) -> HistoryStore:
        """Open or create the history at `path`; StorageError with one clear line if not."""
        if not _check_header(path):
            _create_empty(path)
        uri = "file:" + urllib.parse.quote(str(path.absolute())) + "?mode=rw"
        try:
            conn = sqlite3.connect(
                uri,
                uri=True,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,  # transactions are explicit
                check_same_thread=False,  # guarded by HistoryStore._lock
            )
        except sqlite3.Error as exc:
            raise _open_error(exc, path) from exc
        try:
            cls._prepare(conn, path)
        except sqlite3.Error as exc:
            conn.close()
            raise _open_error(exc, path) from exc
        except BaseException:
            conn.close()
            raise
        store = cls(conn, path, sealer)
        store._check_sealer()
        store._checkpointer = _Checkpointer(uri)
        store._checkpointer.start()
        return store

    @staticmethod
    def _prepare(conn: sqlite3.Connection, path: Path) -> None:
        """Check, then configure and create or migrate. Nothing is written before the checks."""
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("BEGIN")  # one snapshot for both reads (a read transaction writes nothing)
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_schema")}
        finally:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"chat history {path} has schema version {version}, written by a newer "
                f"peer_chat; this one understands up to version {SCHEMA_VERSION}"
            )
        if version == 0 and tables:
            raise StorageError(
                f"chat history {path} is an SQLite database but not a peer_chat history"
            )
        if version > 0 and not tables >= _TABLES:
            missing = ", ".join(sorted(_TABLES - tables))
            raise StorageError(f"chat history {path} is corrupt (missing tables: {missing})")
        # Read-only files (or a read-only mount) are refused here, before any write.
        # SQLite quietly opens such a file read-only and still grants the write
        # lock, so try a real (rolled-back) write: it fails with "readonly".
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(f"PRAGMA user_version = {version}")
        finally:
            conn.execute("ROLLBACK")
        mode = _switch_to_wal(conn)
        if mode != "wal":
            raise StorageError(f"cannot open chat history {path}: WAL mode unavailable ({mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA journal_size_limit = 4194304")  # keep the -wal file small
        conn.execute(f"PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT_PAGES}")
        if version < SCHEMA_VERSION:
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Another process may have created or migrated it since we looked.
                current = int(conn.execute("PRAGMA user_version").fetchone()[0])
                if current == 0:
                    for statement in _SCHEMA_V1:
                        conn.execute(statement)
                    current = 1
                    logger.info("created chat history %s", path)
                for target, migrate in _MIGRATIONS:
                    if current < target:
                        migrate(conn)
                        logger.info("chat history %s: schema %d -> %d", path, current, target)
                        current = target
                conn.execute(f"PRAGMA user_version = {current}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        if "transfers" not in tables:
            HistoryStore._add_transfers(conn, path)

    @staticmethod
    def _add_transfers(conn: sqlite3.Connection, path: Path) -> None:
        """Add the transfers table to a history that lacks it (new, or from before transfers)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have added it since we looked.
            found = conn.execute(
                "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'transfers'"
            ).fetchone()
            if found is None:
                for statement in _TRANSFERS_SCHEMA:
                    conn.execute(statement)
                logger.info("added file transfers to chat history %s", path)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _check_sealer(self) -> None:
        """Fail at start, not at the first history view, if secret.key is not this history's.

        The newest body is opened: one sealed under another key is refused; one
        that was altered or moved (the key is right) is only unreadable.
        """
        try:
            with self._lock:
                rows = self._fetchall(
                    "read",
                    "SELECT msg_id, direction, peer_fp, body FROM messages "
                    "ORDER BY seq DESC LIMIT 1",
                    (),
                )
            if rows:
                msg_id, direction, peer_fp, body = rows[0]
                binding = _row_binding(str(msg_id), str(direction), peer_fp and str(peer_fp))
                try:
                    self._sealer.open(bytes(body), binding)
                except WrongSealKey:
                    raise StorageError(
                        f"chat history {self._path} was sealed with another secret.key "
                        "(was secret.key replaced?); move the history aside to start a new one"
                    ) from None
                except StorageError:
                    pass  # this key, an altered row: shown as unreadable in the history
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the connection (idempotent); later calls raise StorageError."""
        if self._checkpointer is not None:
            self._checkpointer.stop()
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                try:
                    conn.close()
                except sqlite3.Error as exc:
                    logger.warning("%s", _describe(exc, self._path, "close"))

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def path(self) -> Path:
        return self._path

    # ------------------------------------------------------------------ internals (lock held)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError(f"chat history {self._path} is closed")
        return self._conn

    def _read(self, action: str, sql: str, params: Sequence[object]) -> sqlite3.Cursor:
        conn = self._connection()
        try:
            return conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise StorageError(_describe(exc, self._path, action)) from exc

    def _fetchall(self, action: str, sql: str, params: Sequence[object]) -> list[_Row]:
        cursor = self._read(action, sql, params)
        try:
            return cursor.fetchall()
        except sqlite3.Error as exc:
            raise StorageError(_describe(exc, self._path, action)) from exc

    @contextlib.contextmanager
    def _transaction(self, action: str) -> Iterator[sqlite3.Connection]:
        """One write transaction; any failure rolls everything back."""
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error as rollback_exc:
                    logger.warning("rollback failed: %s", rollback_exc)
            if isinstance(exc, sqlite3.Error):
                raise StorageError(_describe(exc, self._path, action)) from exc
            raise

    def _message_params(self, message: StoredMessage) -> tuple[object, ...]:
        row = _row_binding(message.msg_id, message.direction.value, message.peer_fp)
        return (
            message.msg_id,
            message.peer_fp,
            message.peer_name,
            message.peer_host,
            message.peer_port,
            message.direction.value,
            self._sealer.seal(message.text.encode("utf-8"), row),
            message.sent_at,
            message.stored_at,
            message.state.value,
            message.detail,
            int(message.legacy),
        )

    def _open_body(self, row: _Row) -> str | None:
        """The text of a row, or None if its body does not open (altered or moved)."""
        _, msg_id, peer_fp, _, _, _, direction, body, *_ = row
        binding = _row_binding(
            str(msg_id), str(direction), None if peer_fp is None else str(peer_fp)
        )
        try:
            return self._sealer.open(bytes(body), binding).decode("utf-8")
        except (StorageError, UnicodeDecodeError, TypeError) as exc:
            logger.warning(
                "chat history %s: message %s cannot be read: %s", self._path, msg_id, exc
            )
            return None

    def _to_message(self, row: _Row, text: str | None = None) -> StoredMessage:
        fields, legacy = row[:_LEGACY], row[_LEGACY]
        (_, msg_id, peer_fp, name, host, port, direction, _, sent, stored, state, detail) = fields
        if text is None:
            text = self._open_body(row)
        return StoredMessage(
            msg_id=str(msg_id),
            peer_fp=None if peer_fp is None else str(peer_fp),
            peer_name=str(name),
            peer_host=str(host),
            peer_port=_as_int(port),
            direction=Direction(direction),
            text="" if text is None else text,
            sent_at=_as_float(sent),
            stored_at=_as_float(stored),
            state=DeliveryState(state),
            detail=None if detail is None else str(detail),
            legacy=bool(legacy),
            unreadable=text is None,
        )

    @staticmethod
    def _to_peer(row: _Row) -> PeerRecord:
        fingerprint, name, der, host, port, first_seen, last_seen, verified = row
        return PeerRecord(
            fingerprint=str(fingerprint),
            name=str(name),
            public_der=bytes(der),
            host=None if host is None else str(host),
            port=None if port is None else int(port),
            first_seen=float(first_seen),
            last_seen=float(last_seen),
            verified=bool(verified),
        )

    # ------------------------------------------------------------------ messages

    def add_outgoing(self, messages: Sequence[StoredMessage]) -> None:
        """Store messages we send (usually PENDING), all or none."""
        if any(m.direction is not Direction.OUT for m in messages):
            raise ValueError("add_outgoing takes outgoing messages only")
        rows = [self._message_params(m) for m in messages]  # seal outside the lock
        with self._lock, self._transaction("save messages to") as conn:
            conn.executemany(_INSERT_MESSAGE.format(or_ignore=""), rows)

    def add_incoming(self, messages: Sequence[StoredMessage]) -> list[bool]:
        """Store received messages, all or none; True where new, False for a duplicate."""
        if any(m.direction is not Direction.IN for m in messages):
            raise ValueError("add_incoming takes incoming messages only")
        rows = [self._message_params(m) for m in messages]
        sql = _INSERT_MESSAGE.format(or_ignore="OR IGNORE ")
        with self._lock, self._transaction("save messages to") as conn:
            return [conn.execute(sql, row).rowcount == 1 for row in rows]

    def mark_delivered(self, msg_ids: Sequence[str]) -> None:
        """Outgoing pending (or failed: an acknowledgement is proof) -> delivered."""
        with self._lock, self._transaction("update") as conn:
            conn.executemany(
                "UPDATE messages SET state = 'delivered', detail = NULL "
                "WHERE msg_id = ? AND direction = 'out' AND state IN ('pending', 'failed')",
                [(msg_id,) for msg_id in msg_ids],
            )

    def mark_failed(self, msg_ids: Sequence[str], detail: str) -> None:
        """Outgoing pending -> failed, with the reason."""
        with self._lock, self._transaction("update") as conn:
            conn.executemany(
                "UPDATE messages SET state = 'failed', detail = ? "
                "WHERE msg_id = ? AND direction = 'out' AND state = 'pending'",
                [(detail, msg_id) for msg_id in msg_ids],
            )

    def pending_messages(self) -> list[StoredMessage]:
        """Outgoing messages not yet delivered nor failed, oldest first.

        One whose text cannot be read any more is marked failed instead: it
        can never be sent as it was written.
        """
        with self._lock:
            rows = self._fetchall("read", _Q_PENDING, ())
        messages = [self._to_message(row) for row in rows]
        unreadable = [m.msg_id for m in messages if m.unreadable]
        if unreadable:
            self.mark_failed(unreadable, "its stored text cannot be read")
        return [m for m in messages if not m.unreadable]

    def history(
        self, peer_fp: str | None = None, limit: int = 50, search: str | None = None
    ) -> list[StoredMessage]:
        """The last `limit` messages (of one peer; containing `search`), oldest first.

        `search` is matched case-insensitively against the opened text, newest
        first, stopping at `limit` matches; a search that matches little opens
        every body (about 10 us each). Pages are fetched under the lock and
        opened outside it, so a long search never holds up the writer.
        """
        if limit <= 0:
            return []
        sql = _Q_HISTORY_ALL if peer_fp is None else _Q_HISTORY_PEER
        if not search:
            params = (_MAX_SEQ, limit) if peer_fp is None else (peer_fp, _MAX_SEQ, limit)
            with self._lock:
                rows = self._fetchall("read", sql, params)
            return [self._to_message(row) for row in reversed(rows)]
        needle = search.casefold()
        found: list[StoredMessage] = []
        before = _MAX_SEQ
        while True:
            params = (before, _SEARCH_PAGE) if peer_fp is None else (peer_fp, before, _SEARCH_PAGE)
            with self._lock:
                rows = self._fetchall("read", sql, params)
            for row in rows:
                text = self._open_body(row)
                if text is not None and needle in text.casefold():
                    found.append(self._to_message(row, text))
                    if len(found) == limit:
                        found.reverse()
                        return found
            if len(rows) < _SEARCH_PAGE:
                found.reverse()
                return found
            before = int(rows[-1][0])

    # ------------------------------------------------------------------ peers and pins

    def upsert_peer(  # noqa: PLR0917 (the contract's positional signature)
        self,
        fingerprint: str,
        name: str,
        public_der: bytes,
        host: str | None,
        port: int | None,
        now: float,
    ) -> None:
        """Record a peer seen at `now`. A None host keeps the last known address."""
        if fingerprint_of(public_der) != fingerprint:
            raise ValueError("fingerprint does not match public_der")
        with self._lock, self._transaction("save peer to") as conn:
            conn.execute(
                "INSERT INTO peers (fingerprint, name, public_der, host, port, first_seen, "
                "last_seen, verified) VALUES (?, ?, ?, ?, ?, ?, ?, 0) "
                "ON CONFLICT (fingerprint) DO UPDATE SET name = excluded.name, "
                "host = CASE WHEN excluded.host IS NULL THEN peers.host ELSE excluded.host END, "
                "port = CASE WHEN excluded.host IS NULL THEN peers.port ELSE excluded.port END, "
                "last_seen = MAX(peers.last_seen, excluded.last_seen)",
                (fingerprint, name, public_der, host, port, now, now),
            )

    def get_peer(self, fingerprint: str) -> PeerRecord | None:
        with self._lock:
            rows = self._fetchall("read", _Q_PEER, (fingerprint,))
        return self._to_peer(rows[0]) if rows else None

    def peer_by_address(self, host: str, port: int) -> PeerRecord | None:
        """The peer last seen at host:port (the most recent if several were)."""
        with self._lock:
            rows = self._fetchall(
                "read",
                _Q_PEER_BY_ADDRESS,
                (host, port),
            )
        return self._to_peer(rows[0]) if rows else None

    def known_peers(self) -> list[PeerRecord]:
        """Every peer ever seen, most recently seen first."""
        with self._lock:
            rows = self._fetchall("read", _Q_PEERS, ())
        return [self._to_peer(row) for row in rows]

    def pins(self) -> dict[str, str]:
        """trust.pin_key(name) -> pinned fingerprint."""
        with self._lock:
            rows = self._fetchall("read", "SELECT pin_key, fingerprint FROM pins", ())
        return {str(key): str(fingerprint) for key, fingerprint in rows}

    def pin(self, name: str, fingerprint: str) -> None:
        """Pin `fingerprint` to `name` (replacing any earlier pin for that name)."""
        with self._lock, self._transaction("save pin to") as conn:
            conn.execute(
                "INSERT INTO pins (pin_key, fingerprint) VALUES (?, ?) "
                "ON CONFLICT (pin_key) DO UPDATE SET fingerprint = excluded.fingerprint",
                (trust.pin_key(name), fingerprint),
            )

    def set_verified(self, fingerprint: str, verified: bool) -> None:
        """Mark a known peer as verified (fingerprint compared out of band). No-op if unknown."""
        with self._lock, self._transaction("update") as conn:
            conn.execute(
                "UPDATE peers SET verified = ? WHERE fingerprint = ?",
                (int(verified), fingerprint),
            )

    # ------------------------------------------------------------------ file transfers

    def _to_transfer(self, row: _Row) -> StoredTransfer:
        (
            tid,
            peer_fp,
            name,
            direction,
            file_name,
            size,
            digest,
            state,
            local,
            detail,
            code,
            c,
            u,
        ) = row
        return StoredTransfer(
            transfer_id=str(tid),
            peer_fp=str(peer_fp),
            peer_name=str(name),
            direction=Direction(direction),
            file_name=self._sealer.open(
                bytes(file_name), _transfer_binding(str(tid), str(direction), "name")
            ).decode("utf-8"),
            size=int(size),
            sha256=str(digest),
            state=TransferState(state),
            local_path=None
            if local is None
            else self._sealer.open(
                bytes(local), _transfer_binding(str(tid), str(direction), "path")
            ).decode("utf-8", "surrogateescape"),
            created_at=float(c),
            updated_at=float(u),
            detail=None if detail is None else str(detail),
            abort_code=None if code is None else int(code),
        )

    def add_transfer(self, transfer: StoredTransfer) -> None:
        """Record a new transfer (StorageError if that id is already recorded)."""
        params = (
            transfer.transfer_id,
            transfer.peer_fp,
            transfer.peer_name,
            transfer.direction.value,
            self._sealer.seal(
                transfer.file_name.encode("utf-8"),
                _transfer_binding(transfer.transfer_id, transfer.direction.value, "name"),
            ),
            transfer.size,
            transfer.sha256,
            transfer.state.value,
            None
            if transfer.local_path is None
            else self._sealer.seal(
                transfer.local_path.encode("utf-8", "surrogateescape"),
                _transfer_binding(transfer.transfer_id, transfer.direction.value, "path"),
            ),
            transfer.detail,
            transfer.abort_code,
            transfer.created_at,
            transfer.updated_at,
        )
        with self._lock, self._transaction("save transfer to") as conn:
            conn.execute(
                "INSERT INTO transfers (transfer_id, peer_fp, peer_name, direction, file_name, "
                "size, sha256, state, local_path, detail, abort_code, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                params,
            )

    def update_transfer(
        self,
        transfer_id: str,
        direction: Direction,
        peer_fp: str,
        state: TransferState,
        now: float,
        *,
        detail: str | None = None,
        local_path: str | None = None,
        abort_code: int | None = None,
    ) -> None:
        """Set a transfer's state, detail and abort code; its local path when one is given."""
        sealed = (
            None
            if local_path is None
            else self._sealer.seal(
                local_path.encode("utf-8", "surrogateescape"),
                _transfer_binding(transfer_id, direction.value, "path"),
            )
        )
        with self._lock, self._transaction("update") as conn:
            conn.execute(
                "UPDATE transfers SET state = ?, detail = ?, abort_code = ?, updated_at = ?, "
                "local_path = COALESCE(?, local_path) "
                "WHERE transfer_id = ? AND direction = ? AND peer_fp = ?",
                (
                    state.value,
                    detail,
                    abort_code,
                    now,
                    sealed,
                    transfer_id,
                    direction.value,
                    peer_fp,
                ),
            )

    def get_transfer(
        self, transfer_id: str, direction: Direction, peer_fp: str
    ) -> StoredTransfer | None:
        with self._lock:
            rows = self._fetchall(
                "read",
                _SELECT_TRANSFERS + "WHERE transfer_id = ? AND direction = ? AND peer_fp = ?",
                (transfer_id, direction.value, peer_fp),
            )
        return self._to_transfer(rows[0]) if rows else None

    def unfinished_transfers(self) -> list[StoredTransfer]:
        """Transfers waiting or under way, oldest first (to take up again at start)."""
        with self._lock:
            rows = self._fetchall(
                "read",
                _SELECT_TRANSFERS + "WHERE state IN ('waiting', 'active') ORDER BY seq",
                (),
            )
        return [self._to_transfer(row) for row in rows]

    def transfers(self, peer_fp: str | None = None, limit: int = 50) -> list[StoredTransfer]:
        """The last `limit` transfers (with one peer), oldest first."""
        if limit <= 0:
            return []
        where = "" if peer_fp is None else "WHERE peer_fp = ? "
        params: tuple[object, ...] = (limit,) if peer_fp is None else (peer_fp, limit)
        with self._lock:
            rows = self._fetchall(
                "read", _SELECT_TRANSFERS + where + "ORDER BY seq DESC LIMIT ?", params
            )
        return [self._to_transfer(row) for row in reversed(rows)]
