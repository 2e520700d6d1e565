"""File transfers wired to the node's sessions, alarm and menu.

The `Transfers` role knows nothing of sessions; this part gives it what it
needs from them (a peer's current session to send on, its write buffer),
tells it when a peer's session comes, goes or is replaced, hands it the
transfer messages, and drives its housekeeping from the node's one alarm:
each second while data moves or a connected peer has a transfer under way
(progress lines, stalled senders, chunks), and rarely otherwise (offers that
waited too long expire).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from peerchat.events import FileOutcome, FileResult, IncomingOffer, UiEvent
from peerchat.net.connector import ANY_CONNECT_FAILURE
from peerchat.net.file_store import SourceFile
from peerchat.net.session import Session
from peerchat.net.transfers import LoopOffload, Transfers, TransferSettings
from peerchat.policy.session_table import SessionTable
from peerchat.protocol.messages import Message
from peerchat.protocol.transfer import TRANSFER_MESSAGE_TYPES
from storage import HistoryStore

# How often the transfers' housekeeping runs while a connected peer has one under way.
TICK_EVERY = 1.0
# ... and while transfers only wait (for a peer, or for the user's answer).
WAITING_TICK_EVERY = 60.0


class FileWiring:
    """The node's side of file transfers, on the loop thread."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        store: HistoryStore,
        settings: TransferSettings,
        *,
        sessions: SessionTable[Session],
        emit: Callable[[UiEvent], None],
        poke: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._sessions = sessions
        self._poke = poke
        self._up: set[str] = set()  # peers the transfers were told have a session
        self._last_tick = loop.time()
        self.transfers = Transfers(
            store, settings, self._send, self._buffered, emit, LoopOffload(loop), time.time
        )

    # -- what the transfers use ---------------------------------------------------

    def _send(self, fp: str, messages: Sequence[Message]) -> bool:
        session = self._sessions.get(fp)
        if session is None or not session.established or session.closed:
            return False
        session.send(messages)
        return True

    def _buffered(self, fp: str) -> int:
        session = self._sessions.get(fp)
        transport = None if session is None else session.transport
        return 0 if transport is None else transport.get_write_buffer_size()

    # -- session news (wired by the node through the session owner) ---------------

    def session_up(self, session: Session, fp: str) -> None:
        if fp in self._up:
            # A new session replaced the peer's current one: the old one is gone.
            self.transfers.session_down(fp)
        self._up.add(fp)
        name = session.peer.name if session.peer is not None else fp[:8]
        self.transfers.session_up(fp, name)
        self._poke()

    def session_down(self, fp: str) -> None:
        if fp in self._up:
            self._up.discard(fp)
            self.transfers.session_down(fp)
        self._poke()

    def received(self, session: Session, fp: str, message: Message) -> None:
        assert isinstance(message, TRANSFER_MESSAGE_TYPES)
        self.transfers.handle(fp, message)
        self._poke()

    def writable(self, session: Session, fp: str) -> None:
        """The session's write buffer drained: more chunks may go."""
        self.transfers.pump(fp)

    # -- for reconnecting and upkeep ------------------------------------------------

    def has_work(self, fp: str) -> bool:
        return self.transfers.has_work(fp)

    def busy(self, fp: str) -> bool:
        return self.transfers.busy(fp)

    # -- a timed part of the node's alarm -------------------------------------------

    def next_due(self) -> float | None:
        if any(self.transfers.busy(fp) or self.transfers.has_work(fp) for fp in self._up):
            return self._last_tick + TICK_EVERY
        if self.transfers.peers_with_work() or self.transfers.offers():
            return self._last_tick + WAITING_TICK_EVERY
        return None

    def handle_timer(self, now: float) -> None:
        due = self.next_due()
        if due is None or now < due:
            return
        self._last_tick = now
        self.transfers.tick()

    # -- the menu's calls (coroutines run on the loop by the node) ------------------

    async def send_file(
        self,
        fp: str,
        source: SourceFile,
        *,
        name_of: Callable[[str], str],
        addresses: Sequence[tuple[str, int]],
        open_session: Callable[[str, int], Coroutine[Any, Any, Session]],
        want_reconnect: Callable[..., None],
    ) -> FileResult:
        """Open a session at these addresses first (as option 1 does), then offer."""
        for host, port in addresses:
            if fp in self._sessions:
                break
            with contextlib.suppress(*ANY_CONNECT_FAILURE):
                await open_session(host, port)
        result = self.transfers.offer(fp, name_of(fp), source)
        if result.outcome is FileOutcome.QUEUED:
            want_reconnect(fp, at_once=True)
        self._poke()
        return result

    async def offers(self) -> list[IncomingOffer]:
        return self.transfers.offers()

    async def answer(self, key: str, accept: bool) -> FileResult:
        result = self.transfers.answer(key, accept)
        self._poke()
        return result
