"""The file transfers of a running peer: the role that owns them.

It keeps every transfer's state machine (policy/transfer.py), carries out what
they ask (read and write files through file_store.py, record them in the
history, tell the user), and feeds them what arrives. It knows nothing of
sockets or of the node: everything it needs from outside is injected.

    send(fp, messages) -> bool    put messages on the peer's live session (False: none)
    buffered(fp) -> int           bytes waiting in that session's write buffer
    emit(event)                   news for the user interface
    offload(work, done)           run blocking work (hashing a large file, saving)
                                  off the event loop; call done(result) back on it
    clock() -> float              wall-clock time

The node calls, on its event loop: `load()` at start; `session_up(fp)` and
`session_down(fp)` as the peer's one live session comes and goes; `handle(fp,
message)` for each transfer message from that session; `pump(fp)` when the
session's write buffer has drained; `tick()` every housekeeping pass; and,
on behalf of the menu, `offer`, `offers` and `answer`. It asks `peers_with_work()`
whom to reconnect to, and `busy(fp)` whether a quiet session is still in use.

Chat first: chunks go out only while fewer than `window` bytes of them are
unacknowledged for the peer and its write buffer holds less than `low_water`
bytes, so a chat message queued behind them waits for at most about one window
of file data. The receiver acknowledges every few chunks; each acknowledgement
lets the next chunks out.

An offer to a peer that is away is recorded (state `waiting`) and goes out on
the next session with that peer; the node reconnects to peers with transfers
waiting as it does for queued messages, and an offer that waits longer than
`max_age` fails, as a queued message expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol, TypeVar

from peerchat import limits
from peerchat.errors import StorageError
from peerchat.events import (
    FileOffered,
    FileOutcome,
    FileProgress,
    FileResult,
    FileTransferEnded,
    IncomingOffer,
    Problem,
    UiEvent,
)
from peerchat.net.file_store import (
    Downloads,
    FileStoreError,
    PartialFile,
    SourceFile,
    SourceReader,
)
from peerchat.policy.filenames import safe_file_name
from peerchat.policy.progress import ProgressMeter, format_size
from peerchat.policy.transfer import (
    Action,
    CheckPrefix,
    DiscardPartial,
    HashPartial,
    ReceiveState,
    ReceivingTransfer,
    Report,
    ResetPartial,
    Send,
    SendingTransfer,
    SendState,
    TransferOutcome,
    VerifyAndSave,
    WriteChunk,
)
from peerchat.protocol.transfer import (
    AbortCode,
    FileAbort,
    FileAccept,
    FileAck,
    FileChunk,
    FileComplete,
    FileDecline,
    FileOffer,
    FileRestart,
    TransferMessage,
    new_transfer_id,
)
from storage import Direction, StoredTransfer, TransferState

log = logging.getLogger(__name__)

T = TypeVar("T")
RECENTLY_ENDED: Final = 1024  # ended transfers whose late messages are dropped quietly
TOLD_REFUSALS: Final = 3  # offers refused as too large that are shown, per peer and session
DECLINED_BY_USER: Final = "declined"
_ANSWERS_TO_SENDER: Final = (FileChunk, FileRestart)


class Offload(Protocol):
    def __call__(self, work: Callable[[], T], done: Callable[[T | Exception], None], /) -> None:
        """Run `work` away from the event loop; call `done` with its result (or error) on it."""
        ...


class LoopOffload:
    """Offload to the event loop's default executor; results come back on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def __call__(self, work: Callable[[], T], done: Callable[[T | Exception], None], /) -> None:
        future = self._loop.run_in_executor(None, work)

        def finished(result: asyncio.Future[T]) -> None:
            if result.cancelled():
                return
            error = result.exception()
            if error is None:
                done(result.result())
            elif isinstance(error, Exception):
                done(error)

        future.add_done_callback(finished)


class TransferStore(Protocol):
    """What the role needs from the history (storage.HistoryStore has it)."""

    def add_transfer(self, transfer: StoredTransfer) -> None: ...

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
    ) -> None: ...

    def get_transfer(
        self, transfer_id: str, direction: Direction, peer_fp: str
    ) -> StoredTransfer | None: ...

    def unfinished_transfers(self) -> list[StoredTransfer]: ...


