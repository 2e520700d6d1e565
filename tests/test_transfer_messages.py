"""File transfer messages on the wire: exact layouts, bounds on every field, canonical decoding."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerchat.errors import ProtocolError
from peerchat.limits import (
    MAX_FRAME_SIZE,
    MAX_OFFERED_NAME_BYTES,
    MAX_REASON_CHARS,
    MAX_TRANSFER_SIZE,
)
from peerchat.protocol.messages import decode_message, encode_message
from peerchat.protocol.transfer import (
    EMPTY_DIGEST,
    MAX_CHUNK_DATA,
    AbortCode,
    FileAbort,
    FileAccept,
    FileAck,
    FileChunk,
    FileComplete,
    FileDecline,
    FileOffer,
    FileRestart,
    TransferMessage,
    decode_transfer,
    encode_transfer,
    new_transfer_id,
)

TID = "0123456789abcdef" * 2
RAW_TID = bytes.fromhex(TID)
DIGEST = hashlib.sha256(b"report").digest()

EXAMPLES: list[TransferMessage] = [
    FileOffer(TID, 2_400_000, DIGEST, "report.pdf"),
    FileAccept(TID, 0, EMPTY_DIGEST),
    FileAccept(TID, 1_000_000, DIGEST),
    FileDecline(TID, "declined"),
    FileChunk(TID, 4096, b"\x00\x01data"),
    FileAck(TID, 253_952),
    FileComplete(TID),
    FileAbort(TID, AbortCode.DIGEST_MISMATCH, ""),
    FileAbort(TID, AbortCode.STALLED, "no data for 30 s"),
    FileRestart(TID),
]


def test_offer_layout_is_exactly_as_documented() -> None:
    wire = encode_message(FileOffer(TID, 2_400_000, DIGEST, "rapport é.pdf"))
    name = "rapport é.pdf".encode()
    assert wire == b"\x28" + RAW_TID + struct.pack(">Q", 2_400_000) + DIGEST + name


def test_chunk_accept_and_abort_layouts() -> None:
    assert encode_message(FileChunk(TID, 7, b"xyz")) == (
        b"\x2b" + RAW_TID + struct.pack(">Q", 7) + b"xyz"
    )
    assert encode_message(FileAccept(TID, 5, DIGEST)) == (
        b"\x29" + RAW_TID + struct.pack(">Q", 5) + DIGEST
    )
    assert encode_message(FileAbort(TID, AbortCode.STALLED, "x")) == b"\x2e" + RAW_TID + b"\x01x"
    assert encode_message(FileComplete(TID)) == b"\x2d" + RAW_TID
    assert encode_message(FileRestart(TID)) == b"\x2f" + RAW_TID
    assert encode_message(FileAck(TID, 9)) == b"\x2c" + RAW_TID + struct.pack(">Q", 9)
    assert encode_message(FileDecline(TID, "no")) == b"\x2a" + RAW_TID + b"no"


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_kind_round_trips_through_the_message_table(message: TransferMessage) -> None:
    wire = encode_message(message)
    assert decode_message(wire) == message
    assert decode_transfer(wire) == message
    assert encode_transfer(message) == wire


def test_a_full_chunk_fits_one_frame_with_its_tag() -> None:
    wire = encode_message(FileChunk(TID, 0, bytes(MAX_CHUNK_DATA)))
    assert len(wire) + 16 == MAX_FRAME_SIZE
    with pytest.raises(ValueError, match="chunk data"):
        encode_message(FileChunk(TID, 0, bytes(MAX_CHUNK_DATA + 1)))


def test_new_transfer_ids_are_random_128_bit_hex() -> None:
    ids = {new_transfer_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 32 and bytes.fromhex(i) for i in ids)


def _with(kind: int, rest: bytes) -> bytes:
    return bytes((kind,)) + RAW_TID + rest


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        (_with(0x28, struct.pack(">Q", 1) + DIGEST), "without a name"),
        (_with(0x28, struct.pack(">Q", 1) + DIGEST + b"\xff"), "not valid UTF-8"),
        (
            _with(0x28, struct.pack(">Q", 1) + DIGEST + b"a" * (MAX_OFFERED_NAME_BYTES + 1)),
            "name over",
        ),
        (_with(0x28, struct.pack(">Q", MAX_TRANSFER_SIZE + 1) + DIGEST + b"a"), "file size"),
        (_with(0x29, struct.pack(">Q", 1) + DIGEST[:31]), "wrong length"),
        (_with(0x29, struct.pack(">Q", MAX_TRANSFER_SIZE + 1) + DIGEST), "resume offset"),
        (_with(0x2B, struct.pack(">Q", 0)), "without data"),
        (_with(0x2B, struct.pack(">Q", 0) + bytes(MAX_CHUNK_DATA + 1)), "chunk over"),
        (_with(0x2B, struct.pack(">Q", MAX_TRANSFER_SIZE) + b"x"), "chunk end"),
        (_with(0x2C, struct.pack(">Q", 1) + b"x"), "wrong length"),
        (_with(0x2C, struct.pack(">Q", MAX_TRANSFER_SIZE + 1)), "acknowledged offset"),
        (_with(0x2D, b"x"), "wrong length"),
        (_with(0x2F, b"x"), "wrong length"),
        (_with(0x2E, b""), "too short"),
        (_with(0x2E, b"\x00"), "unknown file abort code"),
        (_with(0x2E, b"\x63"), "unknown file abort code"),
        (_with(0x2E, b"\x01" + b"a" * (MAX_REASON_CHARS + 1)), "over 200"),
        (_with(0x2E, b"\x01" + b"a" * (MAX_REASON_CHARS * 4 + 1)), "too long"),
        (_with(0x2A, "é".encode() * (MAX_REASON_CHARS + 1)), "over 200"),
        (_with(0x2A, b"\xc3"), "not valid UTF-8"),
        (b"\x2a" + RAW_TID[:5], "too short"),
        (b"\x2b" + RAW_TID, "without data"),
    ],
)
def test_malformed_transfer_messages_are_protocol_errors(wire: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        decode_message(wire)


@pytest.mark.parametrize(
    "message",
    [
        FileOffer(TID, 1, DIGEST, ""),
        FileOffer(TID, 1, DIGEST, "a" * (MAX_OFFERED_NAME_BYTES + 1)),
        FileOffer(TID, 1, DIGEST[:5], "a"),
        FileOffer(TID, -1, DIGEST, "a"),
        FileOffer("ABCDEF" * 5 + "AB", 1, DIGEST, "a"),
        FileAccept(TID, MAX_TRANSFER_SIZE + 1, DIGEST),
        FileChunk(TID, 0, b""),
        FileAck(TID, -1),
        FileDecline(TID, "x" * (MAX_REASON_CHARS + 1)),
        FileAbort("nothex", AbortCode.STALLED, ""),
    ],
)
def test_messages_that_could_never_decode_are_refused_when_encoding(
    message: TransferMessage,
) -> None:
    with pytest.raises(ValueError):
        encode_message(message)


@given(
    kind=st.integers(min_value=0x28, max_value=0x2F),
    body=st.binary(max_size=200),
)
def test_arbitrary_bodies_decode_canonically_or_raise_protocol_error(
    kind: int, body: bytes
) -> None:
    wire = bytes((kind,)) + body
    try:
        message = decode_message(wire)
    except ProtocolError:
        return
    assert encode_message(message) == wire


@given(
    size=st.integers(min_value=0, max_value=MAX_TRANSFER_SIZE),
    name=st.text(min_size=1, max_size=60),
    offset=st.integers(min_value=0, max_value=MAX_TRANSFER_SIZE - 100),
    data=st.binary(min_size=1, max_size=100),
)
def test_valid_fields_always_round_trip(size: int, name: str, offset: int, data: bytes) -> None:
    try:
        name.encode()
    except UnicodeEncodeError:
        return  # lone surrogates: not text that can be sent
    for message in (FileOffer(TID, size, DIGEST, name), FileChunk(TID, offset, data)):
        assert decode_message(encode_message(message)) == message
