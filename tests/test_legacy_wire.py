"""The legacy formats, pure: every line shape, control words, streams, the original's tokens."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from hypothesis import given, settings
from hypothesis import strategies as st

from peerchat.legacy.decoder import NO_KEY, WRONG_KEY, ConnectionDecoder
from peerchat.legacy.original import (
    LegacyKey,
    LegacyKeyError,
    decode_beacon,
    encode_beacon,
    encode_message,
    longest_original_text,
    original_problem,
    token_size,
)
from peerchat.legacy.wire import (
    BLOCK,
    ORIGINAL,
    PLAIN,
    ControlWord,
    Dialect,
    Kind,
    LegacyControl,
    LegacyDropped,
    LegacyItem,
    LegacyMessage,
    check_outgoing,
    encode_text,
    parse_line,
)
from peerchat.limits import LEGACY_MAX_LINE_BYTES, LEGACY_MAX_MESSAGE_BYTES, LEGACY_ORIGINAL_READ
from tests.legacy_emulators import BlockSender, OriginalSender, original_beacon, plain_line

KEY = Fernet.generate_key()


def decode_all(data: bytes, key: bytes | None = None) -> list[LegacyItem]:
    decoder = ConnectionDecoder(LegacyKey(key) if key else None)
    return decoder.receive(data) + decoder.receive_eof()


def messages(items: list[LegacyItem]) -> list[tuple[int, str, str, Dialect]]:
    return [(i.port, i.team, i.text, i.dialect) for i in items if isinstance(i, LegacyMessage)]


# -- one line -------------------------------------------------------------------


def test_plain_line() -> None:
    item = parse_line("10.0.0.5:5000 Alice hello there", newline=False)
    assert item == LegacyMessage(5000, "Alice", "hello there", PLAIN, "10.0.0.5")


def test_angle_bracket_line_keeps_spaces_in_team_and_text() -> None:
    item = parse_line("<10.0.0.5:5000> <Team Rocket> <hello <you> there>", newline=True)
    assert item == LegacyMessage(
        5000, "Team Rocket", "hello <you> there", Dialect(Kind.ANGLE, newline=True), "10.0.0.5"
    )


@pytest.mark.parametrize(
    ("line", "word"),
    [
        ("exit", ControlWord.EXIT),
        ("EXIT", ControlWord.EXIT),
        (" Quit ", ControlWord.QUIT),
        ("DISCONNECT", ControlWord.DISCONNECT),
        ("PING", ControlWord.PING),
        ("CONNECT_REQUEST", ControlWord.CONNECT_REQUEST),
    ],
)
def test_bare_control_words(line: str, word: ControlWord) -> None:
    assert parse_line(line, newline=False) == LegacyControl(word, None, None, None)


@pytest.mark.parametrize("word", list(ControlWord))
def test_control_word_as_the_whole_message(word: ControlWord) -> None:
    item = parse_line(f"10.0.0.5:5000 Alice {word.value}", newline=False)
    assert item == LegacyControl(word, 5000, "Alice", PLAIN, "10.0.0.5")
    angle = parse_line(f"<10.0.0.5:5000> <Alice> <{word.value}>", newline=False)
    assert isinstance(angle, LegacyControl) and angle.word is word


def test_disconnect_after_the_address_alone() -> None:
    item = parse_line("<10.0.0.5:5000> DISCONNECT", newline=True)
    assert item == LegacyControl(
        ControlWord.DISCONNECT, 5000, None, Dialect(Kind.ANGLE, newline=True), "10.0.0.5"
    )


def test_program_words_typed_by_a_person_stay_chat() -> None:
    # Only exit and quit are matched in any case; "ping" from a person is a message.
    item = parse_line("10.0.0.5:5000 Alice ping", newline=False)
    assert isinstance(item, LegacyMessage) and item.text == "ping"
    item = parse_line("10.0.0.5:5000 Alice exit now", newline=False)
    assert isinstance(item, LegacyMessage) and item.text == "exit now"


@pytest.mark.parametrize(
    "line",
    [
        "hello",  # no address
        "GET / HTTP/1.1",
        "10.0.0.5 Alice hi",  # no port
        "10.0.0.5:0 Alice hi",
        "10.0.0.5:65536 Alice hi",
        "10.0.0.5:\uff15\uff10\uff10\uff10 Alice hi",  # full-width digits
        "10.0.0.5:5000",  # nothing after the address
        "10.0.0.5:5000 Alice",  # no message
        "<10.0.0.5:5000> <Alice",  # unclosed team
        "<10.0.0.5:5000> <Alice> <>",
        ":5000 Alice hi",
        "\x00\x01\x02",
    ],
)
def test_malformed_lines_are_dropped_with_a_reason(line: str) -> None:
    item = parse_line(line, newline=False)
    assert isinstance(item, LegacyDropped) and item.reason


def test_team_name_is_bounded() -> None:
    item = parse_line("10.0.0.5:5000 " + "T" * 500 + " hi", newline=False)
    assert isinstance(item, LegacyMessage)
    assert len(item.team) == 33 and item.team.endswith("…")


# -- a connection ------------------------------------------------------------------


def test_one_shot_without_newline_is_read_at_end_of_stream() -> None:
    decoder = ConnectionDecoder()
    assert decoder.receive(plain_line("10.0.0.5:5000", "Alice", "hi")) == []
    assert messages(decoder.receive_eof()) == [(5000, "Alice", "hi", PLAIN)]


def test_several_lines_on_one_connection_each_arrive_as_read() -> None:
    decoder = ConnectionDecoder()
    data = b"".join(plain_line("10.0.0.5:5000", "A", f"m{i}", newline=True) for i in range(3))
    lines = Dialect(Kind.PLAIN, newline=True)
    assert messages(decoder.receive(data)) == [(5000, "A", f"m{i}", lines) for i in range(3)]
    assert decoder.receive_eof() == []


def test_crlf_lines() -> None:
    assert messages(decode_all(b"10.0.0.5:5000 A one\r\n10.0.0.5:5000 A two\r\n")) == [
        (5000, "A", "one", Dialect(Kind.PLAIN, newline=True)),
        (5000, "A", "two", Dialect(Kind.PLAIN, newline=True)),
    ]


def test_block_is_one_message_and_disconnect_follows() -> None:
    sender = BlockSender("10.0.0.9:6000", "Carol")
    data = sender.block(["first line", "", "third <line>"]) + b"<10.0.0.9:6000> DISCONNECT\n"
    items = decode_all(data)
    assert messages(items) == [(6000, "Carol", "first line\n\nthird <line>", BLOCK)]
    assert isinstance(items[1], LegacyControl) and items[1].word is ControlWord.DISCONNECT


def test_block_name_in_angle_brackets() -> None:
    items = decode_all(b"<10.0.0.9:6000> @ <Carol>\nhi\n<end>\n")
    assert messages(items) == [(6000, "Carol", "hi", BLOCK)]


def test_block_without_end_is_dropped() -> None:
    items = decode_all(b"<10.0.0.9:6000> @ Carol\nhalf a message\n")
    assert messages(items) == []
    assert isinstance(items[-1], LegacyDropped)


def test_empty_connection_gives_nothing() -> None:
    decoder = ConnectionDecoder()
    assert decoder.receive_eof() == []
    assert decoder.bytes_received == 0


def test_blank_lines_are_ignored() -> None:
    assert decode_all(b"\n\r\n  \n") == []


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    items = decode_all(b"10.0.0.5:5000 A caf\xe9 \xff\n")
    assert messages(items) == [(5000, "A", "caf\ufffd \ufffd", Dialect(Kind.PLAIN, newline=True))]


def test_a_one_megabyte_line_fails_the_connection_early() -> None:
    decoder = ConnectionDecoder()
    chunk = b"10.0.0.5:5000 A " + b"x" * 65536
    items: list[LegacyItem] = []
    fed = 0
    while decoder.failed is None and fed < 1024 * 1024:
        items += decoder.receive(chunk)
        fed += len(chunk)
        chunk = b"x" * 65536
    assert decoder.failed is not None
    assert fed <= LEGACY_MAX_LINE_BYTES + 65536  # stopped as soon as the line was too long
    assert messages(items) == [] and isinstance(items[-1], LegacyDropped)
    assert decoder.receive(b"10.0.0.5:5000 A hi\n") == []  # nothing more is read


def test_many_short_lines_in_one_read_are_all_decoded() -> None:
    line = b"10.0.0.5:5000 A x\n"
    data = line * (200_000 // len(line))
    decoder = ConnectionDecoder()
    assert len(decoder.receive(data)) == len(data) // len(line)


def test_total_bytes_of_a_connection_are_capped() -> None:
    decoder = ConnectionDecoder(max_total=1000)
    items = decoder.receive(b"10.0.0.5:5000 A hi\n" * 100)
    assert decoder.failed is not None and messages(items) == []


def test_message_over_the_text_limit_is_dropped() -> None:
    text = "y" * (LEGACY_MAX_MESSAGE_BYTES + 1)
    items = decode_all(plain_line("10.0.0.5:5000", "A", text))
    assert messages(items) == [] and isinstance(items[0], LegacyDropped)


@settings(max_examples=100, deadline=None)
@given(
    texts=st.lists(st.text(min_size=1, max_size=40).filter(str.strip), min_size=1, max_size=5),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
)
def test_how_the_bytes_are_split_never_matters(texts: list[str], cuts: list[int]) -> None:
    data = b"".join(
        plain_line("10.0.0.5:5000", "A", t.replace("\n", " ").replace("\r", " "), newline=True)
        for t in texts
    )
    whole = decode_all(data)
    decoder = ConnectionDecoder()
    pieces: list[LegacyItem] = []
    last = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        pieces += decoder.receive(data[last:cut])
        last = cut
    pieces += decoder.receive(data[last:]) + decoder.receive_eof()
    assert pieces == whole


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_any_bytes_decode_without_an_exception(data: bytes) -> None:
    for item in decode_all(data, KEY):
        assert isinstance(item, LegacyMessage | LegacyControl | LegacyDropped)


# -- the original's tokens ---------------------------------------------------------


def test_original_token_is_a_message_in_the_original_dialect() -> None:
    token = OriginalSender(KEY, "127.0.1.1:5000").token("hello")
    assert messages(decode_all(token, KEY)) == [(5000, "CryptoCrafters", "hello", ORIGINAL)]


def test_original_exit_is_a_control_word() -> None:
    token = OriginalSender(KEY, "127.0.1.1:5000").token("Exit")
    (item,) = decode_all(token, KEY)
    assert isinstance(item, LegacyControl) and item.word is ControlWord.EXIT
    assert item.port == 5000 and item.dialect == ORIGINAL


def test_token_without_a_key_or_with_another_key_is_dropped_with_the_reason() -> None:
    token = OriginalSender(KEY, "127.0.1.1:5000").token("hello")
    assert decode_all(token) == [LegacyDropped(NO_KEY)]
    assert decode_all(token, Fernet.generate_key()) == [LegacyDropped(WRONG_KEY)]


def test_token_size_matches_fernet() -> None:
    key = LegacyKey(KEY)
    for size in [0, 1, 15, 16, 17, 700, 703, 704, 2000]:
        assert len(key.encrypt(b"x" * size, 0)) == token_size(size)


def test_longest_text_the_original_reads_whole() -> None:
    # The issue: a token over 1024 bytes, a plaintext over about 700, is lost there.
    most = longest_original_text(6000, "Alice")
    header = len("255.255.255.255:6000 Alice ")
    assert token_size(header + most) <= LEGACY_ORIGINAL_READ < token_size(header + most + 1)
    assert 650 < header + most <= 703
    assert original_problem(6000, "Alice", "x" * most) is None
    problem = original_problem(6000, "Alice", "x" * (most + 1))
    assert problem is not None and "1024" in problem and str(most) in problem


def test_encoded_message_is_read_by_the_original() -> None:
    key = LegacyKey(KEY)
    token = encode_message(key, "192.168.1.5", 6000, "Alice", "hi there", 1_700_000_000)
    assert len(token) <= LEGACY_ORIGINAL_READ
    assert Fernet(KEY).decrypt(token) == b"192.168.1.5:6000 Alice hi there"
    with pytest.raises(ValueError, match="1024"):
        encode_message(key, "192.168.1.5", 6000, "Alice", "x" * 1000, 1_700_000_000)


def test_beacons_both_ways() -> None:
    key = LegacyKey(KEY)
    ours = encode_beacon(key, "Alice", 6000, 1_700_000_000)
    assert Fernet(KEY).decrypt(ours) == b"Alice:6000"
    beacon = decode_beacon(key, original_beacon(KEY, "Bob the 2nd", 5001))
    assert beacon is not None and (beacon.name, beacon.port) == ("Bob the 2nd", 5001)


@pytest.mark.parametrize(
    "plaintext", [b"Bob", b"Bob:", b":5000", b"Bob:0", b"Bob:99999", b"Bob:5\xef\xbc\x95"]
)
def test_bad_beacons_are_ignored(plaintext: bytes) -> None:
    assert decode_beacon(LegacyKey(KEY), Fernet(KEY).encrypt(plaintext)) is None


def test_beacon_noise_is_ignored() -> None:
    key = LegacyKey(KEY)
    assert decode_beacon(key, b"PCHB\x01" + b"\x00" * 100) is None
    assert decode_beacon(key, b"gAAAAA" + b"A" * 2000) is None
    assert decode_beacon(key, original_beacon(Fernet.generate_key(), "Bob", 5001)) is None


def test_legacy_key_from_file_content() -> None:
    assert repr(LegacyKey.from_file_content(KEY + b"\n")) == "LegacyKey(...)"
    for bad in [b"", b"not a key", b"x" * 5000]:
        with pytest.raises(LegacyKeyError):
            LegacyKey.from_file_content(bad)


# -- writing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialect", "wire"),
    [
        (PLAIN, b"10.0.0.1:6000 Alice hi there"),
        (Dialect(Kind.PLAIN, newline=True), b"10.0.0.1:6000 Alice hi there\n"),
        (Dialect(Kind.ANGLE), b"<10.0.0.1:6000> <Alice> <hi there>"),
        (BLOCK, b"<10.0.0.1:6000> @ Alice\nhi there\n<end>\n"),
    ],
)
def test_each_dialect_reads_back_as_written(dialect: Dialect, wire: bytes) -> None:
    data = encode_text(dialect, "10.0.0.1", 6000, "Alice", "hi there")
    assert data == wire
    assert messages(decode_all(data)) == [(6000, "Alice", "hi there", dialect)]


@pytest.mark.parametrize("text", ["", "  ", "two\nlines", "cr\rhere", "x" * 70_000])
def test_text_that_cannot_be_written_is_refused(text: str) -> None:
    assert check_outgoing(text, PLAIN) is not None
    with pytest.raises(ValueError):
        encode_text(PLAIN, "10.0.0.1", 6000, "Alice", text)
    assert check_outgoing("<end>", BLOCK) is not None