@dataclass(frozen=True)
class TransferSettings:
    downloads: Path
    max_file_size: int = limits.MAX_FILE_SIZE
    free_space_reserve: int = limits.FREE_SPACE_RESERVE
    chunk_bytes: int = limits.CHUNK_BYTES
    window: int = limits.TRANSFER_WINDOW * limits.CHUNK_BYTES
    ack_every: int = limits.TRANSFER_ACK_EVERY * limits.CHUNK_BYTES
    low_water: int = 2 * limits.CHUNK_BYTES
    stall_timeout: float = limits.TRANSFER_STALL_TIMEOUT
    max_age: float = limits.TRANSFER_MAX_AGE
    max_offers_per_peer: int = limits.MAX_OFFERS_PER_PEER
    max_offers: int = limits.MAX_OFFERS


@dataclass(eq=False)
class _Outgoing:
    fp: str
    peer_name: str
    machine: SendingTransfer
    path: Path
    recorded: TransferState
    reader: SourceReader | None = None
    meter: ProgressMeter | None = None


@dataclass(eq=False)
class _Incoming:
    fp: str
    peer_name: str
    machine: ReceivingTransfer
    shown_name: str  # the offered name made safe
    recorded: TransferState | None = None  # None: not in the history (an undecided offer)
    partial_path: Path | None = None
    partial: PartialFile | None = None
    hasher: hashlib._Hash | None = None
    meter: ProgressMeter | None = None
    saved_as: Path | None = None
    detail: str | None = None
    code: AbortCode | None = None


# How the history records each state; None: as it was (a resumed transfer waits again).
_RECORDED: Final[dict[SendState | ReceiveState, TransferState | None]] = {
    SendState.WAITING: None,
    SendState.OFFERED: None,
    SendState.CHECKING: TransferState.ACTIVE,
    SendState.SENDING: TransferState.ACTIVE,
    SendState.COMPLETE: TransferState.COMPLETE,
    SendState.DECLINED: TransferState.DECLINED,
    SendState.FAILED: TransferState.FAILED,
    ReceiveState.OFFERED: None,
    ReceiveState.ACCEPTED: TransferState.ACTIVE,
    ReceiveState.PREPARING: TransferState.ACTIVE,
    ReceiveState.RECEIVING: TransferState.ACTIVE,
    ReceiveState.VERIFYING: TransferState.ACTIVE,
    ReceiveState.COMPLETE: TransferState.COMPLETE,
    ReceiveState.DECLINED: TransferState.DECLINED,
    ReceiveState.FAILED: TransferState.FAILED,
}


