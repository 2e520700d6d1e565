"""File transfer messages: their kinds, fields, bounds and binary form (pure).

They travel like every other message, one per transport frame, and take the
kinds 0x28-0x2F. All integers are big-endian; every transfer message starts
with the kind byte and the 16-byte transfer id the sender drew at random:

    FileOffer     0x28  id | size u64 | sha256 (32) | name (rest, UTF-8)
    FileAccept    0x29  id | offset u64 | sha256 of the first `offset` bytes (32)
    FileDecline   0x2A  id | reason (rest, UTF-8)
    FileChunk     0x2B  id | offset u64 | data (rest)
    FileAck       0x2C  id | received u64
    FileComplete  0x2D  id
    FileAbort     0x2E  id | code u8 | detail (rest, UTF-8)
    FileRestart   0x2F  id

Every field is bounded on decode (sizes and offsets by MAX_TRANSFER_SIZE, the
name by MAX_OFFERED_NAME_BYTES, texts by MAX_REASON_CHARS, chunk data by what a
frame can hold), and decoding is canonical: what decodes re-encodes to the same
bytes. `decode_transfer` raises only ProtocolError; `encode_transfer` raises
ValueError for a message that could never be decoded.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
import struct
from dataclasses import dataclass
from typing import Final

from peerchat.errors import ProtocolError
from peerchat.limits import (
    MAX_FRAME_SIZE,
    MAX_OFFERED_NAME_BYTES,
    MAX_REASON_CHARS,
    MAX_TRANSFER_SIZE,
)

KIND_FILE_OFFER: Final = 0x28
KIND_FILE_ACCEPT: Final = 0x29
KIND_FILE_DECLINE: Final = 0x2A
KIND_FILE_CHUNK: Final = 0x2B
KIND_FILE_ACK: Final = 0x2C
KIND_FILE_COMPLETE: Final = 0x2D
KIND_FILE_ABORT: Final = 0x2E
KIND_FILE_RESTART: Final = 0x2F
TRANSFER_KINDS: Final = frozenset(range(KIND_FILE_OFFER, KIND_FILE_RESTART + 1))

TRANSFER_ID_BYTES: Final = 16
DIGEST_BYTES: Final = 32  # SHA-256
EMPTY_DIGEST: Final = hashlib.sha256(b"").digest()  # the digest of an empty prefix
_AEAD_TAG: Final = 16

_ID_HEAD: Final = struct.Struct(">B16s")
_ID_U64: Final = struct.Struct(">B16sQ")
_OFFER_HEAD: Final = struct.Struct(">B16sQ32s")
_ACCEPT: Final = struct.Struct(">B16sQ32s")
_ABORT_HEAD: Final = struct.Struct(">B16sB")
_CHUNK_HEAD_SIZE: Final = _ID_U64.size
# Chunk data: whatever one sealed frame can carry after the chunk's own header.
MAX_CHUNK_DATA: Final = MAX_FRAME_SIZE - _AEAD_TAG - _CHUNK_HEAD_SIZE


class AbortCode(enum.IntEnum):
    """Why a transfer ends early. Only STALLED leaves it resumable."""

    STALLED = 1  # no data for too long: the partial file is kept for a later resume
    CHUNK_OUT_OF_BOUNDS = 2  # a chunk past the announced size, or not where expected
    DIGEST_MISMATCH = 3  # the whole file does not match the announced SHA-256
    SOURCE_UNREADABLE = 4  # the sender cannot read its file (gone, changed, unreadable)
    CANNOT_STORE = 5  # the receiver cannot write the file (disk full, I/O error)
    UNKNOWN_TRANSFER = 6  # no such transfer here
    PROTOCOL_VIOLATION = 7  # an answer that the transfer's state does not allow
    TOO_MANY_RESTARTS = 8  # the partial file kept differing from the sender's
    EXPIRED = 9  # it waited longer than the queue allows


@dataclass(frozen=True, slots=True)
class FileOffer:
    transfer_id: str  # 32 lowercase hex chars (16 random bytes)
    size: int
    sha256: bytes  # of the whole file
    name: str  # as the sender calls it: a hint, made safe before any use


@dataclass(frozen=True, slots=True)
class FileAccept:
    transfer_id: str
    offset: int  # bytes the receiver already has (0 for a fresh start)
    prefix_sha256: bytes  # SHA-256 of those bytes


@dataclass(frozen=True, slots=True)
class FileDecline:
    transfer_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class FileChunk:
    transfer_id: str
    offset: int
    # Decoded chunks are a read-only view into the decrypted frame: copying 124 KiB
    # per chunk cost a fifth of the receiver's time. It compares equal to bytes.
    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class FileAck:
    transfer_id: str
    received: int  # bytes stored by the receiver so far


@dataclass(frozen=True, slots=True)
class FileComplete:
    transfer_id: str


@dataclass(frozen=True, slots=True)
class FileAbort:
    transfer_id: str
    code: AbortCode
    detail: str = ""


@dataclass(frozen=True, slots=True)
class FileRestart:
    transfer_id: str


TransferMessage = (
    FileOffer
    | FileAccept
    | FileDecline
    | FileChunk
    | FileAck
    | FileComplete
    | FileAbort
    | FileRestart
)
TRANSFER_MESSAGE_TYPES: Final = (
    FileOffer,
    FileAccept,
    FileDecline,
    FileChunk,
    FileAck,
    FileComplete,
    FileAbort,
    FileRestart,
)


def new_transfer_id() -> str:
    return secrets.token_hex(TRANSFER_ID_BYTES)


def _id_bytes(transfer_id: str) -> bytes:
    try:
        raw = bytes.fromhex(transfer_id)
    except ValueError:
        raw = b""
    if (
        len(raw) != TRANSFER_ID_BYTES
        or len(transfer_id) != 2 * TRANSFER_ID_BYTES
        or transfer_id != transfer_id.lower()
    ):
        raise ValueError(f"transfer_id must be 32 lowercase hex characters, got {transfer_id!r}")
    return raw


def _check_amount(value: int, what: str) -> None:
    if not 0 <= value <= MAX_TRANSFER_SIZE:
        raise ValueError(f"{what} must be within 0..{MAX_TRANSFER_SIZE}")


def _check_digest(digest: bytes) -> None:
    if len(digest) != DIGEST_BYTES:
        raise ValueError(f"a digest is {DIGEST_BYTES} bytes")


def _reason_bytes(text: str, what: str) -> bytes:
    if len(text) > MAX_REASON_CHARS:
        raise ValueError(f"{what} over {MAX_REASON_CHARS} characters")
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} is not encodable as UTF-8") from exc


def encode_transfer(message: TransferMessage) -> bytes:
    """The wire form of a transfer message; ValueError if it breaks a limit."""
    if type(message) is FileChunk:  # the common case first
        if not 0 < len(message.data) <= MAX_CHUNK_DATA:
            raise ValueError(f"chunk data must be 1..{MAX_CHUNK_DATA} bytes")
        _check_amount(message.offset + len(message.data), "chunk end")
        head = _ID_U64.pack(KIND_FILE_CHUNK, _id_bytes(message.transfer_id), message.offset)
        return head + message.data
    if type(message) is FileAck:
        _check_amount(message.received, "received")
        return _ID_U64.pack(KIND_FILE_ACK, _id_bytes(message.transfer_id), message.received)
    if type(message) is FileOffer:
        _check_amount(message.size, "size")
        _check_digest(message.sha256)
        try:
            name = message.name.encode()
        except UnicodeEncodeError as exc:
            raise ValueError("file name is not encodable as UTF-8") from exc
        if not 0 < len(name) <= MAX_OFFERED_NAME_BYTES:
            raise ValueError(f"file name must be 1..{MAX_OFFERED_NAME_BYTES} UTF-8 bytes")
        tid = _id_bytes(message.transfer_id)
        return _OFFER_HEAD.pack(KIND_FILE_OFFER, tid, message.size, message.sha256) + name
    if type(message) is FileAccept:
        _check_amount(message.offset, "offset")
        _check_digest(message.prefix_sha256)
        tid = _id_bytes(message.transfer_id)
        return _ACCEPT.pack(KIND_FILE_ACCEPT, tid, message.offset, message.prefix_sha256)
    if type(message) is FileDecline:
        reason = _reason_bytes(message.reason, "decline reason")
        return _ID_HEAD.pack(KIND_FILE_DECLINE, _id_bytes(message.transfer_id)) + reason
    if type(message) is FileAbort:
        detail = _reason_bytes(message.detail, "abort detail")
        code = AbortCode(message.code)
        return _ABORT_HEAD.pack(KIND_FILE_ABORT, _id_bytes(message.transfer_id), code) + detail
    if type(message) is FileComplete:
        return _ID_HEAD.pack(KIND_FILE_COMPLETE, _id_bytes(message.transfer_id))
    if type(message) is FileRestart:
        return _ID_HEAD.pack(KIND_FILE_RESTART, _id_bytes(message.transfer_id))
    raise ValueError(f"not a transfer message: {type(message).__name__}")


def _amount(value: int, what: str) -> int:
    if value > MAX_TRANSFER_SIZE:
        raise ProtocolError(f"{what} {value} is over {MAX_TRANSFER_SIZE}")
    return value


def _reason_text(data: bytes, start: int, what: str) -> str:
    if len(data) - start > MAX_REASON_CHARS * 4:  # bound the work before decoding
        raise ProtocolError(f"{what} too long")
    try:
        text = data[start:].decode()
    except UnicodeDecodeError:
        raise ProtocolError(f"{what} is not valid UTF-8") from None
    if len(text) > MAX_REASON_CHARS:
        raise ProtocolError(f"{what} over {MAX_REASON_CHARS} characters")
    return text


def _exact(data: bytes, size: int, what: str) -> None:
    if len(data) != size:
        raise ProtocolError(f"{what} has the wrong length")


def decode_transfer(data: bytes) -> TransferMessage:
    """Parse one transfer message strictly; ProtocolError (only) if it is malformed."""
    kind = data[0] if data else -1
    size = len(data)
    if kind == KIND_FILE_CHUNK:
        if size <= _CHUNK_HEAD_SIZE:
            raise ProtocolError("file chunk without data")
        if size - _CHUNK_HEAD_SIZE > MAX_CHUNK_DATA:
            raise ProtocolError(f"file chunk over {MAX_CHUNK_DATA} bytes")
        _, tid, offset = _ID_U64.unpack_from(data)
        _amount(offset + size - _CHUNK_HEAD_SIZE, "chunk end")
        return FileChunk(tid.hex(), offset, memoryview(data)[_CHUNK_HEAD_SIZE:])
    if kind == KIND_FILE_ACK:
        _exact(data, _ID_U64.size, "file ack")
        _, tid, received = _ID_U64.unpack(data)
        return FileAck(tid.hex(), _amount(received, "acknowledged offset"))
    if kind == KIND_FILE_OFFER:
        if size <= _OFFER_HEAD.size:
            raise ProtocolError("file offer without a name")
        if size - _OFFER_HEAD.size > MAX_OFFERED_NAME_BYTES:
            raise ProtocolError(f"offered file name over {MAX_OFFERED_NAME_BYTES} bytes")
        _, tid, file_size, digest = _OFFER_HEAD.unpack_from(data)
        try:
            name = data[_OFFER_HEAD.size :].decode()
        except UnicodeDecodeError:
            raise ProtocolError("offered file name is not valid UTF-8") from None
        return FileOffer(tid.hex(), _amount(file_size, "file size"), digest, name)
    if kind == KIND_FILE_ACCEPT:
        _exact(data, _ACCEPT.size, "file accept")
        _, tid, offset, digest = _ACCEPT.unpack(data)
        return FileAccept(tid.hex(), _amount(offset, "resume offset"), digest)
    if kind == KIND_FILE_DECLINE:
        if size < _ID_HEAD.size:
            raise ProtocolError("file decline too short")
        _, tid = _ID_HEAD.unpack_from(data)
        return FileDecline(tid.hex(), _reason_text(data, _ID_HEAD.size, "decline reason"))
    if kind == KIND_FILE_ABORT:
        if size < _ABORT_HEAD.size:
            raise ProtocolError("file abort too short")
        _, tid, code = _ABORT_HEAD.unpack_from(data)
        if code not in AbortCode._value2member_map_:
            raise ProtocolError(f"unknown file abort code {code}")
        detail = _reason_text(data, _ABORT_HEAD.size, "abort detail")
        return FileAbort(tid.hex(), AbortCode(code), detail)
    if kind in (KIND_FILE_COMPLETE, KIND_FILE_RESTART):
        _exact(data, _ID_HEAD.size, "file complete/restart")
        _, tid = _ID_HEAD.unpack(data)
        return FileComplete(tid.hex()) if kind == KIND_FILE_COMPLETE else FileRestart(tid.hex())
    raise ProtocolError(f"not a file transfer message kind {kind:#04x}")
