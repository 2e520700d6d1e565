"""The TCP server: listens on the peer's port and gives each connection a session.

One of the node's three roles (with the discovery service and the liveness
checker). What happens on a connection is the session owner's business.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable

from peerchat.errors import BindError
from peerchat.net.session import Session


class TcpServer:
    def __init__(self, loop: asyncio.AbstractEventLoop, new_session: Callable[[], Session]) -> None:
        self._loop = loop
        self._new_session = new_session
        self._server: asyncio.Server | None = None

    async def start(self, bind: str, port: int) -> None:
        """Listen on bind:port; BindError (a sentence for the user) if it cannot."""
        try:
            self._server = await self._loop.create_server(
                self._new_session,
                host=bind or None,
                port=port,
                reuse_address=True,
                backlog=1024,
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise BindError(f"Port {port} is already in use.") from None
            raise BindError(f"Cannot listen on {bind}:{port}: {exc.strerror or exc}") from None

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
