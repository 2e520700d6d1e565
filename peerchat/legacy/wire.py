"""The plain-text formats of legacy peers: one line (or block) decoded, one message encoded.

What the programs around the original send, one TCP connection per message:

    SENDER_IP:SENDER_PORT TEAM MESSAGE             plain
    <SENDER_IP:SENDER_PORT> <TEAM> <MESSAGE>       angle brackets
    <SENDER_IP:SENDER_PORT> @ NAME                 a block: this line, the message's
    ...message lines...                            lines, then a line "<end>"
    <end>
    <SENDER_IP:SENDER_PORT> DISCONNECT             leaving (no team)

each optionally ended by a newline, several per connection for some of them.
A control word as the whole message (`exit`, `quit`, `DISCONNECT`, `PING`,
`CONNECT_REQUEST`) is news about the sender, not chat. SENDER_PORT is where
the sender listens; SENDER_IP is often wrong, so the receiver uses the
socket's source address with the text's port.

Pure: no sockets, no clock. Anything that does not parse is a `LegacyDropped`
with the reason, never an exception.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final

from peerchat.limits import LEGACY_MAX_MESSAGE_BYTES, LEGACY_MAX_TEAM_CHARS


class Kind(enum.StrEnum):
    PLAIN = "plain"
    ANGLE = "angle"
    BLOCK = "block"
    FERNET = "original"


@dataclass(frozen=True)
class Dialect:
    """How a legacy peer writes its messages, so that an answer is written the same way."""

    kind: Kind
    newline: bool = False  # each message ends with a newline (a line reader needs it)

    @property
    def label(self) -> str:
        """As option 2 shows it."""
        if self.kind is Kind.FERNET:
            return "original (shared key)"
        if self.kind is Kind.BLOCK:
            return "text blocks"
        shape = "text" if self.kind is Kind.PLAIN else "<text>"
        return f"{shape} lines" if self.newline else shape


PLAIN: Final = Dialect(Kind.PLAIN)
ORIGINAL: Final = Dialect(Kind.FERNET)
BLOCK: Final = Dialect(Kind.BLOCK, newline=True)


class ControlWord(enum.StrEnum):
    EXIT = "exit"
    QUIT = "quit"
    DISCONNECT = "DISCONNECT"
    PING = "PING"
    CONNECT_REQUEST = "CONNECT_REQUEST"

    @property
    def leaves(self) -> bool:
        """The sender says it is leaving."""
        return self in (ControlWord.EXIT, ControlWord.QUIT, ControlWord.DISCONNECT)


# People type exit and quit in any case (the original matched `exit` so); the
# other words are written by programs, and "ping" typed by a person stays chat.
_TYPED_WORDS: Final = {"exit": ControlWord.EXIT, "quit": ControlWord.QUIT}
_PROGRAM_WORDS: Final = {
    w.value: w for w in (ControlWord.DISCONNECT, ControlWord.PING, ControlWord.CONNECT_REQUEST)
}


def control_word(text: str) -> ControlWord | None:
    """The control word `text` is as a whole message, if it is one."""
    word = text.strip()
    return _TYPED_WORDS.get(word.lower()) or _PROGRAM_WORDS.get(word)


@dataclass(frozen=True)
class LegacyMessage:
    port: int  # where the sender says it listens
    team: str
    text: str
    dialect: Dialect
    claimed_host: str  # the IP the text names: a claim, kept only for the log


@dataclass(frozen=True)
class LegacyControl:
    word: ControlWord
    port: int | None  # None for a bare word with no address
    team: str | None
    dialect: Dialect | None
    claimed_host: str | None = None


@dataclass(frozen=True)
class LegacyDropped:
    reason: str


LegacyItem = LegacyMessage | LegacyControl | LegacyDropped


@dataclass(frozen=True)
class BlockStart:
    """`<IP:PORT> @ NAME`: the lines up to `<end>` are one message."""

    port: int
    team: str
    claimed_host: str


BLOCK_END: Final = "<end>"
UNKNOWN_TEAM: Final = "?"

_HOST: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,252}")
_BRACKETED_HEAD: Final = re.compile(r"<([^<>\s]{1,300})>(?:\s+(.*))?", re.DOTALL)
_PLAIN_HEAD: Final = re.compile(r"([^<>\s]{1,300})(?:\s+(.*))?", re.DOTALL)


def parse_address(token: str) -> tuple[str, int] | None:
    """`HOST:PORT` with a port from 1 to 65535, else None."""
    host, sep, port_text = token.rpartition(":")
    if not sep or not _HOST.fullmatch(host) or not port_text.isascii():
        return None
    if not port_text.isdigit() or len(port_text) > 5:
        return None
    port = int(port_text)
    return (host, port) if 1 <= port <= 65535 else None


def _team(text: str) -> str:
    team = text.strip()
    if len(team) > LEGACY_MAX_TEAM_CHARS:
        team = team[:LEGACY_MAX_TEAM_CHARS] + "…"
    return team or UNKNOWN_TEAM


def _split_team(rest: str) -> tuple[str, str] | None:
    """(team, message) from what follows the address; None if there is no message."""
    if rest.startswith("<"):
        close = rest.find(">")
        if close < 0:
            return None
        team, after = rest[1:close], rest[close + 1 :]
    else:
        parts = rest.split(None, 1)
        if len(parts) < 2:
            return None
        team, after = parts
    after = after.strip()
    if len(after) >= 2 and after[0] == "<" and after[-1] == ">":
        after = after[1:-1]
    return (team, after) if after.strip() else None


def parse_line(line: str, *, newline: bool) -> LegacyItem | BlockStart:
    """One line of a legacy connection (without its line break).

    `newline` says whether the line was ended by one, which is part of how
    the sender writes.
    """
    word = control_word(line)
    if word is not None:
        return LegacyControl(word, None, None, None)
    text = line.strip()
    head = _BRACKETED_HEAD.fullmatch(text)
    kind = Kind.ANGLE
    if head is None:
        head = _PLAIN_HEAD.fullmatch(text)
        kind = Kind.PLAIN
    address = parse_address(head.group(1)) if head is not None else None
    if head is None or address is None:
        return LegacyDropped("not a legacy message (no SENDER_IP:SENDER_PORT first)")
    host, port = address
    dialect = Dialect(kind, newline)
    rest = (head.group(2) or "").strip()
    if not rest:
        return LegacyDropped("no message after the address")
    word = control_word(rest)
    if word is not None:
        return LegacyControl(word, port, None, dialect, host)
    if rest.startswith("@") and (len(rest) == 1 or rest[1].isspace()):
        name = rest[1:].strip()
        if len(name) >= 2 and name[0] == "<" and name[-1] == ">":
            name = name[1:-1]
        return BlockStart(port, _team(name), host)
    split = _split_team(rest)
    if split is None:
        return LegacyDropped("no message after the team name")
    team, message = split
    word = control_word(message)
    if word is not None:
        return LegacyControl(word, port, _team(team), dialect, host)
    if len(message.encode("utf-8")) > LEGACY_MAX_MESSAGE_BYTES:
        return LegacyDropped(f"message over {LEGACY_MAX_MESSAGE_BYTES} bytes")
    return LegacyMessage(port, _team(team), message, dialect, host)


def check_outgoing(text: str, dialect: Dialect) -> str | None:
    """Why `text` cannot be written in `dialect` (None if it can)."""
    if not text.strip():
        return "the message is empty"
    if "\n" in text or "\r" in text:
        return "a legacy message must be one line"
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > LEGACY_MAX_MESSAGE_BYTES:
        return f"the message is {size} bytes; at most {LEGACY_MAX_MESSAGE_BYTES} are sent"
    if dialect.kind is Kind.BLOCK and text.strip() == BLOCK_END:
        return f"a block message cannot be {BLOCK_END}"
    return None


def encode_text(dialect: Dialect, host: str, port: int, team: str, text: str) -> bytes:
    """One message in a plain dialect, from the sender at host:port (its legacy port).

    For the original's format, this is the plaintext inside its token.
    ValueError if `check_outgoing` refuses the text.
    """
    problem = check_outgoing(text, dialect)
    if problem is not None:
        raise ValueError(problem)
    if dialect.kind is Kind.BLOCK:
        return f"<{host}:{port}> @ {team}\n{text}\n{BLOCK_END}\n".encode("utf-8", "replace")
    if dialect.kind is Kind.ANGLE:
        line = f"<{host}:{port}> <{team}> <{text}>"
    else:
        line = f"{host}:{port} {team} {text}"
    if dialect.newline and dialect.kind is not Kind.FERNET:
        line += "\n"
    return line.encode("utf-8", "replace")
