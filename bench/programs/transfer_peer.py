"""One end of a file transfer for the benchmark, on 127.0.0.1 only.

The transfer role (peerchat.net.transfers) over a real SecureChannel and an
asyncio TCP connection: the few lines below are the wiring a node needs
(session up and down, messages in, the write buffer draining, a tick). Each
end is its own process, as real peers are.

    transfer_peer.py receive WORKDIR      prints its port; accepts the first offer; answers
                                          pings; prints "saved OUTCOME CPU_SECONDS" when the
                                          transfer ends (CPU from the offer to the end)
    transfer_peer.py send WORKDIR PORT FILE [PING_EVERY]
                                          offers FILE; pings every PING_EVERY seconds while it
                                          goes (0: never); prints one JSON line of results
    transfer_peer.py sink WORKDIR         prints its port; writes one raw TCP connection to a
                                          file; prints "received BYTES" at its end
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from pathlib import Path

from bench.clients import session_identities
from crypto_utils import Sealer
from peerchat.events import FileOffered, FileTransferEnded, UiEvent
from peerchat.net.file_store import inspect_source
from peerchat.net.transfers import LoopOffload, Transfers, TransferSettings
from peerchat.protocol.channel import (
    Credentials,
    HandshakeComplete,
    MessageReceived,
    Role,
    SecureChannel,
)
from peerchat.protocol.messages import Ping, Pong
from peerchat.protocol.transfer import TRANSFER_MESSAGE_TYPES
from storage import HistoryStore

HOST = "127.0.0.1"
TICK = 0.25


class Peer:
    """A peer with one session at most: its role, its channel, its transport."""

    def __init__(self, workdir: Path, label: str, index: int) -> None:
        self.loop = asyncio.get_running_loop()
        identity = session_identities(2)[index]
        self.credentials = Credentials.create(identity, label, 5000 + index)
        self.store = HistoryStore.open(workdir / f"{label}.db", Sealer.generate())
        self.transfers = Transfers(
            self.store,
            TransferSettings(downloads=workdir / f"{label}-downloads"),
            self.send,
            self.buffered,
            self.on_event,
            LoopOffload(self.loop),
            time.time,
        )
        self.link: Link | None = None
        self.peer_fp = ""
        self.up: asyncio.Future[None] = self.loop.create_future()
        self.ended: asyncio.Future[FileTransferEnded] = self.loop.create_future()
        self.pongs: dict[int, float] = {}
        self.cpu_at_offer = 0.0
        self.round_trips: list[float] = []
        self.loop.call_later(TICK, self.tick)

    def send(self, fp: str, messages: object) -> bool:
        link = self.link
        if link is None:
            return False
        link.channel.send_messages(messages)  # type: ignore[arg-type]
        link.flush()
        return True

    def buffered(self, fp: str) -> int:
        link = self.link
        return 0 if link is None else link.transport.get_write_buffer_size()

    def on_event(self, event: UiEvent) -> None:
        if isinstance(event, FileOffered):
            self.cpu_at_offer = time.process_time()
            (offer,) = self.transfers.offers()
            self.loop.call_soon(self.transfers.answer, offer.key, True)
        elif isinstance(event, FileTransferEnded) and not self.ended.done():
            self.ended.set_result(event)

    def tick(self) -> None:
        self.transfers.tick()
        self.loop.call_later(TICK, self.tick)

    def ping(self, nonce: int) -> None:
        if self.link is not None:
            self.pongs[nonce] = time.perf_counter()
            self.link.channel.send_message(Ping(nonce))
            self.link.flush()


class Link(asyncio.Protocol):
    def __init__(self, peer: Peer, role: Role) -> None:
        self.peer = peer
        self.channel = SecureChannel(role, peer.credentials)
        self.transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.flush()

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        for event in self.channel.receive_data(data):
            if isinstance(event, HandshakeComplete):
                peer.link, peer.peer_fp = self, event.peer.fingerprint
                peer.transfers.session_up(peer.peer_fp, event.peer.name)
                if not peer.up.done():
                    peer.up.set_result(None)
            elif isinstance(event, MessageReceived):
                message = event.message
                if isinstance(message, TRANSFER_MESSAGE_TYPES):
                    peer.transfers.handle(peer.peer_fp, message)
                elif isinstance(message, Ping):
                    self.channel.send_message(Pong(message.nonce))
                elif isinstance(message, Pong) and message.nonce in peer.pongs:
                    peer.round_trips.append(time.perf_counter() - peer.pongs.pop(message.nonce))
        self.flush()

    def resume_writing(self) -> None:
        self.peer.transfers.pump(self.peer.peer_fp)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer.link is self:
            self.peer.link = None
            self.peer.transfers.session_down(self.peer.peer_fp)

    def flush(self) -> None:
        data = self.channel.data_to_send()
        if data:
            self.transport.write(data)


async def receive(workdir: Path) -> None:
    peer = Peer(workdir, "receiver", 1)
    loop = peer.loop
    server = await loop.create_server(lambda: Link(peer, Role.RESPONDER), HOST, 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    ended = await peer.ended
    cpu = time.process_time() - peer.cpu_at_offer
    print(f"saved {ended.outcome.value} {cpu:.6f}", flush=True)
    await asyncio.sleep(0.2)  # let the completion reach the sender
    peer.store.close()


async def send(workdir: Path, port: int, path: Path, ping_every: float) -> None:
    peer = Peer(workdir, "sender", 0)
    source = inspect_source(path)
    await peer.loop.create_connection(lambda: Link(peer, Role.INITIATOR), HOST, port)
    await peer.up
    idle = await _pings(peer, 50, ping_every) if ping_every else []
    peer.round_trips.clear()
    started = time.perf_counter()
    cpu_started = time.process_time()
    peer.transfers.offer(peer.peer_fp, "receiver", source)
    pinging = asyncio.ensure_future(_pings(peer, 10**9, ping_every)) if ping_every else None
    ended = await peer.ended
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    busy = list(peer.round_trips)
    if pinging is not None:
        pinging.cancel()
    result = {
        "outcome": ended.outcome.value,
        "seconds": elapsed,
        "cpu": cpu,
        "bytes": source.size,
        "idle_pings": idle,
        "busy_pings": busy,
    }
    print(json.dumps(result), flush=True)
    peer.store.close()


async def _pings(peer: Peer, count: int, every: float) -> list[float]:
    start = len(peer.round_trips)
    for nonce in range(1, count + 1):
        peer.ping(nonce)
        await asyncio.sleep(every)
    return peer.round_trips[start:]


def sink(workdir: Path) -> None:
    with socket.create_server((HOST, 0)) as server:
        print(server.getsockname()[1], flush=True)
        connection, _ = server.accept()
        total = 0
        buffer = bytearray(1024 * 1024)
        view = memoryview(buffer)
        with connection, (workdir / "raw-copy").open("wb") as out:
            while received := connection.recv_into(buffer):
                out.write(view[:received])
                total += received
    print(f"received {total}", flush=True)


def main(argv: list[str]) -> None:
    mode, workdir = argv[0], Path(argv[1])
    if mode == "receive":
        asyncio.run(receive(workdir))
    elif mode == "send":
        ping_every = float(argv[4]) if len(argv) > 4 else 0.0
        asyncio.run(send(workdir, int(argv[2]), Path(argv[3]), ping_every))
    elif mode == "sink":
        sink(workdir)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
