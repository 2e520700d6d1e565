"""Application messages carried one per transport frame, in a compact binary form.

Every message starts with a 1-byte kind; the layout after it is fixed per kind
(all integers big-endian, text UTF-8, nothing may trail):

    Chat  0x01  msg_id (16 raw bytes) | sent_at (float64, 0..MAX_TIMESTAMP) | text (rest)
    Ack   0x02  count (u16) | count x msg_id (16 raw bytes)
    Ping  0x03  nonce (u64)
    Pong  0x04  nonce (u64)
    Bye   0x05  reason (rest)
    PeerExchange 0x06
          own_len (u16) | own beacon (own_len bytes; 0: none)
          | count (u8) | count x [ipv4 (4) | port (u16) | beacon_len (u16) | beacon]

A PeerExchange is only checked for shape here; what its beacons say, and
whether to believe it, is `peerchat.protocol.pex`'s business.

and the code comparison (protocol/sas.py), each for one attempt:

    VerifyRequest 0x06  attempt (16 raw bytes)
    VerifyCommit  0x07  attempt | commitment (32 raw bytes)
    VerifyReveal  0x08  attempt | nonce (32 raw bytes)
    VerifyConfirm 0x09  attempt | same (u8, 0 or 1)
    VerifyAbort   0x0A  attempt | reason (u8, an AbortReason)

and the notice that the user connected on purpose (option 4):

    ConnectNotice 0x10  (nothing)
    File transfer  0x28-0x2F  see peerchat/protocol/transfer.py

`decode_message` raises only `ProtocolError`; `encode_message` raises
`ValueError` for a message that could never be decoded (a local mistake).
"""

from __future__ import annotations

import ipaddress
import os
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final, cast

from peerchat.errors import ProtocolError
from peerchat.limits import (
    BEACON_MAX_SIZE,
    MAX_IN_FLIGHT,
    MAX_MESSAGE_BYTES,
    MAX_REASON_CHARS,
    MAX_TIMESTAMP,
    PEX_MAX_RECORDS,
)
from peerchat.protocol.transfer import (
    TRANSFER_KINDS,
    TRANSFER_MESSAGE_TYPES,
    TransferMessage,
    decode_transfer,
    encode_transfer,
)

KIND_CHAT: Final = 0x01
KIND_ACK: Final = 0x02
KIND_PING: Final = 0x03
KIND_PONG: Final = 0x04
KIND_BYE: Final = 0x05
KIND_VERIFY_REQUEST: Final = 0x06
KIND_VERIFY_COMMIT: Final = 0x07
KIND_VERIFY_REVEAL: Final = 0x08
KIND_VERIFY_CONFIRM: Final = 0x09
KIND_VERIFY_ABORT: Final = 0x0A
KIND_PEER_EXCHANGE: Final = 0x0B
KIND_CONNECT_NOTICE: Final = 0x10

MSG_ID_BYTES: Final = 16
MAX_ACK_IDS: Final = MAX_IN_FLIGHT * 4
_MAX_U64: Final = 2**64 - 1

_CHAT_HEAD: Final = struct.Struct(">B16sd")
_CHAT_SIZE: Final = _CHAT_HEAD.size
_pack_chat = _CHAT_HEAD.pack
_unpack_chat = _CHAT_HEAD.unpack_from
_ACK_HEAD: Final = struct.Struct(">BH")
_NONCE: Final = struct.Struct(">BQ")
_U16: Final = struct.Struct(">H")
_PEX_RECORD_HEAD: Final = struct.Struct(">4sHH")

ATTEMPT_ID_BYTES: Final = 16
VERIFY_NONCE_BYTES: Final = 32
COMMITMENT_BYTES: Final = 32


@dataclass(frozen=True, slots=True)
class Chat:
    msg_id: str  # 32 lowercase hex chars (16 bytes: 6 of milliseconds, 10 random)
    sent_at: float  # sender's unix time, 0..MAX_TIMESTAMP (the receiver clamps it to its clock)
    text: str


