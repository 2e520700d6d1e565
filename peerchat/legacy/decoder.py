"""One legacy connection's bytes in, its messages out (pure, bounded).

A connection may carry one message without a line break (ended by the
connection's end), several newline-terminated ones, blocks up to `<end>`, or
one of the original's tokens (with `--legacy-key`). The decoder is fed bytes
as they arrive and the end of the stream, and answers with `LegacyItem`s.
Whatever it cannot read becomes a `LegacyDropped` saying why; too many bytes
fail the whole connection (`failed`), which the owner then closes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from peerchat.legacy.original import LegacyKey, looks_like_token
from peerchat.legacy.wire import (
    BLOCK,
    BLOCK_END,
    ORIGINAL,
    BlockStart,
    LegacyControl,
    LegacyDropped,
    LegacyItem,
    LegacyMessage,
    parse_line,
)
from peerchat.limits import (
    LEGACY_MAX_CONNECTION_BYTES,
    LEGACY_MAX_LINE_BYTES,
    LEGACY_MAX_MESSAGE_BYTES,
)

NO_KEY = "encrypted with the original's shared key, and no --legacy-key was given"
WRONG_KEY = "not made with the legacy key (or damaged)"


@dataclass
class _Block:
    start: BlockStart
    lines: list[str] = field(default_factory=list)
    size: int = 0


class ConnectionDecoder:
    """Decodes what one legacy connection sends; time and sockets are the owner's."""

    def __init__(
        self,
        key: LegacyKey | None = None,
        *,
        max_line: int = LEGACY_MAX_LINE_BYTES,
        max_message: int = LEGACY_MAX_MESSAGE_BYTES,
        max_total: int = LEGACY_MAX_CONNECTION_BYTES,
    ) -> None:
        self._key = key
        self._max_line = max_line
        self._max_message = max_message
        self._max_total = max_total
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer known to hold no line break
        self._block: _Block | None = None
        self.bytes_received = 0
        self.failed: str | None = None
        self.ended = False

    def receive(self, data: bytes) -> list[LegacyItem]:
        if self.failed is not None or self.ended or not data:
            return []
        self.bytes_received += len(data)
        if self.bytes_received > self._max_total:
            return self._fail(f"connection sent over {self._max_total} bytes")
        buffer = self._buffer
        buffer += data
        items: list[LegacyItem] = []
        start = 0
        while True:
            end = buffer.find(b"\n", max(start, self._scanned))
            if end < 0:
                break
            items.extend(self._line(bytes(buffer[start:end]), newline=True))
            if self._has_failed():
                return items
            start = end + 1
        del buffer[:start]  # once per read, so many short lines cost linear time
        self._scanned = len(buffer)
        if len(buffer) > self._max_line:
            items.extend(self._fail(f"line over {self._max_line} bytes"))
        return items

    def receive_eof(self) -> list[LegacyItem]:
        """The stream ended (or the owner stops reading): what is left, as the last line."""
        if self.failed is not None or self.ended:
            return []
        self.ended = True
        items: list[LegacyItem] = []
        if self._buffer:
            rest, self._buffer = bytes(self._buffer), bytearray()
            items.extend(self._line(rest, newline=False))
        if self._block is not None and self.failed is None:
            self._block = None
            items.append(LegacyDropped(f"a block that ended without {BLOCK_END}"))
        return items

    # -- internals

    def _has_failed(self) -> bool:
        return self.failed is not None

    def _fail(self, reason: str) -> list[LegacyItem]:
        self.failed = reason
        self._buffer = bytearray()
        self._block = None
        return [LegacyDropped(reason)]

    def _line(self, raw: bytes, *, newline: bool) -> list[LegacyItem]:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if len(raw) > self._max_line:
            return self._fail(f"line over {self._max_line} bytes")
        text = raw.decode("utf-8", "replace")
        if self._block is not None:
            return self._block_line(self._block, text, len(raw))
        if not text.strip():
            return []
        if looks_like_token(raw.strip()):
            return [self._token(raw.strip())]
        parsed = parse_line(text, newline=newline)
        if isinstance(parsed, BlockStart):
            self._block = _Block(parsed)
            return []
        return [parsed]

    def _block_line(self, block: _Block, text: str, size: int) -> list[LegacyItem]:
        if text.strip().lower() != BLOCK_END:
            block.size += size + 1
            if block.size > self._max_message + 1:
                return self._fail(f"block over {self._max_message} bytes")
            block.lines.append(text)
            return []
        self._block = None
        message = "\n".join(block.lines)
        if not message.strip():
            return [LegacyDropped("an empty block")]
        start = block.start
        return [LegacyMessage(start.port, start.team, message, BLOCK, start.claimed_host)]

    def _token(self, token: bytes) -> LegacyItem:
        if self._key is None:
            return LegacyDropped(NO_KEY)
        plaintext = self._key.decrypt(token)
        if plaintext is None:
            return LegacyDropped(WRONG_KEY)
        parsed = parse_line(plaintext.decode("utf-8", "replace"), newline=False)
        if isinstance(parsed, LegacyMessage):
            return LegacyMessage(
                parsed.port, parsed.team, parsed.text, ORIGINAL, parsed.claimed_host
            )
        if isinstance(parsed, LegacyControl):
            return LegacyControl(
                parsed.word, parsed.port, parsed.team, ORIGINAL, parsed.claimed_host
            )
        if isinstance(parsed, LegacyDropped):
            return LegacyDropped(f"inside the original's token: {parsed.reason}")
        return LegacyDropped("inside the original's token: a block header")
