"""Opening sessions to an address: the existing one, or a new, authenticated one.

Every way a connection attempt can fail is one of CONNECT_FAILURES, and
`describe` says it in the words the menu shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable

from peerchat.events import ActivePeer, ConnectResult, KeyConflict
from peerchat.net.session import Session
from peerchat.policy.presence import Presence
from peerchat.policy.session_table import SessionTable
from peerchat.protocol.channel import Role
from peerchat.protocol.messages import ConnectNotice


class Refused(Exception):
    """The remote peer closed the session on purpose (its goodbye reason is the message)."""


class KeyChangedError(Exception):
    def __init__(self, conflict: KeyConflict) -> None:
        super().__init__(conflict.name)
        self.conflict = conflict


NOT_CONFIRMED = "never reached at this address: connect to it once with its IP and port"

# A connection attempt that did not give a session (other than a changed key).
CONNECT_FAILURES: tuple[type[BaseException], ...] = (
    Refused,
    OSError,
    ConnectionError,
    TimeoutError,
)
# ... and the same with a changed key: for attempts whose failure only the next try cares about.
ANY_CONNECT_FAILURE: tuple[type[BaseException], ...] = (KeyChangedError, *CONNECT_FAILURES)


class Connector:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sessions: SessionTable[Session],
        presence: Presence,
        new_session: Callable[[Role], Session],
        *,
        key_at: Callable[[str, int], str | None],
        address_of: Callable[[str], tuple[str, int] | None],
        name_of: Callable[[str], str],
        own_port: int,
        connect_timeout: float,
    ) -> None:
        self._loop = loop
        self._sessions = sessions
        self._presence = presence
        self._new_session = new_session
        self._key_at = key_at
        self._address_of = address_of
        self._name_of = name_of
        self._own_port = own_port
        self._connect_timeout = connect_timeout

    async def open_session(self, host: str, port: int) -> Session:
        """An established session to host:port: the existing one, or a new one.

        An existing session is used only for the key a handshake confirmed at
        that address; otherwise whoever answers there now says who it is.
        """
        fp = self._key_at(host, port)
        if fp is not None:
            live = self._sessions.get(fp)
            if live is not None:
                return live

        def dial() -> Session:
            session = self._new_session(Role.INITIATOR)
            session.dialled = (host, port)  # a handshake here confirms the key at this address
            return session

        async with asyncio.timeout(self._connect_timeout):
            _, session = await self._loop.create_connection(dial, host, port)
        # The session fails itself at its handshake deadline, which ends this wait.
        return await session.ready

    async def try_open(self, host: str, port: int) -> None:
        """Open a session if possible; a failure is for the next attempt to notice."""
        with contextlib.suppress(*ANY_CONNECT_FAILURE):
            await self.open_session(host, port)

    async def connect(self, host: str, port: int) -> ConnectResult:
        if self.is_self(host, port):
            return ConnectResult(False, host, port, detail="that is this peer's own address")
        expected = self._key_at(host, port)
        try:
            session = await self.open_session(host, port)
        except KeyChangedError as exc:
            return ConnectResult(False, host, port, exc.conflict.name, "key changed")
        except CONNECT_FAILURES as exc:
            return ConnectResult(False, host, port, detail=describe(exc))
        session.send([ConnectNotice()])  # the other side says who connected, as the original did
        name = session.peer.name if session.peer else None
        fp = session.fingerprint
        if expected is not None and fp != expected:
            return ConnectResult(
                True,
                host,
                port,
                name,
                fingerprint=fp,
                expected_name=self._name_of(expected),
                expected_fingerprint=expected,
            )
        return ConnectResult(True, host, port, name, fingerprint=fp)

    async def connect_all(self) -> list[ConnectResult]:
        """Option 4 with no address: every listed peer, dialled only where it was reached before.

        A listed address is a claim (a beacon's source can be spoofed): dialling
        it on our own would let anyone on the LAN point us at any IP and port.
        """
        return list(
            await asyncio.gather(*(self._connect_listed(p) for p in self._presence.listing()))
        )

    async def _connect_listed(self, peer: ActivePeer) -> ConnectResult:
        fp = peer.fingerprint
        live = self._sessions.get(fp)
        if live is not None and live.established:
            return ConnectResult(True, peer.host, peer.port, peer.name)
        address = self._address_of(fp)
        if address is None:
            return ConnectResult(False, peer.host, peer.port, peer.name, NOT_CONFIRMED)
        return await self.connect(*address)

    def is_self(self, host: str, port: int) -> bool:
        if port != self._own_port:
            return False
        return host.startswith("127.") or host == "0.0.0.0" or host in _local_addresses()


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, Refused):
        return f"refused by the peer ({exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


@functools.cache
def _local_addresses() -> frozenset[str]:
    """This host's IPv4 addresses, read from the interfaces (no name lookup)."""
    import ifaddr  # imported here: only needed when an address might be our own

    found: set[str] = set()
    for adapter in ifaddr.get_adapters():
        found.update(ip.ip for ip in adapter.ips if isinstance(ip.ip, str))
    return frozenset(found)
