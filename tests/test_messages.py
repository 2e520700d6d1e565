from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerchat.errors import ProtocolError
from peerchat.limits import MAX_IN_FLIGHT, MAX_MESSAGE_BYTES, MAX_REASON_CHARS, MAX_TIMESTAMP
from peerchat.protocol.messages import (
    AbortReason,
    Ack,
    Bye,
    Chat,
    Message,
    Ping,
    Pong,
    VerifyAbort,
    VerifyCommit,
    VerifyConfirm,
    VerifyRequest,
    VerifyReveal,
    decode_message,
    encode_message,
    new_msg_id,
)

ID = "0123456789abcdef0123456789abcdef"
ID_BYTES = bytes.fromhex(ID)

msg_ids = st.binary(min_size=16, max_size=16).map(bytes.hex)
valid_messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(
        Chat,
        msg_ids,
        st.floats(min_value=0, max_value=MAX_TIMESTAMP),
        st.text(max_size=200),
    ),
    st.builds(Ack, st.lists(msg_ids, min_size=1, max_size=40).map(tuple)),
    st.builds(Ping, st.integers(0, 2**64 - 1)),
    st.builds(Pong, st.integers(0, 2**64 - 1)),
    st.builds(Bye, st.text(max_size=MAX_REASON_CHARS)),
    st.builds(VerifyRequest, st.binary(min_size=16, max_size=16)),
    st.builds(
        VerifyCommit, st.binary(min_size=16, max_size=16), st.binary(min_size=32, max_size=32)
    ),
    st.builds(
        VerifyReveal, st.binary(min_size=16, max_size=16), st.binary(min_size=32, max_size=32)
    ),
    st.builds(VerifyConfirm, st.binary(min_size=16, max_size=16), st.booleans()),
    st.builds(VerifyAbort, st.binary(min_size=16, max_size=16), st.sampled_from(AbortReason)),
)
ATTEMPT = bytes(range(16))


def test_new_msg_id_is_32_lowercase_hex_and_fresh() -> None:
    ids = {new_msg_id(1_700_000_000.0) for _ in range(100)}
    assert len(ids) == 100  # the same millisecond, still all apart
    for msg_id in ids:
        assert len(msg_id) == 32
        assert set(msg_id) <= set("0123456789abcdef")
        assert encode_message(Chat(msg_id, 1.0, "x"))  # the wire takes it


def test_new_msg_ids_sort_by_their_time() -> None:
    # A history index keyed by msg_id grows at one end only if later ids sort later.
    times = [0.0, 0.001, 1.0, 1_700_000_000.0, 1_700_000_000.002, 32_503_680_000.0]
    ids = [new_msg_id(t) for t in times]
    assert ids == sorted(ids)
    assert ids[3].startswith(f"{1_700_000_000_000:012x}")


@pytest.mark.parametrize("now", [-5.0, math.nan, math.inf, -math.inf, 1e300])
def test_new_msg_id_takes_any_clock(now: float) -> None:
    # A clock before 1970 or beyond reason still gives a valid id, never an error.
    msg_id = new_msg_id(now)
    assert len(msg_id) == 32 and set(msg_id) <= set("0123456789abcdef")


def test_chat_wire_layout() -> None:
    wire = encode_message(Chat(ID, 1700000000.5, "hé"))
    assert wire == b"\x01" + ID_BYTES + struct.pack(">d", 1700000000.5) + "hé".encode()


@pytest.mark.parametrize(
    ("message", "wire"),
    [
        (Ack((ID, ID)), b"\x02\x00\x02" + ID_BYTES * 2),
        (Ping(1), b"\x03" + (1).to_bytes(8, "big")),
        (Pong(2**64 - 1), b"\x04" + b"\xff" * 8),
        (Bye("done"), b"\x05done"),
        (VerifyRequest(ATTEMPT), b"\x06" + ATTEMPT),
        (VerifyCommit(ATTEMPT, b"c" * 32), b"\x07" + ATTEMPT + b"c" * 32),
        (VerifyReveal(ATTEMPT, b"n" * 32), b"\x08" + ATTEMPT + b"n" * 32),
        (VerifyConfirm(ATTEMPT, True), b"\x09" + ATTEMPT + b"\x01"),
        (VerifyConfirm(ATTEMPT, False), b"\x09" + ATTEMPT + b"\x00"),
        (VerifyAbort(ATTEMPT, AbortReason.BAD_REVEAL), b"\x0a" + ATTEMPT + b"\x04"),
    ],
)
def test_other_wire_layouts(message: Message, wire: bytes) -> None:
    assert encode_message(message) == wire
    assert decode_message(wire) == message


@given(valid_messages)
def test_every_valid_message_round_trips(message: Message) -> None:
    assert decode_message(encode_message(message)) == message


def test_the_latest_and_earliest_times_round_trip() -> None:
    for sent_at in (0.0, MAX_TIMESTAMP):
        chat = Chat(ID, sent_at, "at the edge of time")
        assert decode_message(encode_message(chat)) == chat


