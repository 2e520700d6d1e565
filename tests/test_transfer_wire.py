"""Transfer messages on the wire: every refusal word for word, each bound at its exact value.

test_transfer_messages.py checks the layouts and that bad input is refused; these pin
the reason each refusal gives (the one the log shows) and the value where each limit
turns, in both directions."""

from __future__ import annotations

import re
import struct

import pytest

from peerchat.errors import ProtocolError
from peerchat.limits import MAX_OFFERED_NAME_BYTES, MAX_REASON_CHARS, MAX_TRANSFER_SIZE
from peerchat.protocol.transfer import (
    EMPTY_DIGEST,
    KIND_FILE_ABORT,
    KIND_FILE_ACCEPT,
    KIND_FILE_ACK,
    KIND_FILE_CHUNK,
    KIND_FILE_COMPLETE,
    KIND_FILE_DECLINE,
    KIND_FILE_OFFER,
    MAX_CHUNK_DATA,
    AbortCode,
    FileAbort,
    FileAccept,
    FileAck,
    FileChunk,
    FileDecline,
    FileOffer,
    TransferMessage,
    decode_transfer,
    encode_transfer,
)

TID = "ef" * 16
RAW = bytes.fromhex(TID)
DIGEST = bytes(range(32))


def head(kind: int) -> bytes:
    return bytes([kind]) + RAW


def u64(value: int) -> bytes:
    return struct.pack(">Q", value)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not a file transfer message kind -0x1"),
        (b"\x30", "not a file transfer message kind 0x30"),
        (head(KIND_FILE_CHUNK) + u64(0), "file chunk without data"),
        (
            head(KIND_FILE_CHUNK) + u64(0) + bytes(MAX_CHUNK_DATA + 1),
            f"file chunk over {MAX_CHUNK_DATA} bytes",
        ),
        (
            head(KIND_FILE_CHUNK) + u64(MAX_TRANSFER_SIZE) + b"x",
            f"chunk end {MAX_TRANSFER_SIZE + 1} is over {MAX_TRANSFER_SIZE}",
        ),
        (head(KIND_FILE_ACK) + u64(1) + b"x", "file ack has the wrong length"),
        (
            head(KIND_FILE_ACK) + u64(MAX_TRANSFER_SIZE + 1),
            f"acknowledged offset {MAX_TRANSFER_SIZE + 1} is over {MAX_TRANSFER_SIZE}",
        ),
        (head(KIND_FILE_OFFER) + u64(1) + DIGEST, "file offer without a name"),
        (
            head(KIND_FILE_OFFER) + u64(1) + DIGEST + b"n" * (MAX_OFFERED_NAME_BYTES + 1),
            f"offered file name over {MAX_OFFERED_NAME_BYTES} bytes",
        ),
        (head(KIND_FILE_OFFER) + u64(1) + DIGEST + b"\xff", "offered file name is not valid UTF-8"),
        (
            head(KIND_FILE_OFFER) + u64(MAX_TRANSFER_SIZE + 1) + DIGEST + b"n",
            f"file size {MAX_TRANSFER_SIZE + 1} is over {MAX_TRANSFER_SIZE}",
        ),
        (head(KIND_FILE_ACCEPT) + u64(0) + DIGEST[:31], "file accept has the wrong length"),
        (
            head(KIND_FILE_ACCEPT) + u64(MAX_TRANSFER_SIZE + 1) + DIGEST,
            f"resume offset {MAX_TRANSFER_SIZE + 1} is over {MAX_TRANSFER_SIZE}",
        ),
        (head(KIND_FILE_DECLINE)[:-1], "file decline too short"),
        (
            head(KIND_FILE_DECLINE) + b"a" * (MAX_REASON_CHARS * 4 + 1),
            "decline reason too long",
        ),
        (
            head(KIND_FILE_DECLINE) + b"a" * (MAX_REASON_CHARS * 4),
            f"decline reason over {MAX_REASON_CHARS} characters",
        ),
        (head(KIND_FILE_DECLINE) + b"\xc3", "decline reason is not valid UTF-8"),
        (head(KIND_FILE_ABORT), "file abort too short"),
        (head(KIND_FILE_ABORT) + b"\xc8", "unknown file abort code 200"),
        (
            head(KIND_FILE_ABORT) + bytes([AbortCode.STALLED]) + b"\xc3",
            "abort detail is not valid UTF-8",
        ),
        (
            head(KIND_FILE_ABORT) + bytes([AbortCode.STALLED]) + b"d" * (MAX_REASON_CHARS * 4),
            f"abort detail over {MAX_REASON_CHARS} characters",
        ),
        (head(KIND_FILE_COMPLETE) + b"x", "file complete/restart has the wrong length"),
    ],
)
def test_a_malformed_message_is_refused_with_its_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=f"^{re.escape(reason)}$"):
        decode_transfer(data)


