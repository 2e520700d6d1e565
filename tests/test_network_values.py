"""Every value from the network is bounded, and no stored row can break a history view.

A chat dated 1e20 used to pass decoding, be stored and acknowledged, and then
crash option 3 (and option 7 after every restart) with OverflowError.
"""

from __future__ import annotations

import math
import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto_utils import Identity, Sealer, fingerprint_of
from peerchat.delivery import received_messages
from peerchat.errors import ProtocolError
from peerchat.limits import (
    MAX_CLOCK_SKEW,
    MAX_IDENTITY_KEY_BYTES,
    MAX_QUEUE_DAYS,
    MAX_SIGNATURE_BYTES,
    MAX_TIMESTAMP,
)
from peerchat.protocol.beacon import decode_beacon, encode_beacon
from peerchat.protocol.channel import encode_hello_payload, parse_hello_payload
from peerchat.protocol.messages import Chat, decode_message, encode_message
from peerchat.ui.menu import format_history_row
from storage import DeliveryState, Direction, HistoryStore, StoredMessage

NOW = 1_700_000_000.0
PEER = fingerprint_of(b"a peer")
ID = "0123456789abcdef0123456789abcdef"


def chat_wire(sent_at: float, text: bytes = b"hi", msg_id: bytes = bytes.fromhex(ID)) -> bytes:
    return b"\x01" + msg_id + struct.pack(">d", sent_at) + text


def row(sent_at: float, *, n: int = 0, text: str = "hello") -> StoredMessage:
    return StoredMessage(
        msg_id=f"{n:032x}",
        peer_fp=PEER,
        peer_name="Eve",
        peer_host="10.0.0.6",
        peer_port=5000,
        direction=Direction.IN,
        text=text,
        sent_at=sent_at,
        stored_at=NOW,
        state=DeliveryState.RECEIVED,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HistoryStore]:
    with HistoryStore.open(tmp_path / "chat_history.db", Sealer.generate()) as opened:
        yield opened


# -- decoding ------------------------------------------------------------------------------


@pytest.mark.parametrize("sent_at", [1e20, MAX_TIMESTAMP * 2, 1.7e308])
def test_a_chat_dated_beyond_the_year_3000_is_refused_on_decode(sent_at: float) -> None:
    with pytest.raises(ProtocolError, match="timestamp"):
        decode_message(chat_wire(sent_at))
    with pytest.raises(ValueError, match="sent_at"):
        encode_message(Chat(ID, sent_at, "hi"))


def test_a_chat_dated_up_to_the_bound_still_decodes() -> None:
    for sent_at in (0.0, NOW, MAX_TIMESTAMP):
        chat = decode_message(chat_wire(sent_at))
        assert isinstance(chat, Chat) and chat.sent_at == sent_at


def test_a_beacon_dated_beyond_the_bound_is_malformed() -> None:
    data = bytearray(encode_beacon(Identity.generate(2048), "Alice", 5000, bytes(16), 0, now=NOW))
    struct.pack_into(">d", data, 12, 1e20)  # the timestamp field
    with pytest.raises(ProtocolError, match="timestamp"):
        decode_beacon(bytes(data))


@pytest.mark.parametrize(
    ("der_size", "sig_size", "reason"),
    [
        (MAX_IDENTITY_KEY_BYTES + 1, 256, "identity key"),
        (294, MAX_SIGNATURE_BYTES + 1, "signature"),
    ],
)
def test_a_beacon_cannot_carry_an_oversized_key_or_signature(
    der_size: int, sig_size: int, reason: str
) -> None:
    header = struct.pack(
        ">4sBBHHHd16sQ", b"PCHB", 1, 5, der_size, sig_size, 5000, NOW, bytes(16), 0
    )
    data = header + b"Alice" + b"k" * der_size + b"s" * sig_size
    with pytest.raises(
        ProtocolError, match=f"{reason} of {der_size if reason[0] == 'i' else sig_size} bytes"
    ):
        decode_beacon(data)


