"""The ports a peer listens on (TCP, the legacy port, discovery): opened in turn, closed together.

Start-up opens them one after another; if one cannot be opened, the ones
already open close again (and the one that failed, which may be half open),
so a failed start leaves no port behind and the user sees the one reason.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Port:
    open: Callable[[], Awaitable[None]]
    close: Callable[[], None]


class OpenPorts:
    def __init__(self) -> None:
        self._opened: list[Port] = []

    async def open(self, port: Port) -> None:
        """Open one more; if it fails, close it and all opened before (newest first), and raise."""
        self._opened.append(port)
        try:
            await port.open()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close every port opened so far, newest first."""
        while self._opened:
            self._opened.pop().close()
