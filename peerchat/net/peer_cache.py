"""peers.json: where known peers were last seen, as hints for the next start.

Hints only: the file never carries trust (pins and verification live in the
history database) and a peer listed here is not shown as active until it is
heard again. A missing, unreadable or malformed file reads as no hints; it is
replaced whole, atomically, at the next write.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from crypto_utils import is_fingerprint, write_file_atomic
from peerchat.errors import StorageError
from storage import PeerRecord

logger = logging.getLogger(__name__)

CACHE_VERSION: Final = 1
MAX_CACHE_BYTES: Final = 1024 * 1024
MAX_CACHED_PEERS: Final = 1000
_FILE_MODE: Final = 0o600  # names and addresses of one's contacts are private


def write_peer_cache(path: Path, peers: Sequence[PeerRecord]) -> None:
    """Write the hints atomically (temp file 0600 + fsync + os.replace).

    Keeps the MAX_CACHED_PEERS most recently seen. A failure to write is
    logged, not raised: a stale hint file costs nothing but a slower rediscovery.
    """
    recent = sorted(peers, key=lambda peer: peer.last_seen, reverse=True)[:MAX_CACHED_PEERS]
    document = {
        "version": CACHE_VERSION,
        "peers": [
            {
                "fingerprint": peer.fingerprint,
                "name": peer.name,
                "host": peer.host,
                "port": peer.port,
                "last_seen": peer.last_seen,
            }
            for peer in recent
        ],
    }
    data = json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8") + b"\n"
    try:
        write_file_atomic(path, data, _FILE_MODE)
    except OSError as exc:
        logger.warning("cannot write %s: %s", path, exc.strerror or exc)


def _valid_entry(entry: object) -> dict[str, object] | None:
    if not isinstance(entry, dict):
        return None
    fingerprint = entry.get("fingerprint")
    name = entry.get("name")
    host = entry.get("host")
    port = entry.get("port")
    last_seen = entry.get("last_seen")
    if not isinstance(fingerprint, str) or not is_fingerprint(fingerprint):
        return None
    if not isinstance(name, str) or not name:
        return None
    if host is not None and (not isinstance(host, str) or not host):
        return None
    if port is not None and (
        not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535
    ):
        return None
    if (
        not isinstance(last_seen, int | float)
        or isinstance(last_seen, bool)
        or not math.isfinite(last_seen)
    ):
        return None
    return {
        "fingerprint": fingerprint,
        "name": name,
        "host": host,
        "port": port,
        "last_seen": float(last_seen),
    }


def read_peer_cache(path: Path) -> list[dict[str, object]]:
    """The cached hints: dicts with fingerprint, name, host, port, last_seen.

    [] if the file is missing, unreadable, too large or malformed; entries
    that are malformed on their own are skipped.
    """
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CACHE_BYTES + 1)
    except FileNotFoundError:
        return []
    except OSError as exc:
        logger.warning("ignoring %s: %s", path, exc.strerror or exc)
        return []
    if len(data) > MAX_CACHE_BYTES:
        logger.warning("ignoring %s: larger than %d bytes", path, MAX_CACHE_BYTES)
        return []
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        logger.warning("ignoring %s: not valid JSON", path)
        return []
    if not isinstance(document, dict) or document.get("version") != CACHE_VERSION:
        logger.warning("ignoring %s: unknown format", path)
        return []
    entries = document.get("peers")
    if not isinstance(entries, list):
        logger.warning("ignoring %s: unknown format", path)
        return []
    result: list[dict[str, object]] = []
    for entry in entries[:MAX_CACHED_PEERS]:
        valid = _valid_entry(entry)
        if valid is not None:
            result.append(valid)
    return result


class PeerCacheWriter:
    """Rewrites peers.json from a worker thread when the known peers changed, one write at a time.

    The write fsyncs the file and its folder (milliseconds, tens under load),
    which would stall every session if done on the network thread; a burst of
    changes (many handshakes) is written at most once per MIN_INTERVAL.
    A timed part of the node's alarm.
    """

    MIN_INTERVAL: Final = 0.25

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        path: Path,
        known_peers: Callable[[], Sequence[PeerRecord]],
        poke: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._path = path
        self._known_peers = known_peers
        self._poke = poke
        self._dirty = False
        self._started_at = -math.inf
        self._writing: asyncio.Future[None] | None = None

    def mark_dirty(self) -> None:
        if not self._dirty:
            self._dirty = True
            self._poke()

    def next_due(self) -> float | None:
        if not self._dirty or self._busy():
            return None
        return self._started_at + self.MIN_INTERVAL

    def handle_timer(self, now: float) -> None:
        if not self._dirty or self._busy() or now < self._started_at + self.MIN_INTERVAL:
            return
        self._dirty = False
        self._started_at = now
        self._writing = self._loop.run_in_executor(None, self.write_now)
        self._writing.add_done_callback(lambda _: self._poke())  # dirty again meanwhile?

    async def flush(self) -> None:
        """Wait for a write under way, then write once more (at shutdown)."""
        if self._writing is not None:
            with contextlib.suppress(Exception):
                await self._writing
        await self._loop.run_in_executor(None, self.write_now)

    def write_now(self) -> None:
        try:
            write_peer_cache(self._path, self._known_peers())
        except (OSError, StorageError) as exc:
            logger.warning("cannot write peers.json: %s", exc)

    def _busy(self) -> bool:
        return self._writing is not None and not self._writing.done()