@pytest.mark.parametrize(
    "message",
    [
        FileChunk(TID, 0, bytes(MAX_CHUNK_DATA)),
        FileChunk(TID, MAX_TRANSFER_SIZE - 1, b"x"),
        FileOffer(TID, MAX_TRANSFER_SIZE, DIGEST, "n" * MAX_OFFERED_NAME_BYTES),
        FileDecline(TID, ""),
        FileDecline(TID, "r" * MAX_REASON_CHARS),
        FileAbort(TID, AbortCode.EXPIRED, "é" * MAX_REASON_CHARS),
        FileAccept(TID, MAX_TRANSFER_SIZE, EMPTY_DIGEST),
        FileAck(TID, MAX_TRANSFER_SIZE),
    ],
)
def test_a_message_at_each_limit_goes_through(message: TransferMessage) -> None:
    decoded = decode_transfer(encode_transfer(message))
    if isinstance(message, FileChunk):
        assert isinstance(decoded, FileChunk)
        assert (decoded.offset, bytes(decoded.data)) == (message.offset, bytes(message.data))
    else:
        assert decoded == message


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (FileChunk(TID, 0, b""), f"chunk data must be 1..{MAX_CHUNK_DATA} bytes"),
        (
            FileChunk(TID, MAX_TRANSFER_SIZE, b"x"),
            f"chunk end must be within 0..{MAX_TRANSFER_SIZE}",
        ),
        (FileAck(TID, -1), f"received must be within 0..{MAX_TRANSFER_SIZE}"),
        (FileOffer(TID, 1, DIGEST[:31], "n"), "a digest is 32 bytes"),
        (FileOffer(TID, -1, DIGEST, "n"), f"size must be within 0..{MAX_TRANSFER_SIZE}"),
        (FileOffer(TID, 1, DIGEST, "\ud800"), "file name is not encodable as UTF-8"),
        (
            FileOffer(TID, 1, DIGEST, ""),
            f"file name must be 1..{MAX_OFFERED_NAME_BYTES} UTF-8 bytes",
        ),
        (
            FileOffer(TID, 1, DIGEST, "n" * (MAX_OFFERED_NAME_BYTES + 1)),
            f"file name must be 1..{MAX_OFFERED_NAME_BYTES} UTF-8 bytes",
        ),
        (FileAccept(TID, -1, EMPTY_DIGEST), f"offset must be within 0..{MAX_TRANSFER_SIZE}"),
        (
            FileAck("AB" * 16, 1),
            "transfer_id must be 32 lowercase hex characters, got '" + "AB" * 16 + "'",
        ),
        (
            FileAck("ef " * 16, 1),  # fromhex skips the spaces: 16 bytes, but not the form
            "transfer_id must be 32 lowercase hex characters, got '" + "ef " * 16 + "'",
        ),
        (
            FileDecline(TID, "r" * (MAX_REASON_CHARS + 1)),
            f"decline reason over {MAX_REASON_CHARS} characters",
        ),
        (FileAbort(TID, AbortCode.EXPIRED, "\ud800"), "abort detail is not encodable as UTF-8"),
    ],
)
def test_a_message_that_could_never_be_decoded_is_not_encoded(
    message: TransferMessage, reason: str
) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(reason)}$"):
        encode_transfer(message)


def test_only_transfer_messages_are_encoded() -> None:
    with pytest.raises(ValueError, match=r"^not a transfer message: str$"):
        encode_transfer("FileAck")  # type: ignore[arg-type]
