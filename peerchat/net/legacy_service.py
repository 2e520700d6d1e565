"""The legacy bridge at run time: listener, sender, beacons and the legacy peer list.

One object owns the legacy side and runs in an event loop it is given (the
node's): `bind()` opens the sockets (so a port in use is reported at start),
`attach(loop)` starts serving once that loop runs, `close()` ends it. The
menu thread calls `peers()` and `send()`, the LegacyBridge the menu is
written against; each hands a coroutine to the loop and waits for it.

What comes in is recorded (history, with the legacy mark) and reported
through `emit` as UiEvents; nothing else happens because of it. In
particular this service never sends anything the user did not ask for: no
reply, no probe, no connection to an address named in legacy text. It knows
nothing of keyed peers, so nothing can be relayed between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from peerchat.errors import StorageError
from peerchat.events import (
    LegacyMessageArrived,
    LegacyOutcome,
    LegacyPeer,
    LegacyPeerDiscovered,
    LegacyPeerLeft,
    LegacySendResult,
    Problem,
    UiEvent,
)
from peerchat.legacy.admission import AdmissionLimits
from peerchat.legacy.original import LegacyKey, OriginalBeacon, encode_message, original_problem
from peerchat.legacy.peers import LegacyPeers
from peerchat.legacy.wire import (
    ORIGINAL,
    PLAIN,
    Kind,
    LegacyControl,
    LegacyItem,
    LegacyMessage,
    check_outgoing,
    encode_text,
)
from peerchat.limits import (
    BEACON_INTERVAL,
    DISCOVERY_PORT,
    LEGACY_CONNECT_TIMEOUT,
    LEGACY_IDLE_TIMEOUT,
    LEGACY_MAX_CONNECTION_TIME,
    LEGACY_PEER_TTL,
    LEGACY_SEND_LINGER,
    PEER_TIMEOUT,
)
from peerchat.net.legacy_beacons import LegacyBeacons
from peerchat.net.legacy_listener import LegacyListener
from peerchat.net.legacy_sender import LegacySendError, send_once
from peerchat.protocol.messages import new_msg_id
from storage import DeliveryState, Direction, HistoryStore, StoredMessage

log = logging.getLogger(__name__)

T = TypeVar("T")

NOTICE_GAP: Final = 30.0  # seconds between two lines about dropped legacy input
NOT_ACKNOWLEDGED: Final = "not acknowledged"


@dataclass(frozen=True)
class LegacyConfig:
    port: int
    team: str  # put in outgoing messages
    name: str  # announced in the original's beacons
    bind: str = "0.0.0.0"
    key: LegacyKey | None = field(default=None, repr=False)
    beacons: bool = False  # the original's beacons (needs the key)
    discovery_port: int = DISCOVERY_PORT
    broadcast_targets: tuple[str, ...] = ()
    beacon_interval: float = BEACON_INTERVAL
    beacon_timeout: float = PEER_TIMEOUT  # a peer heard only by beacon is dropped after this
    peer_ttl: float = LEGACY_PEER_TTL  # a peer heard by message is dropped after this
    idle_timeout: float = LEGACY_IDLE_TIMEOUT
    max_connection_time: float = LEGACY_MAX_CONNECTION_TIME
    connect_timeout: float = LEGACY_CONNECT_TIMEOUT
    send_linger: float = LEGACY_SEND_LINGER
    admission: AdmissionLimits = field(default_factory=AdmissionLimits)


class _Notices:
    """Lines about dropped input: the first at once, then at most one per `gap`, with a count."""

    def __init__(self, gap: float = NOTICE_GAP) -> None:
        self._gap = gap
        self._last = -gap
        self.suppressed = 0

    def due(self, now: float) -> bool:
        if now - self._last < self._gap:
            self.suppressed += 1
            return False
        self._last = now
        return True


class LegacyService:
    def __init__(
        self,
        config: LegacyConfig,
        *,
        store: HistoryStore | None,
        emit: Callable[[UiEvent], None],
    ) -> None:
        self.config = config
        self._store = store
        self._emit = emit
        self._peers = LegacyPeers()
        self.listener = LegacyListener(
            bind=config.bind,
            port=config.port,
            key=config.key,
            on_item=self._on_item,
            limits=config.admission,
            idle_timeout=config.idle_timeout,
            max_connection_time=config.max_connection_time,
        )
        self.beacons: LegacyBeacons | None = None
        if config.beacons and config.key is not None:
            self.beacons = LegacyBeacons(
                key=config.key,
                name=config.name,
                port=config.port,
                targets=list(config.broadcast_targets),
                discovery_port=config.discovery_port,
                interval=config.beacon_interval,
                on_beacon=self._on_beacon,
            )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tick: asyncio.TimerHandle | None = None
        self._notices = _Notices()
        self._storage_notices = _Notices()
        self._closed = False

    # -- lifecycle -----------------------------------------------------------

    @property
    def port(self) -> int:
        return self.listener.port

    def bind(self) -> None:
        """Open the legacy port (and the beacon socket); BindError if not."""
        self.listener.bind()
        if self.beacons is not None:
            try:
                self.beacons.bind()
            except BaseException:
                self.listener.close()
                raise

    async def open(self) -> None:
        """Bind, then serve in the running loop: the node's start-up, in one step."""
        self.bind()
        await self.serve()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve in `loop` from when it runs (it may not run yet)."""
        self._loop = loop
        future = asyncio.run_coroutine_threadsafe(self.serve(), loop)
        future.add_done_callback(_log_failure)

    async def serve(self) -> None:
        """Start serving in the running loop (after `bind()`)."""
        self._loop = asyncio.get_running_loop()
        if self._closed:
            return
        await self.listener.serve()
        if self.beacons is not None:
            await self.beacons.serve()
        log.info("legacy port %d open (unencrypted)", self.port)

    def close(self) -> None:
        """Stop everything; from the loop's thread, or any thread (it waits a little)."""
        loop = self._loop
        running = loop is not None and not loop.is_closed() and loop.is_running()
        if not running or _in_loop(loop):
            self._close_now()
            return
        assert loop is not None
        future = asyncio.run_coroutine_threadsafe(self._close_soon(), loop)
        with contextlib.suppress(Exception):
            future.result(2.0)

    async def _close_soon(self) -> None:
        self._close_now()

    def _close_now(self) -> None:
        self._closed = True
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        self.listener.close()
        if self.beacons is not None:
            self.beacons.close()

    # -- LegacyBridge, for the menu thread ------------------------------------

    def peers(self) -> list[LegacyPeer]:
        return self._call(self._peer_rows(), 5.0)

    def send(self, host: str, port: int, text: str) -> LegacySendResult:
        cfg = self.config
        # send_once is bounded by its own timeouts; this only guards against a stuck loop.
        wait = 2 * cfg.connect_timeout + 2 * cfg.send_linger + 2.0
        try:
            return self._call(self.send_async(host, port, text), wait)
        except TimeoutError:
            return LegacySendResult(LegacyOutcome.FAILED, host, port, "timed out")

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the legacy service is not attached to a loop")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    # -- in the loop -----------------------------------------------------------

    async def _peer_rows(self) -> list[LegacyPeer]:
        return [
            LegacyPeer(e.team, e.host, e.port, e.dialect.label, e.last_seen)
            for e in self._peers.entries()
        ]

    async def send_async(self, host: str, port: int, text: str) -> LegacySendResult:
        cfg = self.config
        if port == self.port and _is_local(host):
            return LegacySendResult(
                LegacyOutcome.REFUSED, host, port, "that is this peer's own legacy port"
            )
        entry = self._peers.get(host, port)
        dialect = entry.dialect if entry is not None else PLAIN
        key = cfg.key
        if dialect.kind is Kind.FERNET and key is None:
            dialect = PLAIN
        if dialect.kind is Kind.FERNET:
            problem = original_problem(self.port, cfg.team, text)
        else:
            problem = check_outgoing(text, dialect)
        if problem is not None:
            return LegacySendResult(LegacyOutcome.REFUSED, host, port, problem)

        def build(local_ip: str) -> bytes:
            if dialect.kind is Kind.FERNET:
                assert key is not None
                return encode_message(key, local_ip, self.port, cfg.team, text, time.time())
            return encode_text(dialect, local_ip, self.port, cfg.team, text)

        name = entry.team if entry is not None else "?"
        try:
            await send_once(
                host, port, build, connect_timeout=cfg.connect_timeout, linger=cfg.send_linger
            )
        except LegacySendError as exc:
            self._record_sent(name, host, port, text, DeliveryState.FAILED, str(exc))
            return LegacySendResult(LegacyOutcome.FAILED, host, port, str(exc))
        self._record_sent(name, host, port, text, DeliveryState.DELIVERED, NOT_ACKNOWLEDGED)
        return LegacySendResult(LegacyOutcome.SENT, host, port, dialect.label)

    def _on_item(self, ip: str, item: LegacyItem) -> None:
        if isinstance(item, LegacyMessage):
            self._on_message(ip, item)
        elif isinstance(item, LegacyControl):
            self._on_control(ip, item)
        else:
            log.info("legacy input from %s dropped: %s", ip, item.reason)
            self._notice(f"legacy input from {ip} dropped: {item.reason}")

    def _on_message(self, ip: str, item: LegacyMessage) -> None:
        now, wall = self._clocks()
        self._peers.heard(
            ip, item.port, item.team, item.dialect, now=now, wall=wall, ttl=self.config.peer_ttl
        )
        self._arm()
        log.info("legacy message from %s:%d (claims %s)", ip, item.port, item.claimed_host)
        self._record_received(ip, item, wall)
        self._emit(LegacyMessageArrived(ip, item.port, item.team, item.text))

    def _on_control(self, ip: str, item: LegacyControl) -> None:
        now, wall = self._clocks()
        if item.port is None:
            entry = self._peers.only_at(ip) if item.word.leaves else None
            if entry is not None:
                self._peers.remove(entry.host, entry.port)
                self._emit(LegacyPeerLeft(entry.team, ip, entry.port, f"said {item.word.value}"))
            return
        if item.word.leaves:
            gone = self._peers.remove(ip, item.port)
            if gone is not None:
                self._emit(LegacyPeerLeft(gone.team, ip, item.port, f"said {item.word.value}"))
            return
        entry, new = self._peers.heard(
            ip, item.port, item.team, item.dialect, now=now, wall=wall, ttl=self.config.peer_ttl
        )
        self._arm()
        if new:
            self._emit(LegacyPeerDiscovered(entry.team, ip, item.port))

    def _on_beacon(self, ip: str, beacon: OriginalBeacon) -> None:
        now, wall = self._clocks()
        known = self._peers.get(ip, beacon.port) is not None
        entry, new = self._peers.heard(
            ip,
            beacon.port,
            None if known else beacon.name,  # a team named in its messages stays
            ORIGINAL,
            now=now,
            wall=wall,
            ttl=self.config.beacon_timeout,
        )
        self._arm()
        if new:
            self._emit(LegacyPeerDiscovered(entry.team, ip, beacon.port))

    def _housekeeping(self) -> None:
        self._tick = None
        if self._closed or self._loop is None:
            return
        for entry in self._peers.expire(self._loop.time()):
            self._emit(LegacyPeerLeft(entry.team, entry.host, entry.port, "timed out"))
        self._arm()

    def _arm(self) -> None:
        """A timer at the list's next expiry, not a periodic pass: an idle list wakes nobody."""
        due = self._peers.next_expiry()
        if self._closed or self._loop is None or due is None:
            return
        if self._tick is not None:
            if self._tick.when() <= due:
                return
            self._tick.cancel()
        self._tick = self._loop.call_at(due, self._housekeeping)

    # -- helpers ---------------------------------------------------------------

    def _clocks(self) -> tuple[float, float]:
        loop = self._loop
        return (loop.time() if loop is not None else time.monotonic()), time.time()

    def _notice(self, text: str) -> None:
        if not self._notices.due(self._clocks()[0]):
            return
        more = self._notices.suppressed
        self._notices.suppressed = 0
        self._emit(Problem(text + (f" ({more} more since the last such line)" if more else "")))

    def _record_received(self, ip: str, item: LegacyMessage, wall: float) -> None:
        row = StoredMessage(
            msg_id=new_msg_id(wall),
            peer_fp=None,
            peer_name=item.team,
            peer_host=ip,
            peer_port=item.port,
            direction=Direction.IN,
            text=item.text,
            sent_at=wall,
            stored_at=wall,
            state=DeliveryState.RECEIVED,
            legacy=True,
        )
        self._store_row(row)

    def _record_sent(  # noqa: PLR0917 (a history row's fields)
        self, name: str, host: str, port: int, text: str, state: DeliveryState, detail: str
    ) -> None:
        wall = time.time()
        row = StoredMessage(
            msg_id=new_msg_id(wall),
            peer_fp=None,
            peer_name=name,
            peer_host=host,
            peer_port=port,
            direction=Direction.OUT,
            text=text,
            sent_at=wall,
            stored_at=wall,
            state=state,
            detail=detail,
            legacy=True,
        )
        self._store_row(row)

    def _store_row(self, row: StoredMessage) -> None:
        if self._store is None:
            return
        try:
            if row.direction is Direction.IN:
                self._store.add_incoming([row])
            else:
                self._store.add_outgoing([row])
        except StorageError as exc:
            if self._storage_notices.due(self._clocks()[0]):
                self._emit(Problem(f"Cannot store a legacy message: {exc}"))


def _in_loop(loop: asyncio.AbstractEventLoop | None) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _log_failure(future: Any) -> None:
    if future.cancelled():
        return
    exc = future.exception()
    if exc is not None:
        log.error("legacy service could not start serving: %s", exc)


def _is_local(host: str) -> bool:
    return host.startswith("127.") or host == "0.0.0.0" or host in _local_addresses()


@functools.cache
def _local_addresses() -> frozenset[str]:
    """This host's IPv4 addresses, read from the interfaces (no name lookup)."""
    import ifaddr

    found: set[str] = set()
    for adapter in ifaddr.get_adapters():
        found.update(ip.ip for ip in adapter.ips if isinstance(ip.ip, str))
    return frozenset(found)
