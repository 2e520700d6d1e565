"""The original program's shared-key format: Fernet tokens under its `secret.key`.

A message is one TCP connection carrying one token whose plaintext is
`SENDER_IP:SENDER_PORT TEAM MESSAGE`; the receiver reads at most 1024 bytes
(`LEGACY_ORIGINAL_READ`), so a longer token is lost there and is refused here
before it is sent. A beacon is one UDP datagram to the discovery port holding
a token of `NAME:PORT`.

Every copy of the original uses the same key, and it has been published: a
token proves nothing about who made it and hides nothing from anyone who has
the file. It is spoken only because the original speaks nothing else, and
everything that arrives this way is shown as unencrypted and unverified.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from cryptography.fernet import Fernet, InvalidToken

from peerchat.legacy.wire import ORIGINAL, check_outgoing, encode_text
from peerchat.limits import LEGACY_MAX_TEAM_CHARS, LEGACY_ORIGINAL_READ

TOKEN_PREFIX: Final = b"gAAAAA"  # version byte 0x80 and a timestamp below 2**40
_TOKEN_OVERHEAD: Final = 1 + 8 + 16 + 32  # version, timestamp, IV, HMAC
_AES_BLOCK: Final = 16
_KEY_FILE_MAX: Final = 1024  # bytes of a key file worth reading
LONGEST_IPV4: Final = "255.255.255.255"


class LegacyKeyError(ValueError):
    """The bytes given are not a Fernet key."""


class LegacyKey:
    """The original's shared Fernet key. Never printed, never logged."""

    __slots__ = ("_fernet",)

    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError):
            raise LegacyKeyError(
                "not a Fernet key (44 characters of URL-safe base64, as in the original's "
                "secret.key)"
            ) from None

    @classmethod
    def from_file_content(cls, data: bytes) -> LegacyKey:
        if len(data) > _KEY_FILE_MAX:
            raise LegacyKeyError(f"over {_KEY_FILE_MAX} bytes: not a Fernet key file")
        return cls(data.strip())

    def __repr__(self) -> str:
        return "LegacyKey(...)"

    def encrypt(self, plaintext: bytes, now: float) -> bytes:
        return self._fernet.encrypt_at_time(plaintext, int(now))

    def decrypt(self, token: bytes) -> bytes | None:
        """The plaintext, or None if `token` was not made with this key (or is damaged).

        The token's age is not checked: the key is public, so a fresh token
        proves no more than an old one, and the original's clocks are not ours.
        """
        try:
            return self._fernet.decrypt(token)
        except (InvalidToken, ValueError, TypeError):
            return None


def token_size(plaintext_size: int) -> int:
    """The length of a Fernet token for a plaintext of that many bytes."""
    padded = (plaintext_size // _AES_BLOCK + 1) * _AES_BLOCK
    return 4 * math.ceil((_TOKEN_OVERHEAD + padded) / 3)


def longest_original_text(port: int, team: str) -> int:
    """The most UTF-8 bytes of message whose token the original still reads whole."""
    header = len(f"{LONGEST_IPV4}:{port} {team} ".encode())
    size = 0
    while token_size(header + size + 1) <= LEGACY_ORIGINAL_READ:
        size += 1
    return size


def original_problem(port: int, team: str, text: str) -> str | None:
    """Why `text` cannot go to the original (its token would be cut), whatever our IP."""
    problem = check_outgoing(text, ORIGINAL)
    if problem is not None:
        return problem
    plaintext = encode_text(ORIGINAL, LONGEST_IPV4, port, team, text)
    size = token_size(len(plaintext))
    if size > LEGACY_ORIGINAL_READ:
        most = longest_original_text(port, team)
        return (
            f"as the original's token it would be {size} bytes, and the original reads only "
            f"{LEGACY_ORIGINAL_READ}: at most {most} bytes of text fit"
        )
    return None


def encode_message(  # noqa: PLR0917 (the fields of the format, in its order)
    key: LegacyKey, host: str, port: int, team: str, text: str, now: float
) -> bytes:
    """One message in the original's format; ValueError if the original could not read it."""
    plaintext = encode_text(ORIGINAL, host, port, team, text)
    if token_size(len(plaintext)) > LEGACY_ORIGINAL_READ:
        raise ValueError(original_problem(port, team, text) or "message too long")
    return key.encrypt(plaintext, now)


def looks_like_token(data: bytes) -> bool:
    return data.startswith(TOKEN_PREFIX)


# --------------------------------------------------------------------------- beacons


@dataclass(frozen=True)
class OriginalBeacon:
    name: str
    port: int


def encode_beacon(key: LegacyKey, name: str, port: int, now: float) -> bytes:
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    if not name or ":" in name or len(name) > LEGACY_MAX_TEAM_CHARS:
        raise ValueError(f"name {name!r} cannot be announced to the original")
    token = key.encrypt(f"{name}:{port}".encode(), now)
    if len(token) > LEGACY_ORIGINAL_READ:
        raise ValueError("beacon too long for the original")
    return token


def decode_beacon(key: LegacyKey, data: bytes) -> OriginalBeacon | None:
    """The original's beacon in a datagram, or None if it is not one (silently: most are not)."""
    if len(data) > LEGACY_ORIGINAL_READ or not looks_like_token(data):
        return None
    plaintext = key.decrypt(data.strip())
    if plaintext is None:
        return None
    name, sep, port_text = plaintext.decode("utf-8", "replace").strip().rpartition(":")
    name = name.strip()
    port_text = port_text.strip()
    if not (sep and name and port_text.isascii() and port_text.isdigit() and len(port_text) <= 5):
        return None
    port = int(port_text)
    if not 1 <= port <= 65535:
        return None
    if len(name) > LEGACY_MAX_TEAM_CHARS:
        name = name[:LEGACY_MAX_TEAM_CHARS] + "…"
    return OriginalBeacon(name, port)