@dataclass(frozen=True, slots=True)
class Ack:
    msg_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Ping:
    nonce: int  # u64


@dataclass(frozen=True, slots=True)
class Pong:
    nonce: int


@dataclass(frozen=True, slots=True)
class Bye:
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectNotice:
    """The sender's user connected to us on purpose (option 4): say so on our screen."""


class AbortReason(IntEnum):
    """Why one side ends a code comparison; any other value is a protocol error."""

    CANCELLED = 1  # its user gave no answer, or it gave up waiting
    EXPIRED = 2  # nobody answered in time
    RATE_LIMITED = 3  # too many failed comparisons with this peer lately
    BAD_REVEAL = 4  # the other's nonce did not open its commitment
    UNEXPECTED = 5  # a message out of order


@dataclass(frozen=True, slots=True)
class VerifyRequest:
    attempt: bytes  # ATTEMPT_ID_BYTES random bytes, fresh per attempt


@dataclass(frozen=True, slots=True)
class VerifyCommit:
    attempt: bytes
    commitment: bytes  # COMMITMENT_BYTES


@dataclass(frozen=True, slots=True)
class VerifyReveal:
    attempt: bytes
    nonce: bytes  # VERIFY_NONCE_BYTES


@dataclass(frozen=True, slots=True)
class VerifyConfirm:
    attempt: bytes
    same: bool  # the user saw the same code on both screens


@dataclass(frozen=True, slots=True)
class VerifyAbort:
    attempt: bytes
    reason: AbortReason


VerifyMessage = VerifyRequest | VerifyCommit | VerifyReveal | VerifyConfirm | VerifyAbort
VERIFY_MESSAGE_TYPES: Final = (
    VerifyRequest,
    VerifyCommit,
    VerifyReveal,
    VerifyConfirm,
    VerifyAbort,
)


@dataclass(frozen=True, slots=True)
class PexRecord:
    """A third peer's own signed beacon, and the address its sender reached it at."""

    host: str  # dotted IPv4, as the sender reached that peer (a hint)
    port: int
    beacon: bytes  # the third peer's beacon, exactly as that peer signed it


@dataclass(frozen=True, slots=True)
class PeerExchange:
    own_beacon: bytes  # the sender's own signed beacon, b"" for none
    records: tuple[PexRecord, ...]


Message = (
    Chat | Ack | Ping | Pong | Bye | ConnectNotice | VerifyMessage | PeerExchange | TransferMessage
)


_ID_TIME_BYTES: Final = 6  # milliseconds since 1970: good until the year 10889
_ID_MAX_MS: Final = 2 ** (8 * _ID_TIME_BYTES) - 1


def new_msg_id(now: float) -> str:
    """A fresh id: the time `now` in milliseconds (6 bytes, big-endian), then 10 random bytes.

    Ids made later sort after earlier ones, so every history index keyed by
    msg_id grows at one end: a batch of new rows touches a few index pages, not
    one random page per row (a third of the cost of a stored batch). The time
    says nothing a Chat's sent_at does not; 80 random bits keep ids apart.
    """
    try:
        ms = int(now * 1000)
    except (OverflowError, ValueError):  # an infinite or NaN clock
        ms = 0
    if not 0 <= ms <= _ID_MAX_MS:  # one chained comparison: the common case costs no call
        ms = 0 if ms < 0 else _ID_MAX_MS
    return (ms.to_bytes(_ID_TIME_BYTES, "big") + os.urandom(MSG_ID_BYTES - _ID_TIME_BYTES)).hex()


def _id_bytes(msg_id: str) -> bytes:
    # fromhex alone would accept upper case and skip whitespace (giving fewer bytes).
    try:
        raw = bytes.fromhex(msg_id)
    except ValueError:
        raw = b""
    if len(raw) != MSG_ID_BYTES or len(msg_id) != 2 * MSG_ID_BYTES or msg_id != msg_id.lower():
        raise ValueError(f"msg_id must be 32 lowercase hex characters, got {msg_id!r}")
    return raw


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} is not encodable as UTF-8") from exc


