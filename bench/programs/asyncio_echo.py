"""An asyncio TCP echo server on 127.0.0.1: prints its port, echoes until stdin has input or closes.

The far side of the "floor of the design" figure: what a peer's event loop
does for a message when it does no crypto, storage or bookkeeping.
"""

from __future__ import annotations

import asyncio
import sys


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def main() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), stop.set)
    await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