class Transfers:
    """Every file transfer of one running peer, on its event loop."""

    def __init__(  # noqa: PLR0917
        self,
        store: TransferStore,
        settings: TransferSettings,
        send: Callable[[str, Sequence[TransferMessage]], bool],
        buffered: Callable[[str], int],
        emit: Callable[[UiEvent], None],
        offload: Offload,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.downloads = Downloads(settings.downloads)
        self._store = store
        self._send = send
        self._buffered = buffered
        self._emit = emit
        self._offload = offload
        self._clock = clock
        self._out: dict[str, dict[str, _Outgoing]] = {}  # fp -> transfer id -> transfer
        self._in: dict[str, dict[str, _Incoming]] = {}
        self._online: set[str] = set()
        self._names: dict[str, str] = {}  # fp -> name from its last handshake
        self._refusals_told: dict[str, int] = {}  # fp -> offers refused as too large, told
        # Transfers that ended lately, with the answer to give if they are offered again.
        self._ended: OrderedDict[tuple[str, str], TransferMessage | None] = OrderedDict()

    # -- start and stop ------------------------------------------------------------

    def load(self) -> None:
        """Take up the transfers the history has as unfinished (at start)."""
        for row in self._store.unfinished_transfers():
            try:
                digest = bytes.fromhex(row.sha256)
                if row.direction is Direction.OUT and row.local_path is not None:
                    machine = SendingTransfer(
                        row.transfer_id,
                        row.file_name,
                        row.size,
                        digest,
                        row.updated_at,
                        chunk_bytes=self.settings.chunk_bytes,
                    )
                    self._out.setdefault(row.peer_fp, {})[row.transfer_id] = _Outgoing(
                        row.peer_fp, row.peer_name, machine, Path(row.local_path), row.state
                    )
                elif row.direction is Direction.IN and row.state is TransferState.ACTIVE:
                    offer = FileOffer(row.transfer_id, row.size, digest, row.file_name)
                    incoming = self._new_incoming(row.peer_fp, row.peer_name, offer, accepted=True)
                    incoming.machine.touched_at = row.updated_at
                    incoming.recorded = TransferState.ACTIVE
                    if row.local_path is not None:
                        incoming.partial_path = Path(row.local_path)
                    self._in.setdefault(row.peer_fp, {})[row.transfer_id] = incoming
            except ValueError as exc:
                log.warning("skipping unreadable transfer %s: %s", row.transfer_id, exc)

    def close(self) -> None:
        """Close every open file (the transfers stay recorded for the next start)."""
        for outgoing in self._all_out():
            self._close_reader(outgoing)
        for incoming in self._all_in():
            self._close_partial(incoming)

    # -- queries for the node ------------------------------------------------------

    def peers_with_work(self) -> list[str]:
        """Peers with a transfer that needs a session: offers waiting, resumes due."""
        peers = [
            fp for fp, ts in self._out.items() if any(not t.machine.final for t in ts.values())
        ]
        peers += [
            fp
            for fp, ts in self._in.items()
            if fp not in peers and any(t.machine.has_partial for t in ts.values())
        ]
        return peers

    def has_work(self, fp: str) -> bool:
        """Whether this peer has a transfer that needs a session with it."""
        return fp in self.peers_with_work()

    def busy(self, fp: str) -> bool:
        """Whether data is moving on this peer's session (a quiet session is not idle then)."""
        sending = (SendState.CHECKING, SendState.SENDING)
        receiving = (ReceiveState.PREPARING, ReceiveState.RECEIVING, ReceiveState.VERIFYING)
        return any(t.machine.state in sending for t in self._out.get(fp, {}).values()) or any(
            t.machine.state in receiving for t in self._in.get(fp, {}).values()
        )

    # -- the session ---------------------------------------------------------------

    def session_up(self, fp: str, peer_name: str) -> None:
        self._online.add(fp)
        self._names[fp] = peer_name
        self._refusals_told.pop(fp, None)
        now = self._clock()
        for outgoing in list(self._out.get(fp, {}).values()):
            self._run_out(outgoing, outgoing.machine.session_up(now))
        for incoming in list(self._in.get(fp, {}).values()):
            self._run_in(incoming, incoming.machine.session_up())

    def session_down(self, fp: str) -> None:
        self._online.discard(fp)
        for outgoing in self._out.get(fp, {}).values():
            outgoing.machine.session_down()
            outgoing.meter = None
            self._close_reader(outgoing)
        for incoming in self._in.get(fp, {}).values():
            incoming.machine.session_down()
            incoming.meter = None

    # -- messages from the peer ----------------------------------------------------

    def handle(self, fp: str, message: TransferMessage) -> None:
        """A transfer message that arrived on the peer's live session."""
        now = self._clock()
        if isinstance(message, FileOffer):
            self._on_offer(fp, message, now)
            return
        tid = message.transfer_id
        if isinstance(message, FileAbort):
            # Ours to them, or theirs to us: ids never collide within one peer (see _on_offer).
            outgoing_abort = self._out.get(fp, {}).get(tid)
            incoming_abort = self._in.get(fp, {}).get(tid)
            if outgoing_abort is not None:
                self._run_out(
                    outgoing_abort, outgoing_abort.machine.on_abort(message.code, message.detail)
                )
            elif incoming_abort is not None:
                self._run_in(
                    incoming_abort, incoming_abort.machine.on_abort(message.code, message.detail)
                )
            return
        if isinstance(message, _ANSWERS_TO_SENDER):
            incoming = self._in.get(fp, {}).get(tid)
            if incoming is None:
                self._unknown(fp, tid, Direction.IN)
            elif isinstance(message, FileChunk):
                self._run_in(incoming, incoming.machine.on_chunk(message, now))
            else:
                self._run_in(incoming, incoming.machine.on_restart(now))
            return
        outgoing = self._out.get(fp, {}).get(tid)
        if outgoing is None:
            if not isinstance(message, FileDecline | FileComplete):
                self._unknown(fp, tid, Direction.OUT)
            return
        machine = outgoing.machine
        if isinstance(message, FileAck):
            self._run_out(outgoing, machine.on_ack(message.received, now))
            if outgoing.meter is not None:
                outgoing.meter.update(machine.acked, now)
            self.pump(fp)
        elif isinstance(message, FileAccept):
            self._run_out(outgoing, machine.on_accept(message, now))
            self.pump(fp)
        elif isinstance(message, FileDecline):
            self._run_out(outgoing, machine.on_decline(message.reason))
        else:
            self._run_out(outgoing, machine.on_complete())

    def _unknown(self, fp: str, tid: str, direction: Direction) -> None:
        """A message for a transfer that is not under way here: say how it ended, once."""
        if (fp, tid) in self._ended:
            return  # late messages of a transfer that just ended
        self._remember_ended(fp, tid)
        stored = None
        try:
            stored = self._store.get_transfer(tid, direction, fp)
        except StorageError as exc:
            log.warning("cannot look up transfer %s: %s", tid, exc)
        if stored is None or stored.state is not TransferState.FAILED:
            if stored is None or stored.state is TransferState.ACTIVE:
                self._send(fp, [FileAbort(tid, AbortCode.UNKNOWN_TRANSFER)])
            return
        self._send(fp, [_stored_abort(stored)])

    def _on_offer(self, fp: str, offer: FileOffer, now: float) -> None:
        tid = offer.transfer_id
        known = self._in.get(fp, {}).get(tid)
        if known is not None:
            if known.machine.matches(offer):
                self._run_in(known, known.machine.offered_again())
            return
        if tid in self._out.get(fp, {}):
            return  # an id of ours: refused, so that an abort always names one transfer
        if self._answer_from_history(fp, tid):
            return
        if (fp, tid) in self._ended:
            answer = self._ended[(fp, tid)]
            if answer is not None:
                self._send(fp, [answer])
            return
        peer_name = self._names.get(fp, fp[:8])
        shown = safe_file_name(offer.name)
        if offer.size > self.settings.max_file_size:
            decline = FileDecline(tid, "over the receiver's size limit")
            self._send(fp, [decline])
            self._remember_ended(fp, tid, decline)
            told = self._refusals_told.get(fp, 0)
            if told < TOLD_REFUSALS:  # a peer offering huge files in a loop cannot flood the screen
                self._refusals_told[fp] = told + 1
                limit = format_size(self.settings.max_file_size)
                self._emit(
                    FileTransferEnded(
                        peer_name,
                        shown,
                        outgoing=False,
                        outcome=TransferOutcome.DECLINED,
                        size=offer.size,
                        reason=f"over your limit of {limit} (--max-file-size)",
                    )
                )
            return
        waiting = [t for t in self._all_in() if t.machine.state is ReceiveState.OFFERED]
        from_peer = sum(1 for t in waiting if t.fp == fp)
        if (
            from_peer >= self.settings.max_offers_per_peer
            or len(waiting) >= self.settings.max_offers
        ):
            log.warning("declined an offer from [%s]: too many offers waiting", fp[:8])
            decline = FileDecline(tid, "too many offers waiting")
            self._send(fp, [decline])
            self._remember_ended(fp, tid, decline)
            return
        incoming = self._new_incoming(fp, peer_name, offer, accepted=False)
        incoming.machine.online = True
        self._in.setdefault(fp, {})[tid] = incoming
        self._emit(FileOffered(peer_name, fp, shown, offer.size))

    def _answer_from_history(self, fp: str, tid: str) -> bool:
        """An offer of a transfer that ended here before (our answer was lost): say it again."""
        try:
            stored = self._store.get_transfer(tid, Direction.IN, fp)
        except StorageError as exc:
            log.warning("cannot look up transfer %s: %s", tid, exc)
            return False
        if stored is None:
            return False
        answer: TransferMessage
        if stored.state is TransferState.COMPLETE:
            answer = FileComplete(tid)
        elif stored.state is TransferState.DECLINED:
            answer = FileDecline(tid, stored.detail or DECLINED_BY_USER)
        elif stored.state is TransferState.FAILED:
            answer = _stored_abort(stored)
        else:
            return False
        self._send(fp, [answer])
        return True

    # -- sending chunks ------------------------------------------------------------

    def pump(self, fp: str) -> None:
        """Send the chunks this peer's window and write buffer allow, round robin."""
        transfers = self._out.get(fp)
        if not transfers or fp not in self._online:
            return
        active = [t for t in transfers.values() if t.machine.wants_to_send]
        if not active or self._buffered(fp) > self.settings.low_water:
            return
        budget = self.settings.window - sum(t.machine.in_flight for t in transfers.values())
        chunk = self.settings.chunk_bytes
        batch: list[TransferMessage] = []
        while budget > 0 and active:
            for outgoing in list(active):
                reads = outgoing.machine.take_chunks(min(budget, chunk))
                try:
                    reader = self._reader(outgoing)
                    for read in reads:
                        data = reader.read_at(read.offset, read.length)
                        batch.append(FileChunk(outgoing.machine.transfer_id, read.offset, data))
                        budget -= read.length
                except FileStoreError as exc:
                    self._run_out(outgoing, outgoing.machine.source_failed(str(exc)))
                if not outgoing.machine.wants_to_send:
                    active.remove(outgoing)
                if budget <= 0:
                    break
        if batch:
            self._send(fp, batch)

    def _reader(self, outgoing: _Outgoing) -> SourceReader:
        if outgoing.reader is None:
            outgoing.reader = SourceReader(outgoing.path, outgoing.machine.size)
        return outgoing.reader

    # -- the user's calls (through the node) ---------------------------------------

    def offer(self, fp: str, peer_name: str, source: SourceFile) -> FileResult:
        """Offer a file (already checked and hashed by the caller) to a peer."""
        now = self._clock()
        tid = new_transfer_id()
        machine = SendingTransfer(
            tid, source.name, source.size, source.sha256, now, chunk_bytes=self.settings.chunk_bytes
        )
        row = StoredTransfer(
            transfer_id=tid,
            peer_fp=fp,
            peer_name=peer_name,
            direction=Direction.OUT,
            file_name=source.name,
            size=source.size,
            sha256=source.sha256.hex(),
            state=TransferState.WAITING,
            local_path=str(source.path),
            created_at=now,
            updated_at=now,
        )
        try:
            self._store.add_transfer(row)
        except StorageError as exc:
            return FileResult(
                FileOutcome.NOT_SENT, source.name, peer_name, f"cannot record it: {exc}"
            )
        outgoing = _Outgoing(fp, peer_name, machine, source.path, TransferState.WAITING)
        self._out.setdefault(fp, {})[tid] = outgoing
        if fp not in self._online:
            return FileResult(FileOutcome.QUEUED, source.name, peer_name)
        self._run_out(outgoing, machine.session_up(now))
        return FileResult(FileOutcome.OFFERED, source.name, peer_name)

    def offers(self) -> list[IncomingOffer]:
        """Offers waiting for the user's answer, oldest first."""
        return [
            IncomingOffer(
                f"{t.fp}/{t.machine.transfer_id}", t.peer_name, t.fp, t.shown_name, t.machine.size
            )
            for t in sorted(self._all_in(), key=lambda t: t.machine.touched_at)
            if t.machine.state is ReceiveState.OFFERED
        ]

    def answer(self, key: str, accept: bool) -> FileResult:
        """Accept or decline an offer (by the key `offers()` gave)."""
        fp, _, tid = key.partition("/")
        incoming = self._in.get(fp, {}).get(tid)
        if incoming is None or incoming.machine.state is not ReceiveState.OFFERED:
            return FileResult(FileOutcome.UNKNOWN, "", detail="that offer is no longer waiting")
        name, peer = incoming.shown_name, incoming.peer_name
        if not accept:
            try:
                self._record_new(incoming, TransferState.DECLINED, DECLINED_BY_USER)
            except StorageError as exc:
                self._emit(Problem(f"Cannot record the declined file: {exc}"))
            self._run_in(incoming, incoming.machine.decline(DECLINED_BY_USER))
            return FileResult(FileOutcome.DECLINED, name, peer)
        refused = self._prepare_partial(incoming)
        if refused:
            return FileResult(FileOutcome.NOT_SENT, name, peer, refused)
        self._run_in(incoming, incoming.machine.accept(self._clock()))
        return FileResult(FileOutcome.ACCEPTED, name, peer, str(self.downloads.folder))

    def _prepare_partial(self, incoming: _Incoming) -> str:
        """Check the space, create the partial file and record the transfer; why not, if not."""
        machine = incoming.machine
        try:
            free = self.downloads.free_bytes()
            needed = machine.size + self.settings.free_space_reserve
            if free < needed:
                return (
                    f"not enough free space in {self.downloads.folder} "
                    f"({machine.size} bytes offered, {free} free)"
                )
            path = self.downloads.partial_path(incoming.fp, machine.transfer_id)
            partial = self.downloads.open_partial(path, fresh=False)
        except FileStoreError as exc:
            return str(exc)
        try:
            partial.truncate(0)
            incoming.partial_path = path
            self._record_new(incoming, TransferState.ACTIVE, None)
        except (FileStoreError, StorageError) as exc:
            partial.close()
            incoming.partial_path = None
            with contextlib.suppress(FileStoreError):
                self.downloads.discard(path)
            return f"cannot record it: {exc}" if isinstance(exc, StorageError) else str(exc)
        incoming.partial = partial
        incoming.hasher = hashlib.sha256()
        return ""

    # -- time --------------------------------------------------------------------

    def tick(self) -> None:
        """Deadlines (stalled senders, expired transfers), progress lines, and chunks."""
        now = self._clock()
        max_age = self.settings.max_age
        for outgoing in self._all_out():
            self._run_out(outgoing, outgoing.machine.expire(now, max_age))
            self._progress(outgoing.meter, outgoing.peer_name, outgoing.machine.name, True, now)
        for incoming in self._all_in():
            machine = incoming.machine
            if machine.state is ReceiveState.OFFERED and now - machine.touched_at > max_age:
                self._forget_in(incoming)
                continue
            self._run_in(incoming, machine.tick(now))
            self._run_in(incoming, machine.expire(now, max_age))
            self._progress(incoming.meter, incoming.peer_name, incoming.shown_name, False, now)
        for fp in list(self._online):
            self.pump(fp)

    def _progress(
        self, meter: ProgressMeter | None, peer: str, name: str, outgoing: bool, now: float
    ) -> None:
        if meter is None or not meter.line_due(now):
            return
        report = meter.report()
        self._emit(
            FileProgress(
                peer, name, outgoing, report.done, report.size, report.rate, report.seconds_left
            )
        )

    # -- carrying out the sender's actions ------------------------------------------

    def _run_out(self, outgoing: _Outgoing, actions: list[Action]) -> None:
        batch: list[TransferMessage] = []
        for action in actions:
            if isinstance(action, Send):
                batch.append(action.message)
            elif isinstance(action, CheckPrefix):
                self._check_prefix(outgoing, action)
            elif isinstance(action, Report):
                self._report_out(outgoing, action)
        if batch:
            self._send(outgoing.fp, batch)
        self._after_out(outgoing)

    def _after_out(self, outgoing: _Outgoing) -> None:
        machine = outgoing.machine
        if machine.state is SendState.SENDING and outgoing.meter is None:
            outgoing.meter = ProgressMeter(machine.size, machine.acked, self._clock())
        elif machine.state is not SendState.SENDING:
            outgoing.meter = None
        self._persist_out(outgoing)
        if machine.final:
            self._close_reader(outgoing)
            self._out.get(outgoing.fp, {}).pop(machine.transfer_id, None)
            if not self._out.get(outgoing.fp):
                self._out.pop(outgoing.fp, None)
            self._remember_ended(outgoing.fp, machine.transfer_id)

    def _check_prefix(self, outgoing: _Outgoing, check: CheckPrefix) -> None:
        machine = outgoing.machine
        try:
            reader = self._reader(outgoing)
        except FileStoreError as exc:
            self._run_out(outgoing, machine.source_failed(str(exc)))
            return

        def done(result: bool | Exception) -> None:
            if isinstance(result, Exception):
                self._run_out(outgoing, machine.source_failed(str(result)))
            else:
                self._run_out(outgoing, machine.prefix_checked(check, result, self._clock()))
                self.pump(outgoing.fp)

        self._offload(lambda: reader.prefix_digest(check.offset) == check.digest, done)

    def _report_out(self, outgoing: _Outgoing, report: Report) -> None:
        self._emit(
            FileTransferEnded(
                outgoing.peer_name,
                outgoing.machine.name,
                outgoing=True,
                outcome=report.outcome,
                size=outgoing.machine.size,
                reason=report.reason,
            )
        )
        if report.outcome is TransferOutcome.FAILED:
            self._record(outgoing, TransferState.FAILED, report.reason, report.code)
        elif report.outcome is TransferOutcome.DECLINED:
            self._record(outgoing, TransferState.DECLINED, report.reason or DECLINED_BY_USER)

    def _persist_out(self, outgoing: _Outgoing) -> None:
        state = _RECORDED[outgoing.machine.state]
        if state is not None and state is not outgoing.recorded:
            self._record(outgoing, state, None)

    def _record(
        self,
        outgoing: _Outgoing,
        state: TransferState,
        detail: str | None,
        code: AbortCode | None = None,
    ) -> None:
        if outgoing.recorded is state:
            return
        outgoing.recorded = state
        tid = outgoing.machine.transfer_id
        self._update(tid, Direction.OUT, outgoing.fp, state, detail, None, code)

    # -- carrying out the receiver's actions ----------------------------------------

    def _run_in(self, incoming: _Incoming, actions: list[Action]) -> None:
        batch: list[TransferMessage] = []
        try:
            for action in actions:
                if isinstance(action, Send):
                    batch.append(action.message)
                elif isinstance(action, WriteChunk):
                    self._write(incoming, action)
                else:
                    self._carry_out_in(incoming, action)
        except FileStoreError as exc:
            # Nothing after a failed write may go out (an ack would claim the chunk).
            self._run_in(incoming, incoming.machine.store_failed(str(exc)))
            return
        if batch:
            self._send(incoming.fp, batch)
        self._after_in(incoming)

    def _write(self, incoming: _Incoming, write: WriteChunk) -> None:
        partial, hasher = incoming.partial, incoming.hasher
        if partial is None or hasher is None:
            raise FileStoreError("the partial file is not open")
        partial.write_at(write.offset, write.data)
        hasher.update(write.data)
        if incoming.meter is not None:
            incoming.meter.update(incoming.machine.received, self._clock())

    def _carry_out_in(self, incoming: _Incoming, action: Action) -> None:
        if isinstance(action, HashPartial):
            self._hash_partial(incoming)
        elif isinstance(action, ResetPartial):
            self._open_partial(incoming).truncate(0)
            incoming.hasher = hashlib.sha256()
        elif isinstance(action, VerifyAndSave):
            self._verify_and_save(incoming)
        elif isinstance(action, DiscardPartial):
            self._discard(incoming)
        elif isinstance(action, Report):
            self._report_in(incoming, action)

    def _open_partial(self, incoming: _Incoming) -> PartialFile:
        if incoming.partial is None:
            path = incoming.partial_path or self.downloads.partial_path(
                incoming.fp, incoming.machine.transfer_id
            )
            incoming.partial_path = path
            incoming.partial = self.downloads.open_partial(path, fresh=False)
            incoming.hasher = None  # what the file holds is known only once it is read
        return incoming.partial

    def _hash_partial(self, incoming: _Incoming) -> None:
        machine = incoming.machine
        partial = self._open_partial(incoming)
        if incoming.hasher is not None:  # kept up to date since the file was opened
            digest = incoming.hasher.copy().digest()
            self._run_in(incoming, machine.prefix_ready(machine.received, digest, self._clock()))
            return

        def done(result: tuple[int, hashlib._Hash] | Exception) -> None:
            if isinstance(result, Exception):
                self._run_in(incoming, machine.store_failed(str(result)))
                return
            if machine.state is not ReceiveState.PREPARING or incoming.partial is not partial:
                return  # the session went away meanwhile: the next one hashes again
            size, hasher = result
            incoming.hasher = hasher
            self._run_in(
                incoming, machine.prefix_ready(size, hasher.copy().digest(), self._clock())
            )

        self._offload(partial.hash_all, done)

    def _verify_and_save(self, incoming: _Incoming) -> None:
        machine = incoming.machine
        hasher = incoming.hasher
        if hasher is None or hasher.digest() != machine.sha256:
            self._run_in(incoming, machine.verified(False))
            return
        partial = self._open_partial(incoming)

        def done(result: Path | Exception) -> None:
            if isinstance(result, Exception):
                self._run_in(incoming, machine.store_failed(str(result)))
                return
            incoming.saved_as = result
            incoming.partial = None
            self._run_in(incoming, machine.verified(True))

        offered = machine.name
        self._offload(lambda: self.downloads.save(partial, offered), done)

    def _discard(self, incoming: _Incoming) -> None:
        self._close_partial(incoming)
        if incoming.partial_path is not None:
            try:
                self.downloads.discard(incoming.partial_path)
            except FileStoreError as exc:
                log.warning("%s", exc)

    def _report_in(self, incoming: _Incoming, report: Report) -> None:
        machine = incoming.machine
        kept = machine.received if report.outcome is TransferOutcome.STALLED else 0
        self._emit(
            FileTransferEnded(
                incoming.peer_name,
                incoming.shown_name,
                outgoing=False,
                outcome=report.outcome,
                size=machine.size,
                reason=report.reason,
                saved_as=None if incoming.saved_as is None else str(incoming.saved_as),
                kept=kept,
            )
        )
        if report.outcome is TransferOutcome.FAILED:
            incoming.detail, incoming.code = report.reason, report.code

    def _after_in(self, incoming: _Incoming) -> None:
        machine = incoming.machine
        if machine.state is ReceiveState.RECEIVING and incoming.meter is None:
            incoming.meter = ProgressMeter(machine.size, machine.received, self._clock())
        elif machine.state is not ReceiveState.RECEIVING:
            incoming.meter = None
        state = _RECORDED[machine.state]
        if incoming.recorded is not None and state is not None and state is not incoming.recorded:
            incoming.recorded = state
            saved = None if incoming.saved_as is None else str(incoming.saved_as)
            self._update(
                machine.transfer_id,
                Direction.IN,
                incoming.fp,
                state,
                incoming.detail,
                saved,
                incoming.code,
            )
        if machine.final:
            self._close_partial(incoming)
            self._forget_in(incoming)

    def _record_new(self, incoming: _Incoming, state: TransferState, detail: str | None) -> None:
        machine = incoming.machine
        now = self._clock()
        self._store.add_transfer(
            StoredTransfer(
                transfer_id=machine.transfer_id,
                peer_fp=incoming.fp,
                peer_name=incoming.peer_name,
                direction=Direction.IN,
                file_name=machine.name,
                size=machine.size,
                sha256=machine.sha256.hex(),
                state=state,
                local_path=None if incoming.partial_path is None else str(incoming.partial_path),
                created_at=now,
                updated_at=now,
                detail=detail,
            )
        )
        incoming.recorded = state

    # -- helpers -------------------------------------------------------------------

    def _new_incoming(
        self, fp: str, peer_name: str, offer: FileOffer, *, accepted: bool
    ) -> _Incoming:
        settings = self.settings
        machine = ReceivingTransfer(
            offer,
            self._clock(),
            accepted=accepted,
            ack_every=settings.ack_every,
            stall_timeout=settings.stall_timeout,
        )
        return _Incoming(fp, peer_name, machine, safe_file_name(offer.name))

    def _update(  # noqa: PLR0917
        self,
        tid: str,
        direction: Direction,
        fp: str,
        state: TransferState,
        detail: str | None,
        local_path: str | None,
        code: AbortCode | None = None,
    ) -> None:
        try:
            self._store.update_transfer(
                tid,
                direction,
                fp,
                state,
                self._clock(),
                detail=detail,
                local_path=local_path,
                abort_code=None if code is None else int(code),
            )
        except StorageError as exc:
            self._emit(Problem(f"Cannot record the file transfer: {exc}"))

    def _remember_ended(self, fp: str, tid: str, answer: TransferMessage | None = None) -> None:
        self._ended[(fp, tid)] = answer
        self._ended.move_to_end((fp, tid))
        while len(self._ended) > RECENTLY_ENDED:
            self._ended.popitem(last=False)

    def _forget_in(self, incoming: _Incoming) -> None:
        transfers = self._in.get(incoming.fp, {})
        transfers.pop(incoming.machine.transfer_id, None)
        if not transfers:
            self._in.pop(incoming.fp, None)
        self._remember_ended(incoming.fp, incoming.machine.transfer_id)

    def _close_reader(self, outgoing: _Outgoing) -> None:
        if outgoing.reader is not None:
            outgoing.reader.close()
            outgoing.reader = None

    @staticmethod
    def _close_partial(incoming: _Incoming) -> None:
        if incoming.partial is not None:
            incoming.partial.close()
            incoming.partial = None

    def _all_out(self) -> list[_Outgoing]:
        return [t for ts in self._out.values() for t in ts.values()]

    def _all_in(self) -> list[_Incoming]:
        return [t for ts in self._in.values() for t in ts.values()]


def _stored_abort(stored: StoredTransfer) -> FileAbort:
    """The abort that tells the other side how a recorded transfer failed."""
    try:
        code = AbortCode(stored.abort_code or AbortCode.CANNOT_STORE)
    except ValueError:
        code = AbortCode.CANNOT_STORE
    return FileAbort(stored.transfer_id, code, (stored.detail or "")[:200])