def encode_message(message: Message) -> bytes:
    """The wire form of `message`; ValueError if it breaks a limit."""
    if type(message) is Chat:  # the common case first
        try:
            text = message.text.encode()
        except UnicodeEncodeError as exc:
            raise ValueError("text is not encodable as UTF-8") from exc
        if len(text) > MAX_MESSAGE_BYTES:
            raise ValueError(f"message text over {MAX_MESSAGE_BYTES} bytes")
        if not 0.0 <= message.sent_at <= MAX_TIMESTAMP:
            raise ValueError(f"sent_at must be a time from 0 to {MAX_TIMESTAMP:.0f}")
        return _pack_chat(KIND_CHAT, _id_bytes(message.msg_id), message.sent_at) + text
    if type(message) is Ack:
        if not 0 < len(message.msg_ids) <= MAX_ACK_IDS:
            raise ValueError(f"an Ack carries 1..{MAX_ACK_IDS} ids")
        ids = b"".join(_id_bytes(i) for i in message.msg_ids)
        return _ACK_HEAD.pack(KIND_ACK, len(message.msg_ids)) + ids
    if type(message) is Ping or type(message) is Pong:
        if not 0 <= message.nonce <= _MAX_U64:
            raise ValueError("nonce must fit in 64 bits")
        return _NONCE.pack(KIND_PING if type(message) is Ping else KIND_PONG, message.nonce)
    if type(message) is Bye:
        if len(message.reason) > MAX_REASON_CHARS:
            raise ValueError(f"reason over {MAX_REASON_CHARS} characters")
        return bytes((KIND_BYE,)) + _utf8(message.reason, "reason")
    if type(message) is ConnectNotice:
        return bytes((KIND_CONNECT_NOTICE,))
    if isinstance(message, VERIFY_MESSAGE_TYPES):
        return _encode_verify(message)
    if type(message) is PeerExchange:
        return _encode_peer_exchange(message)
    if isinstance(message, TRANSFER_MESSAGE_TYPES):
        return encode_transfer(message)
    raise ValueError(f"not a message: {type(message).__name__}")


def _fixed(value: bytes, size: int, what: str) -> bytes:
    if type(value) is not bytes or len(value) != size:
        raise ValueError(f"{what} must be {size} bytes")
    return value


def _encode_verify(message: VerifyMessage) -> bytes:
    attempt = _fixed(message.attempt, ATTEMPT_ID_BYTES, "attempt")
    if type(message) is VerifyRequest:
        return bytes((KIND_VERIFY_REQUEST,)) + attempt
    if type(message) is VerifyCommit:
        commitment = _fixed(message.commitment, COMMITMENT_BYTES, "commitment")
        return bytes((KIND_VERIFY_COMMIT,)) + attempt + commitment
    if type(message) is VerifyReveal:
        nonce = _fixed(message.nonce, VERIFY_NONCE_BYTES, "nonce")
        return bytes((KIND_VERIFY_REVEAL,)) + attempt + nonce
    if type(message) is VerifyConfirm:
        if type(message.same) is not bool:
            raise ValueError("same must be a bool")
        return bytes((KIND_VERIFY_CONFIRM,)) + attempt + bytes((int(message.same),))
    if type(message) is VerifyAbort:
        reason = AbortReason(message.reason)  # ValueError for a value outside the enum
        return bytes((KIND_VERIFY_ABORT,)) + attempt + bytes((reason,))
    raise ValueError(f"not a message: {type(message).__name__}")