def test_largest_chat_and_ack_round_trip() -> None:
    chat = Chat(ID, 0.0, "€" * (MAX_MESSAGE_BYTES // 3))
    assert decode_message(encode_message(chat)) == chat
    ack = Ack((ID,) * (MAX_IN_FLIGHT * 4))
    assert decode_message(encode_message(ack)) == ack


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_protocol_error_and_decode_canonically(data: bytes) -> None:
    try:
        message = decode_message(data)
    except ProtocolError:
        return
    assert encode_message(message) == data  # one message, one encoding


TIME = r"^chat timestamp is not a valid time \(years 1970 to 3000\)$"
CHAT_UTF8 = "^chat text is not valid UTF-8$"


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"", "^empty message$"),
        (b"\x00", "^unknown message kind 0x00$"),
        (b"\xee", "^unknown message kind 0xee$"),
        (b"\x01" + ID_BYTES + b"\x00" * 7, "^chat message too short$"),
        (b"\x01" + ID_BYTES + struct.pack(">d", math.nan), TIME),
        (b"\x01" + ID_BYTES + struct.pack(">d", math.inf), TIME),
        (b"\x01" + ID_BYTES + struct.pack(">d", -1.0), TIME),
        (b"\x01" + ID_BYTES + struct.pack(">d", MAX_TIMESTAMP + 1), TIME),
        (b"\x01" + ID_BYTES + struct.pack(">d", 1e20), TIME),
        (b"\x01" + ID_BYTES + struct.pack(">d", 1.0) + b"\xff", CHAT_UTF8),
        (b"\x01" + ID_BYTES + struct.pack(">d", 1.0) + b"\xed\xa0\x80", CHAT_UTF8),  # surrogate
        (
            b"\x01" + ID_BYTES + struct.pack(">d", 1.0) + b"x" * (MAX_MESSAGE_BYTES + 1),
            "^chat text over 65536 bytes$",
        ),
        (b"\x02\x00", "^ack too short$"),
        (b"\x02\x00\x00", "^ack with 0 ids is outside 1..1024$"),
        (b"\x02" + struct.pack(">H", MAX_IN_FLIGHT * 4 + 1), "^ack with 1025 ids is outside"),
        (b"\x02\x00\x02" + ID_BYTES, "^ack length does not match its id count$"),
        (b"\x02\x00\x01" + ID_BYTES + b"\x00", "^ack length does not match its id count$"),
        (b"\x03" + b"\x00" * 7, "^ping/pong has the wrong length$"),
        (b"\x04" + b"\x00" * 9, "^ping/pong has the wrong length$"),
        (b"\x05" + "é".encode() * (MAX_REASON_CHARS + 1), "^bye reason over 200 characters$"),
        (b"\x05" + b"x" * (MAX_REASON_CHARS * 4 + 1), "^bye reason too long$"),
        (b"\x05\xc3", "^bye reason is not valid UTF-8$"),
    ],
)
def test_malformed_messages_are_refused(wire: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        decode_message(wire)


ID_PROBLEM = "^msg_id must be 32 lowercase hex characters, got "


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (Chat("0123", 1.0, "short id"), ID_PROBLEM),
        (Chat(ID.upper(), 1.0, "upper-case id"), ID_PROBLEM),
        (Chat(ID[:16] + " " + ID[16:], 1.0, "a space fromhex would skip"), ID_PROBLEM),
        (Chat(ID[:15] + " " + ID[17:], 1.0, "32 characters, 15 bytes"), ID_PROBLEM),
        (Chat("zz" * 16, 1.0, "not hex"), ID_PROBLEM),
        (Chat(ID, 1.0, "x" * (MAX_MESSAGE_BYTES + 1)), "^message text over 65536 bytes$"),
        (Chat(ID, math.nan, "no time"), r"^sent_at must be a time from 0 to 32503680000$"),
        (Chat(ID, MAX_TIMESTAMP * 2, "a time no calendar shows"), "^sent_at must be a time from"),
        (Chat(ID, 1.0, "\ud800"), "^text is not encodable as UTF-8$"),
        (Ack(()), "^an Ack carries 1..1024 ids$"),
        (Ack((ID,) * (MAX_IN_FLIGHT * 4 + 1)), "^an Ack carries 1..1024 ids$"),
        (Ack(("nothex",)), ID_PROBLEM),
        (Ping(-1), "^nonce must fit in 64 bits$"),
        (Pong(2**64), "^nonce must fit in 64 bits$"),
        (Bye("x" * (MAX_REASON_CHARS + 1)), "^reason over 200 characters$"),
        (Bye("\ud800"), "^reason is not encodable as UTF-8$"),
        ("not a message", "^not a message: str$"),
    ],
)
def test_messages_that_could_not_be_decoded_are_not_encoded(message: Message, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        encode_message(message)


@pytest.mark.parametrize("reason", ["x" * MAX_REASON_CHARS, "😀" * MAX_REASON_CHARS])
def test_the_longest_bye_reason_round_trips(reason: str) -> None:
    """200 characters, and 200 four-byte characters: exactly the byte bound of the decoder."""
    assert decode_message(encode_message(Bye(reason))) == Bye(reason)
