"""Code comparison wired to the peers' sessions, the trust book and the menu.

`VerificationRole` knows nothing of sessions; this part tells it which
session is current for each peer (with that session's handshake hash), hands
it the comparison messages, sends what it says on the peer's current session,
and writes "verified" through the one write path: the trust book, then the
active list, so that option 2 shows it at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from peerchat.events import UiEvent
from peerchat.net.session import Session
from peerchat.net.session_hooks import SessionHooks
from peerchat.net.trust_book import TrustBook
from peerchat.net.verification import LoopVerifier, VerificationRole
from peerchat.policy.presence import Presence
from peerchat.policy.session_table import SessionTable
from peerchat.protocol.messages import VERIFY_MESSAGE_TYPES, Message


class VerificationWiring:
    """The node's side of code comparison, on the loop thread; `verifier` is the menu's."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        own_fingerprint: str,
        sessions: SessionTable[Session],
        trust_book: TrustBook,
        presence: Presence,
        *,
        emit: Callable[[UiEvent], None],
        poke: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._sessions = sessions
        self._trust = trust_book
        self._presence = presence
        self._poke = poke
        self.role = VerificationRole(
            own_fingerprint, send=self._send_to_current, mark_verified=self.mark_verified, emit=emit
        )
        self.verifier = LoopVerifier(self.role, loop, after=poke)

    def attach(self, hooks: SessionHooks) -> None:
        hooks.route(VERIFY_MESSAGE_TYPES, self._received)
        hooks.on_session_up(self._session_up)
        hooks.on_session_down(self._session_down)

    def mark_verified(self, fp: str) -> None:
        """A peer is verified: in the store and, if it is listed, in the active list at once."""
        peer = self._presence.get(fp)
        self._trust.verify(fp, True, peer.name if peer is not None else None)
        if peer is not None:
            self._presence.set_verified(fp, self._trust.is_verified(fp, peer.name))

    def _send_to_current(self, fp: str, message: Message) -> None:
        session = self._sessions.get(fp)
        if session is not None:
            session.send([message])

    def _received(self, session: Session, fp: str, message: Message) -> None:
        assert isinstance(message, VERIFY_MESSAGE_TYPES)
        self.role.receive(fp, message, self._loop.time())
        self._poke()

    def _session_up(self, session: Session, fp: str) -> None:
        handshake_hash = session.channel.handshake_hash
        assert handshake_hash is not None and session.peer is not None
        self.role.session_opened(fp, session.peer.name, handshake_hash, self._loop.time())

    def _session_down(self, fp: str) -> None:
        self.role.session_closed(fp, self._loop.time())