def _encode_peer_exchange(message: PeerExchange) -> bytes:
    own = message.own_beacon
    if len(own) > BEACON_MAX_SIZE:
        raise ValueError(f"own beacon over {BEACON_MAX_SIZE} bytes")
    if len(message.records) > PEX_MAX_RECORDS:
        raise ValueError(f"a peer exchange carries at most {PEX_MAX_RECORDS} records")
    if not own and not message.records:
        raise ValueError("an empty peer exchange")
    parts = [bytes((KIND_PEER_EXCHANGE,)), _U16.pack(len(own)), own, bytes((len(message.records),))]
    for record in message.records:
        if not 0 < len(record.beacon) <= BEACON_MAX_SIZE:
            raise ValueError(f"a record's beacon must be 1..{BEACON_MAX_SIZE} bytes")
        if not 1 <= record.port <= 65535:
            raise ValueError(f"port {record.port} out of range")
        try:
            packed = ipaddress.IPv4Address(record.host).packed
        except ValueError:
            raise ValueError(f"not an IPv4 address: {record.host!r}") from None
        parts.append(_PEX_RECORD_HEAD.pack(packed, record.port, len(record.beacon)))
        parts.append(record.beacon)
    return b"".join(parts)


def _decode_peer_exchange(data: bytes) -> PeerExchange:
    size = len(data)
    at = 1
    if size < at + _U16.size:
        raise ProtocolError("peer exchange too short")
    (own_len,) = _U16.unpack_from(data, at)
    at += _U16.size
    if own_len > BEACON_MAX_SIZE:
        raise ProtocolError(f"own beacon over {BEACON_MAX_SIZE} bytes")
    own = bytes(data[at : at + own_len])
    at += own_len
    if size < at + 1:
        raise ProtocolError("peer exchange truncated")
    count = data[at]
    at += 1
    if count > PEX_MAX_RECORDS:
        raise ProtocolError(f"peer exchange with {count} records (at most {PEX_MAX_RECORDS})")
    if not own and not count:
        raise ProtocolError("empty peer exchange")
    records = []
    for _ in range(count):
        if size < at + _PEX_RECORD_HEAD.size:
            raise ProtocolError("peer exchange record truncated")
        packed, port, beacon_len = _PEX_RECORD_HEAD.unpack_from(data, at)
        at += _PEX_RECORD_HEAD.size
        if not 1 <= port <= 65535:
            raise ProtocolError("peer exchange record with port 0")
        if not 0 < beacon_len <= BEACON_MAX_SIZE:
            raise ProtocolError("peer exchange record with a bad beacon length")
        if size < at + beacon_len:
            raise ProtocolError("peer exchange record truncated")
        host = str(ipaddress.IPv4Address(packed))
        records.append(PexRecord(host, port, bytes(data[at : at + beacon_len])))
        at += beacon_len
    if at != size:
        raise ProtocolError("bytes after the last peer exchange record")
    return PeerExchange(own, tuple(records))


def _text(data: bytes, start: int, what: str) -> str:
    try:
        return data[start:].decode()
    except UnicodeDecodeError:
        raise ProtocolError(f"{what} is not valid UTF-8") from None


# A frozen dataclass's __init__ sets each field through object.__setattr__, which
# costs about as much as the AES-GCM call of a small frame. Decoding, the hot path,
# fills the slots directly instead; the result is an ordinary, equal Chat.
_new = object.__new__
_set_msg_id = cast(Any, Chat).msg_id.__set__
_set_sent_at = cast(Any, Chat).sent_at.__set__
_set_text = cast(Any, Chat).text.__set__


def _decode_chat(data: bytes) -> Chat:
    size = len(data)
    if size < _CHAT_SIZE:
        raise ProtocolError("chat message too short")
    if size - _CHAT_SIZE > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"chat text over {MAX_MESSAGE_BYTES} bytes")
    _, raw_id, sent_at = _unpack_chat(data)
    if not 0.0 <= sent_at <= MAX_TIMESTAMP:  # also false for NaN
        raise ProtocolError("chat timestamp is not a valid time (years 1970 to 3000)")
    try:
        text = data[_CHAT_SIZE:].decode()
    except UnicodeDecodeError:
        raise ProtocolError("chat text is not valid UTF-8") from None
    chat: Chat = _new(Chat)
    _set_msg_id(chat, raw_id.hex())
    _set_sent_at(chat, sent_at)
    _set_text(chat, text)
    return chat


