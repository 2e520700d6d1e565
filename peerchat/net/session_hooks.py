"""Where a feature attaches to the peers' sessions: the session owner's extension points.

`PeerSessions` offers these; a feature (reach, file transfers, code comparison)
is handed them by the node shell and attaches itself, so that it never needs
the owner, nor the owner it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from peerchat.events import UiEvent
from peerchat.net.session import Session
from peerchat.protocol.messages import Message


class SessionHooks(Protocol):
    def route(
        self, kinds: Iterable[type[Message]], handler: Callable[[Session, str, Message], None]
    ) -> None:
        """Hand messages of these kinds, from a peer's current session, to `handler`."""
        ...

    def on_session_up(self, listener: Callable[[Session, str], None]) -> None:
        """Tell `listener` when a session becomes a peer's current one."""
        ...

    def on_session_down(self, listener: Callable[[str], None]) -> None:
        """Tell `listener` when a peer's current session is gone."""
        ...

    def on_writable(self, listener: Callable[[Session, str], None]) -> None:
        """Tell `listener` when a peer's current session can take more data again."""
        ...

    def announce_with(self, announcement: Callable[[Session], UiEvent | None]) -> None:
        """How a peer that a session newly lists is announced (None: not at all)."""
        ...
