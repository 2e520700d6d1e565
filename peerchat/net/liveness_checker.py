"""The liveness checker: takes silent peers off the list and keeps quiet sessions alive.

One of the node's three roles (with the TCP server and the discovery
service). It acts only when the alarm says something is due: a listed peer
silent past the peer timeout is removed (its session, if any, dropped), and
each session is pinged, closed for idleness or dropped as `policy.upkeep`
decides. A session that carries a file transfer (`in_use`) is not idle.
"""

from __future__ import annotations

from collections.abc import Callable

from peerchat.events import PeerOffline, UiEvent
from peerchat.net.alarm import earliest
from peerchat.net.session import BYE_IDLE, Session
from peerchat.policy.presence import Presence
from peerchat.policy.session_table import SessionTable
from peerchat.policy.upkeep import Upkeep, UpkeepLimits, upkeep, upkeep_due
from peerchat.protocol.messages import Ping


class LivenessChecker:
    def __init__(
        self,
        presence: Presence,
        sessions: SessionTable[Session],
        limits: UpkeepLimits,
        emit: Callable[[UiEvent], None],
        wake_by: Callable[[float], None],
        *,
        in_use: Callable[[str], bool] = lambda fp: False,
    ) -> None:
        self._presence = presence
        self._sessions = sessions
        self._limits = limits
        self._emit = emit
        self._wake_by = wake_by
        self._in_use = in_use

    def watch(self, session: Session) -> None:
        """A session was established: its first ping falls due."""
        self._wake_by(self._due(session))

    def heard_from_afar(self, now: float) -> None:
        """A peer was listed or heard at `now`: it expires at the latest a timeout later."""
        self._wake_by(now + self._limits.peer_timeout)

    def next_due(self) -> float | None:
        sessions = [self._due(s) for _, s in self._sessions.live() if not s.closed]
        return earliest([self._presence.next_due(), *sessions])

    def handle_timer(self, now: float) -> None:
        for fp, peer in self._presence.expire(now):
            session = self._sessions.get(fp)
            if session is not None:
                session.fail("peer timed out")
            if peer is not None:
                self._emit(PeerOffline(peer.name, peer.host, peer.port, "timed out"))
        for fp, session in self._sessions.live():
            if session.closed:
                continue
            if self._in_use(fp):
                session.last_chat = now  # file data moving counts as use, as chat does
            action = upkeep(
                self._limits, now, session.last_received, session.last_chat, session.last_ping
            )
            if action is Upkeep.FAIL:
                session.fail("no traffic from the peer")
            elif action is Upkeep.CLOSE_IDLE:
                session.close(BYE_IDLE)
            elif action is Upkeep.PING:
                session.last_ping = now
                session.send([Ping(int(now * 1000) & 0xFFFFFFFFFFFFFFFF)])

    def _due(self, session: Session) -> float:
        return upkeep_due(self._limits, session.last_received, session.last_chat, session.last_ping)