def decode_message(data: bytes) -> Message:
    """Parse one message strictly; ProtocolError (only) if it is malformed."""
    if not data:
        raise ProtocolError("empty message")
    kind = data[0]
    if kind == KIND_CHAT:
        return _decode_chat(data)
    size = len(data)
    if kind == KIND_ACK:
        if size < _ACK_HEAD.size:
            raise ProtocolError("ack too short")
        _, count = _ACK_HEAD.unpack_from(data)
        if not 0 < count <= MAX_ACK_IDS:
            raise ProtocolError(f"ack with {count} ids is outside 1..{MAX_ACK_IDS}")
        if size != _ACK_HEAD.size + count * MSG_ID_BYTES:
            raise ProtocolError("ack length does not match its id count")
        start = _ACK_HEAD.size
        return Ack(
            tuple(
                data[i : i + MSG_ID_BYTES].hex()
                for i in range(start, start + count * MSG_ID_BYTES, MSG_ID_BYTES)
            )
        )
    if kind in (KIND_PING, KIND_PONG):
        if size != _NONCE.size:
            raise ProtocolError("ping/pong has the wrong length")
        _, nonce = _NONCE.unpack(data)
        return Ping(nonce) if kind == KIND_PING else Pong(nonce)
    if kind == KIND_BYE:
        if size - 1 > MAX_REASON_CHARS * 4:  # bound the work before decoding
            raise ProtocolError("bye reason too long")
        reason = _text(data, 1, "bye reason")
        if len(reason) > MAX_REASON_CHARS:
            raise ProtocolError(f"bye reason over {MAX_REASON_CHARS} characters")
        return Bye(reason)
    if KIND_VERIFY_REQUEST <= kind <= KIND_VERIFY_ABORT:
        return _decode_verify(kind, data)
    if kind == KIND_PEER_EXCHANGE:
        return _decode_peer_exchange(data)
    if kind == KIND_CONNECT_NOTICE:
        if size != 1:
            raise ProtocolError("connect notice has the wrong length")
        return ConnectNotice()
    if kind in TRANSFER_KINDS:
        return decode_transfer(data)
    raise ProtocolError(f"unknown message kind {kind:#04x}")


# Whole length of each comparison message, kind byte included: every one is fixed.
_VERIFY_SIZES: Final = {
    KIND_VERIFY_REQUEST: 1 + ATTEMPT_ID_BYTES,
    KIND_VERIFY_COMMIT: 1 + ATTEMPT_ID_BYTES + COMMITMENT_BYTES,
    KIND_VERIFY_REVEAL: 1 + ATTEMPT_ID_BYTES + VERIFY_NONCE_BYTES,
    KIND_VERIFY_CONFIRM: 1 + ATTEMPT_ID_BYTES + 1,
    KIND_VERIFY_ABORT: 1 + ATTEMPT_ID_BYTES + 1,
}
_ABORT_REASONS: Final = frozenset(AbortReason)


def _decode_verify(kind: int, data: bytes) -> VerifyMessage:
    if len(data) != _VERIFY_SIZES[kind]:
        raise ProtocolError(f"code comparison message {kind:#04x} has the wrong length")
    attempt = data[1 : 1 + ATTEMPT_ID_BYTES]
    rest = data[1 + ATTEMPT_ID_BYTES :]
    if kind == KIND_VERIFY_REQUEST:
        return VerifyRequest(attempt)
    if kind == KIND_VERIFY_COMMIT:
        return VerifyCommit(attempt, rest)
    if kind == KIND_VERIFY_REVEAL:
        return VerifyReveal(attempt, rest)
    value = rest[0]
    if kind == KIND_VERIFY_CONFIRM:
        if value > 1:
            raise ProtocolError(f"code comparison answer {value} is neither 0 nor 1")
        return VerifyConfirm(attempt, value == 1)
    if value not in _ABORT_REASONS:
        raise ProtocolError(f"unknown code comparison abort reason {value}")
    return VerifyAbort(attempt, AbortReason(value))
