"""A bare asyncio server on 127.0.0.1 that accepts and holds TCP connections.

Prints its port, writes one byte to each connection (so the client knows it
was accepted) and holds it until stdin has input or closes: the baseline of
the memory held per session.
"""

from __future__ import annotations

import asyncio
import sys


class Hold(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"+")

    def data_received(self, data: bytes) -> None:
        pass


async def main() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Hold, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), stop.set)
    await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