@pytest.mark.parametrize(
    ("der_size", "sig_size", "reason"),
    [
        (MAX_IDENTITY_KEY_BYTES + 1, 256, "identity key"),
        (294, MAX_SIGNATURE_BYTES + 1, "signature"),
    ],
)
def test_a_hello_cannot_carry_an_oversized_key_or_signature(
    der_size: int, sig_size: int, reason: str
) -> None:
    payload = encode_hello_payload(
        name="Alice", listen_port=5000, identity_der=b"k" * der_size, signature=b"s" * sig_size
    )
    with pytest.raises(ProtocolError, match=f"{reason} of"):
        parse_hello_payload(payload)


# -- where the time is known: what is stored ------------------------------------------------


def stored_time(sent_at: float) -> float:
    chat = Chat(ID, sent_at, "hi")
    (stored,) = received_messages(PEER, "Eve", "10.0.0.6", 5000, [chat], now=NOW)
    return stored.sent_at


def test_a_chat_dated_more_than_a_day_ahead_is_stored_at_its_arrival() -> None:
    assert stored_time(NOW + MAX_CLOCK_SKEW + 1) == NOW
    assert stored_time(MAX_TIMESTAMP) == NOW
    assert stored_time(NOW + MAX_CLOCK_SKEW) == NOW + MAX_CLOCK_SKEW  # a slow clock is fine


def test_a_chat_older_than_any_queue_can_keep_it_is_stored_at_its_arrival() -> None:
    oldest = NOW - MAX_QUEUE_DAYS * 86_400.0 - MAX_CLOCK_SKEW
    assert stored_time(oldest) == oldest  # it may have waited that long in a queue
    assert stored_time(oldest - 1) == NOW
    assert stored_time(0.0) == NOW
    assert stored_time(NOW - 3 * 86_400.0) == NOW - 3 * 86_400.0  # queued for three days


# -- display: no stored row breaks the history --------------------------------------------


def test_a_stored_chat_dated_1e20_shows_in_the_history(store: HistoryStore) -> None:
    store.add_incoming([row(1e20, n=1), row(-1e20, n=2), row(-1.0, n=3), row(NOW, n=4)])

    lines = [format_history_row(r) for r in store.history()]

    assert len(lines) == 4
    for line in lines[:3]:
        assert line.startswith("[time unknown] Eve (10.0.0.6:5000) -> You [received]: hello")
    assert lines[3].startswith("[2023-11-")


def test_a_damaged_row_still_shows_in_the_history(store: HistoryStore) -> None:
    store.add_incoming([row(NOW, n=1)])
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE messages SET sent_at = 'junk', peer_port = 'x'")

    (line,) = [format_history_row(r) for r in store.history()]

    assert line == "[time unknown] Eve (10.0.0.6:0) -> You [received]: hello"


@pytest.mark.parametrize("sent_at", [math.nan, math.inf, -math.inf, 1e300, -62e9])
def test_any_float_time_formats(sent_at: float) -> None:
    assert format_history_row(row(sent_at)).startswith("[time unknown] ")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sent_at=st.floats(allow_nan=True, allow_infinity=True),
    text=st.binary(max_size=300),
    msg_id=st.binary(min_size=16, max_size=16),
    now=st.floats(min_value=0, max_value=MAX_TIMESTAMP),
)
def test_any_decoded_chat_goes_through_store_and_display(
    store: HistoryStore, sent_at: float, text: bytes, msg_id: bytes, now: float
) -> None:
    try:
        chat = decode_message(chat_wire(sent_at, text, msg_id))
    except ProtocolError:
        return
    assert isinstance(chat, Chat)
    rows = received_messages(PEER, "Eve", "10.0.0.6", 5000, [chat], now=now)
    if store.add_incoming(rows) == [True]:  # examples share the store: ids can repeat
        assert store.history(limit=1)[0].msg_id == chat.msg_id
    history = store.history(limit=3)
    for line in map(format_history_row, history):
        assert line.startswith("[") and "\n" not in line
