from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerchat.errors import ProtocolError
from peerchat.limits import MAX_FRAME_SIZE
from peerchat.protocol.framing import FrameDecoder, encode_frame


def header(size: int) -> bytes:
    return struct.pack(">I", size)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def test_encode_frame_prefixes_big_endian_length() -> None:
    assert encode_frame(b"hello") == b"\x00\x00\x00\x05hello"


@pytest.mark.parametrize("size", [0, MAX_FRAME_SIZE + 1])
def test_encode_frame_refuses_empty_and_oversized_bodies(size: int) -> None:
    with pytest.raises(ProtocolError):
        encode_frame(b"x" * size)


def test_largest_frame_round_trips() -> None:
    body = bytes(range(256)) * (MAX_FRAME_SIZE // 256)
    assert len(body) == MAX_FRAME_SIZE
    assert FrameDecoder().feed(encode_frame(body)) == [body]


def test_several_frames_in_one_chunk_come_out_in_order() -> None:
    stream = encode_frame(b"one") + encode_frame(b"two") + encode_frame(b"three")
    assert FrameDecoder().feed(stream) == [b"one", b"two", b"three"]


def test_byte_at_a_time_yields_each_frame_when_its_last_byte_arrives() -> None:
    decoder = FrameDecoder()
    stream = encode_frame(b"ab") + encode_frame(b"c")
    out = [decoder.feed(stream[i : i + 1]) for i in range(len(stream))]
    assert out == [[]] * 5 + [[b"ab"]] + [[]] * 4 + [[b"c"]]
    assert decoder.buffered == 0
    decoder.close()


def test_buffered_counts_an_incomplete_frame() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(b"abcdef")[:7]) == []
    assert decoder.buffered == 7


def test_zero_length_prefix_is_refused() -> None:
    with pytest.raises(ProtocolError, match="length 0"):
        FrameDecoder().feed(header(0))


def test_oversized_prefix_is_refused_from_the_header_alone() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(header(MAX_FRAME_SIZE)[:3]) == []
    with pytest.raises(ProtocolError, match="outside"):
        decoder.feed(header(MAX_FRAME_SIZE + 1)[3:])  # no body byte was ever sent
    assert decoder.buffered == 0


def test_custom_limit_applies() -> None:
    decoder = FrameDecoder(max_frame_size=10)
    assert decoder.feed(encode_frame(b"x" * 10)) == [b"x" * 10]
    with pytest.raises(ProtocolError):
        decoder.feed(header(11))


def test_one_whole_oversized_frame_in_one_chunk_is_refused() -> None:
    decoder = FrameDecoder(max_frame_size=10)
    with pytest.raises(ProtocolError, match="outside"):
        decoder.feed(header(11) + b"x" * 11)


@pytest.mark.parametrize("limit", [0, MAX_FRAME_SIZE + 1])
def test_a_limit_outside_the_protocol_range_is_a_local_error(limit: int) -> None:
    with pytest.raises(ValueError, match=r"^max_frame_size must be in 1\.\.131072$"):
        FrameDecoder(max_frame_size=limit)


def test_a_failed_decoder_stays_failed() -> None:
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError, match=r"^frame length 0 is outside 1\.\.131072$"):
        decoder.feed(header(0))
    with pytest.raises(ProtocolError, match=r"^frame length 0 is outside 1\.\.131072$"):
        decoder.feed(encode_frame(b"fine"))


def test_close_on_a_truncated_stream_raises() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(b"whole") + encode_frame(b"cut short")[:-1])
    with pytest.raises(ProtocolError, match="ended inside a frame"):
        decoder.close()


def test_close_inside_a_header_raises() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\x00\x00")
    with pytest.raises(ProtocolError):
        decoder.close()


def test_clean_close_then_more_data_raises() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(b"done"))
    decoder.close()
    with pytest.raises(ProtocolError, match=r"^frame stream already ended$"):
        decoder.feed(b"\x00")


def test_max_frames_leaves_the_rest_buffered_under_a_new_limit() -> None:
    decoder = FrameDecoder(max_frame_size=8)
    stream = encode_frame(b"small") + encode_frame(b"x" * 100)
    assert decoder.feed(stream, 1) == [b"small"]
    decoder.max_frame_size = MAX_FRAME_SIZE  # the second frame is only judged now
    assert decoder.feed(b"") == [b"x" * 100]


@given(
    bodies=st.lists(st.binary(min_size=1, max_size=300), max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
)
def test_round_trip_under_any_chunking(bodies: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(b) for b in bodies)
    decoder = FrameDecoder()
    out: list[bytes] = []
    for chunk in chunked(stream, cuts):
        out += decoder.feed(chunk)
    assert out == bodies
    decoder.close()


@given(
    bodies=st.lists(st.binary(min_size=1, max_size=50), min_size=1, max_size=10),
    cut=st.integers(min_value=1),
)
def test_a_stream_cut_inside_a_frame_fails_at_close(bodies: list[bytes], cut: int) -> None:
    stream = b"".join(encode_frame(b) for b in bodies)
    cut = 1 + cut % (len(encode_frame(bodies[-1])) - 1)  # always inside the last frame
    decoder = FrameDecoder()
    assert decoder.feed(stream[:-cut]) == bodies[:-1]
    with pytest.raises(ProtocolError):
        decoder.close()


@given(chunks=st.lists(st.binary(max_size=64), max_size=20), limit=st.integers(1, 300))
def test_arbitrary_bytes_raise_nothing_but_protocol_error(chunks: list[bytes], limit: int) -> None:
    decoder = FrameDecoder(max_frame_size=limit)
    try:
        for chunk in chunks:
            for frame in decoder.feed(chunk):
                assert 0 < len(frame) <= limit
        decoder.close()
    except ProtocolError:
        pass


@pytest.mark.parametrize("size", [0, MAX_FRAME_SIZE + 1])
def test_encode_frame_says_why_a_body_is_refused(size: int) -> None:
    with pytest.raises(
        ProtocolError, match=rf"^frame body of {size} bytes is outside 1\.\.131072$"
    ):
        encode_frame(b"x" * size)


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_frames_fed_as_other_buffers_come_out_as_bytes(kind: type) -> None:
    """asyncio may hand over a bytearray; the frames must not share (or be) its buffer."""
    stream = encode_frame(b"one") + encode_frame(b"two")
    for data in (stream, stream[:5]):
        frames = FrameDecoder().feed(kind(data))
        assert all(type(frame) is bytes for frame in frames)
    assert FrameDecoder().feed(kind(encode_frame(b"whole"))) == [b"whole"]


def test_max_frames_zero_keeps_even_a_whole_frame_buffered() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(b"later"), max_frames=0) == []
    assert decoder.buffered == len(encode_frame(b"later"))
    assert decoder.feed(b"") == [b"later"]


def test_a_first_chunk_shorter_than_its_frame_is_not_taken_for_a_whole_frame() -> None:
    """The one-frame shortcut must compare the length with the body, not the chunk."""
    chunk = header(14) + b"x" * 6  # 10 bytes, 4 short of the 14-byte body
    decoder = FrameDecoder()
    assert decoder.feed(chunk) == []
    assert decoder.feed(b"y" * 8) == [b"x" * 6 + b"y" * 8]
