"""Sending one legacy message: one TCP connection, written, half-closed, closed.

The text names the sender's address, and the only honest one is the address
of the socket actually used, known once connected; so the caller passes a
`build(local_ip)` that makes the bytes then. After writing, the connection is
half-closed (a reader that reads to the end of the stream has its message)
and the peer gets `linger` seconds to close its side; whatever it sends back
is discarded unread. A legacy peer acknowledges nothing: "sent" means written
and closed without an error, no more.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from peerchat.limits import LEGACY_CONNECT_TIMEOUT, LEGACY_SEND_LINGER

_DISCARD = 4096


class LegacySendError(Exception):
    """The message could not be written; the text says why, for the user."""


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the peer"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


async def send_once(
    host: str,
    port: int,
    build: Callable[[str], bytes],
    *,
    connect_timeout: float = LEGACY_CONNECT_TIMEOUT,
    linger: float = LEGACY_SEND_LINGER,
) -> str:
    """Connect, write build(local_ip), close; the local IP used. LegacySendError if not."""
    try:
        async with asyncio.timeout(connect_timeout):
            reader, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError) as exc:
        raise LegacySendError(describe_error(exc)) from None
    transport = writer.transport
    try:
        local_ip = str(writer.get_extra_info("sockname")[0])
        writer.write(build(local_ip))
        async with asyncio.timeout(connect_timeout):
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(linger):
                while await reader.read(_DISCARD):
                    pass
        if transport.get_write_buffer_size():
            raise LegacySendError("the peer did not read the whole message")
        writer.close()
        async with asyncio.timeout(linger):
            await writer.wait_closed()
    except (OSError, TimeoutError) as exc:
        raise LegacySendError(describe_error(exc)) from None
    finally:
        transport.abort()  # a no-op once closed; never left waiting on a peer that stopped
    return local_ip
