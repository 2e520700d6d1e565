"""Length-prefixed frames on a byte stream.

A frame is a 4-byte big-endian unsigned length followed by that many body
bytes (0 < length <= max_frame_size). The decoder checks each length prefix
as soon as its 4 bytes arrive, so an oversized frame is refused before any of
its body is buffered. The only exception it raises is `ProtocolError`; after
one, the decoder stays failed.
"""

from __future__ import annotations

import struct
from typing import Final, NoReturn

from peerchat.errors import ProtocolError
from peerchat.limits import FRAME_HEADER_SIZE, MAX_FRAME_SIZE

_HEADER: Final = struct.Struct(">I")
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from


def encode_frame(body: bytes) -> bytes:
    """Prefix `body` with its length; ProtocolError if it is empty or too large."""
    size = len(body)
    if not 0 < size <= MAX_FRAME_SIZE:
        raise ProtocolError(f"frame body of {size} bytes is outside 1..{MAX_FRAME_SIZE}")
    return _pack_header(size) + body


class FrameDecoder:
    """Turns a byte stream, in chunks of any size, into whole frame bodies."""

    __slots__ = ("_buf", "_error", "_want", "max_frame_size")

    def __init__(self, max_frame_size: int = MAX_FRAME_SIZE) -> None:
        if not 0 < max_frame_size <= MAX_FRAME_SIZE:
            raise ValueError(f"max_frame_size must be in 1..{MAX_FRAME_SIZE}")
        # Public so a channel can allow only small frames while it authenticates.
        self.max_frame_size = max_frame_size
        self._buf = bytearray()  # an incomplete frame, header included
        self._want = FRAME_HEADER_SIZE  # bytes _buf must hold before it is worth parsing
        self._error: str | None = None  # set once the stream failed or ended

    @property
    def buffered(self) -> int:
        """Bytes held that do not yet form a whole frame."""
        return len(self._buf)

    def feed(self, data: bytes, max_frames: int | None = None) -> list[bytes]:
        """Add `data` and return every frame body it completes, in order.

        With `max_frames`, stop after that many; the rest stays buffered and is
        returned by later calls (`feed(b"")` continues), so a caller can change
        `max_frame_size` between frames (a channel does once it is authenticated).
        """
        if self._error is not None:
            raise ProtocolError(self._error)
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < self._want:
                return []  # still inside one frame: no re-parsing, no copy
            data = bytes(buf)
            buf.clear()
        elif type(data) is not bytes:
            data = bytes(data)
        elif max_frames is None and len(data) > FRAME_HEADER_SIZE:
            # The common read: exactly one whole frame.
            (size,) = _unpack_header(data)
            if size == len(data) - FRAME_HEADER_SIZE and size <= self.max_frame_size:
                self._want = FRAME_HEADER_SIZE
                return [data[FRAME_HEADER_SIZE:]]
        frames: list[bytes] = []
        pos = 0
        end = len(data)
        limit = self.max_frame_size
        want = FRAME_HEADER_SIZE
        while end - pos >= FRAME_HEADER_SIZE:
            if max_frames is not None and len(frames) >= max_frames:
                break
            (size,) = _unpack_header(data, pos)
            if not 0 < size <= limit:
                self._fail(f"frame length {size} is outside 1..{limit}")
            stop = pos + FRAME_HEADER_SIZE + size
            if stop > end:
                want = FRAME_HEADER_SIZE + size
                break
            frames.append(data[pos + FRAME_HEADER_SIZE : stop])
            pos = stop
        if pos < end:
            buf += memoryview(data)[pos:]
        self._want = want
        return frames

    def close(self) -> None:
        """End of stream: ProtocolError if a partial frame is buffered."""
        if self._buf:
            self._fail(f"stream ended inside a frame ({len(self._buf)} bytes buffered)")
        if self._error is None:
            self._error = "frame stream already ended"

    def _fail(self, reason: str) -> NoReturn:
        self._error = reason
        self._buf = bytearray()
        raise ProtocolError(reason)
