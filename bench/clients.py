"""Sessions opened from the benchmark process to a real peer, with the project's own channel.

- `ChannelClient` / `open_client`: asyncio sessions (handshake, then a Ping
  answered), many at once, for the handshake and memory figures;
- `BlockingClient`: one session on a plain socket, one chat message at a time
  timed to its acknowledgement, for the flood figures;
- `session_identities`: distinct 2048-bit identities, generated once and
  cached under bench/.cache/.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from bench.peers import CACHE_DIR, STEP_TIMEOUT, Budget
from crypto_utils import Identity
from peerchat.errors import ProtocolError
from peerchat.protocol.channel import (
    Credentials,
    HandshakeComplete,
    MessageReceived,
    Role,
    SecureChannel,
)
from peerchat.protocol.messages import Ack, Bye, Chat, Ping, Pong, new_msg_id

SESSION_KEY_BITS = 2048
FIRST_PING = 1


# --------------------------------------------------------------------------- identities


def _new_key_der(_: int) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=SESSION_KEY_BITS)
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def session_identities(count: int, cache_dir: Path = CACHE_DIR) -> list[Identity]:
    """`count` distinct 2048-bit identities, generated once (in parallel) and cached."""
    path = cache_dir / f"node-session-identities-{SESSION_KEY_BITS}.txt"
    ders = [base64.b64decode(line) for line in path.read_text().split()] if path.exists() else []
    if len(ders) < count:
        missing = count - len(ders)
        print(f"bench: generating {missing} RSA-{SESSION_KEY_BITS} keys (cached)", file=sys.stderr)
        with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            ders += list(pool.map(_new_key_der, range(missing), chunksize=8))
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(base64.b64encode(der).decode() + "\n" for der in ders))
        os.replace(tmp, path)
    identities = []
    for der in ders[:count]:
        # Our own freshly made keys: the slow prime check adds nothing here.
        key = serialization.load_der_private_key(
            der, password=None, unsafe_skip_rsa_key_validation=True
        )
        assert isinstance(key, RSAPrivateKey)
        identities.append(Identity.from_private_key(key))
    return identities


# --------------------------------------------------------------------------- asyncio sessions


class ChannelClient(asyncio.Protocol):
    """An initiator session from this process: handshake, then Ping; answers the peer's pings."""

    def __init__(self, credentials: Credentials, loop: asyncio.AbstractEventLoop) -> None:
        self.channel = SecureChannel(Role.INITIATOR, credentials)
        self.transport: asyncio.Transport | None = None
        self.answered: asyncio.Future[None] = loop.create_future()  # Pong to our first Ping
        self.lost: asyncio.Future[None] = loop.create_future()
        self.pinged = 0  # pings from the peer answered (it pings a session that is quiet)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.channel.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            events = self.channel.receive_data(data)
        except ProtocolError as exc:
            self._broken(f"protocol error: {exc}")
            return
        for event in events:
            if isinstance(event, HandshakeComplete):
                self.channel.send_message(Ping(FIRST_PING))  # goes out with message 3
            elif isinstance(event, MessageReceived):
                message = event.message
                if isinstance(message, Pong) and message.nonce == FIRST_PING:
                    if not self.answered.done():
                        self.answered.set_result(None)
                elif isinstance(message, Ping):
                    self.pinged += 1
                    self.channel.send_message(Pong(message.nonce))
                elif isinstance(message, Bye):
                    self._broken(f"peer said goodbye: {message.reason}")
                    return
        out = self.channel.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._settle_answered(f"connection lost: {exc}" if exc else "connection closed")
        if not self.lost.done():
            self.lost.set_result(None)

    def _broken(self, why: str) -> None:
        self._settle_answered(why)
        if self.transport is not None:
            self.transport.abort()

    def _settle_answered(self, why: str) -> None:
        if not self.answered.done():
            self.answered.set_exception(ConnectionError(why))
            self.answered.exception()  # retrieved: nobody may be waiting any more

    @property
    def alive(self) -> bool:
        return not self.lost.done()

    async def close(self, timeout: float = STEP_TIMEOUT) -> None:
        """Half-close and wait until the peer has closed too (so it has dropped the session)."""
        transport = self.transport
        if transport is None or self.lost.done():
            return
        if not transport.is_closing():
            transport.write_eof()
        try:
            await asyncio.wait_for(asyncio.shield(self.lost), timeout)
        except TimeoutError:
            transport.abort()


async def open_client(
    credentials: Credentials,
    address: tuple[str, int],
    *,
    source: str | None = None,
    timeout: float = STEP_TIMEOUT,
) -> ChannelClient:
    """An authenticated session to `address` whose first Ping has been answered."""
    loop = asyncio.get_running_loop()
    local = (source, 0) if source is not None else None
    _, client = await asyncio.wait_for(
        loop.create_connection(
            lambda: ChannelClient(credentials, loop), *address, local_addr=local
        ),
        timeout,
    )
    try:
        await asyncio.wait_for(asyncio.shield(client.answered), timeout)
    except BaseException:
        if client.transport is not None:
            client.transport.abort()
        raise
    return client


async def handshake_times(
    credentials: Credentials, address: tuple[str, int], *, count: int, max_seconds: float
) -> list[float]:
    """Seconds from connect() to the peer's answer to the first frame, one session at a time."""
    samples: list[float] = []
    budget = Budget(max_seconds)
    while len(samples) < count and (not samples or not budget.exhausted()):
        start = time.perf_counter_ns()
        client = await open_client(credentials, address)
        samples.append((time.perf_counter_ns() - start) / 1e9)
        await client.close()  # one session per identity: gone before the next
    return samples


# --------------------------------------------------------------------------- a blocking session


class BlockingClient:
    """A legitimate peer: one session, one message at a time, timed to its acknowledgement."""

    def __init__(
        self, credentials: Credentials, address: tuple[str, int], text: str = "x" * 64
    ) -> None:
        self.text = text
        self.sock = socket.create_connection(address, timeout=STEP_TIMEOUT)
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.channel = SecureChannel(Role.INITIATOR, credentials)
            self._flush()
            while True:
                events = self.channel.receive_data(self._recv())
                self._flush()
                if any(isinstance(e, HandshakeComplete) for e in events):
                    break
        except BaseException:
            self.sock.close()
            raise

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the peer closed the session")
        return data

    def _flush(self) -> None:
        data = self.channel.data_to_send()
        if data:
            self.sock.sendall(data)

    def round_trip(self) -> float:
        """Seconds from sending one chat message to its acknowledgement."""
        chat = Chat(new_msg_id(time.time()), time.time(), self.text)
        start = time.perf_counter_ns()
        self.channel.send_message(chat)
        self._flush()
        while True:
            for event in self.channel.receive_data(self._recv()):
                if not isinstance(event, MessageReceived):
                    continue
                message = event.message
                if isinstance(message, Ack) and chat.msg_id in message.msg_ids:
                    return (time.perf_counter_ns() - start) / 1e9
                if isinstance(message, Ping):
                    self.channel.send_message(Pong(message.nonce))
                    self._flush()

    def round_trips(self, seconds: float, count: int) -> list[float]:
        """Round trips one after the other for `seconds`, at most `count`, at least one."""
        deadline = time.monotonic() + seconds
        samples = [self.round_trip()]
        while len(samples) < count and time.monotonic() < deadline:
            samples.append(self.round_trip())
        return samples

    def close(self) -> None:
        self.sock.close()
