"""A signed beacon in a DNS-SD TXT record: chunks, bounds, and the way back."""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from zeroconf.asyncio import AsyncServiceInfo

from crypto_utils import Identity
from peerchat.errors import ProtocolError
from peerchat.limits import BEACON_MAX_SIZE, MAX_NAME_CHARS
from peerchat.net.mdns import SERVICE_TYPE
from peerchat.protocol.beacon import decode_beacon, encode_beacon
from peerchat.protocol.beacon_txt import (
    CHUNK_BYTES,
    MAX_CHUNKS,
    beacon_chunks,
    beacon_from_txt,
)

NOW = 1_700_000_000.0
RUN = bytes(range(16))


@cache
def identity(bits: int) -> Identity:
    return Identity.generate(bits)


def beacon(bits: int = 3072, name: str = "Alice") -> bytes:
    return encode_beacon(identity(bits), name, 5000, RUN, 7, NOW)


def txt_of(properties: Mapping[str, str | bytes]) -> AsyncServiceInfo:
    """The record as zeroconf writes it, read back as a browser reads it."""
    props: dict[str | bytes, str | bytes | None] = {k: v for k, v in properties.items()}
    written = AsyncServiceInfo(SERVICE_TYPE, f"x.{SERVICE_TYPE}", port=5000, properties=props)
    return AsyncServiceInfo(SERVICE_TYPE, f"x.{SERVICE_TYPE}", properties=written.text)


def strings(text: bytes) -> list[bytes]:
    """The TXT strings of a TXT record's wire form (each a length byte, then its bytes)."""
    out, i = [], 0
    while i < len(text):
        out.append(text[i + 1 : i + 1 + text[i]])
        i += 1 + text[i]
    return out


def test_a_usual_beacon_is_four_strings_and_the_record_stays_small() -> None:
    data = beacon(3072)
    info = txt_of({"v": "1", "fp": identity(3072).fingerprint, **beacon_chunks(data)})
    assert [s.split(b"=")[0] for s in strings(info.text)] == [
        b"v",
        b"fp",
        b"b0",
        b"b1",
        b"b2",
        b"b3",
    ]
    assert all(len(s) <= 255 for s in strings(info.text))
    assert len(info.text) < 1000  # RFC 6763 6.2: keep the whole TXT record under 1300
    assert beacon_from_txt(info.properties) == data
    assert decode_beacon(data)[0].fingerprint == identity(3072).fingerprint


def test_a_4096_bit_key_and_the_longest_name_fit_in_five_strings() -> None:
    data = beacon(4096, "漢" * MAX_NAME_CHARS)
    chunks = beacon_chunks(data)
    assert len(chunks) == math.ceil(len(data) / CHUNK_BYTES) == 5
    info = txt_of({"v": "1", **chunks})
    assert all(len(s) <= 255 for s in strings(info.text))
    assert beacon_from_txt(info.properties) == data


def test_a_record_without_chunks_carries_no_beacon() -> None:
    assert beacon_from_txt({b"v": b"1", b"fp": b"x", b"bx": b"1", b"b": b"2"}) is None


def chunked(sizes: list[int]) -> dict[bytes, bytes | None]:
    return {f"b{i}".encode(): b"x" * n for i, n in enumerate(sizes)}


@pytest.mark.parametrize(
    ("properties", "problem"),
    [
        ({**chunked([CHUNK_BYTES] * MAX_CHUNKS), b"b9": None}, "at most"),
        ({b"b0": b"x" * CHUNK_BYTES, b"b2": b"y"}, "b0 to bN"),
        ({b"b1": b"y"}, "b0 to bN"),
        ({b"b0": b"x", b"B0": b"y"}, "b0 to bN"),
        ({b"b0": b"x" * CHUNK_BYTES, b"b01": b"y"}, "b0 to bN"),
        ({b"b0": b"x" * 100, b"b1": b"y"}, "short"),
        ({b"b0": b"x" * CHUNK_BYTES, b"b1": b""}, "bad length"),
        ({b"b0": None}, "bad length"),
        ({b"b0": b"x" * (CHUNK_BYTES + 1)}, "bad length"),
        (chunked([CHUNK_BYTES] * MAX_CHUNKS), f"exceeds {BEACON_MAX_SIZE}"),
    ],
)
def test_chunks_that_cannot_be_a_beacon_are_refused(
    properties: dict[bytes, bytes | None], problem: str
) -> None:
    with pytest.raises(ProtocolError, match=problem):
        beacon_from_txt(properties)


def test_the_count_is_checked_before_any_chunk_is_looked_at() -> None:
    class Untouchable(dict[bytes, bytes | None]):
        def __getitem__(self, key: bytes) -> bytes | None:
            raise AssertionError("a chunk was read")

    flood = Untouchable({f"b{i}".encode(): None for i in range(1000)})
    with pytest.raises(ProtocolError, match="1000 beacon chunks"):
        beacon_from_txt(flood)


def test_chunks_keys_ignore_case_as_dns_sd_keys_do() -> None:
    data = beacon(2048)
    chunks = {key.upper().encode(): value for key, value in beacon_chunks(data).items()}
    assert beacon_from_txt(chunks) == data


def test_a_beacon_too_large_to_carry_is_refused_when_written() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        beacon_chunks(b"x" * (BEACON_MAX_SIZE + 1))
    with pytest.raises(ValueError, match="does not fit"):
        beacon_chunks(b"")


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([b"b0", b"b1", b"b2", b"B3", b"b4", b"b10", b"v", b"fp"]),
        st.one_of(st.none(), st.binary(max_size=300)),
    )
)
def test_any_properties_give_a_beacon_none_or_a_protocol_error(
    properties: dict[bytes, bytes | None],
) -> None:
    try:
        found = beacon_from_txt(properties)
    except ProtocolError:
        return
    assert found is None or 0 < len(found) <= BEACON_MAX_SIZE


@pytest.mark.parametrize("size", [1, CHUNK_BYTES + 1, BEACON_MAX_SIZE])
def test_the_smallest_and_the_largest_beacon_go_there_and_back(size: int) -> None:
    data = bytes(i % 251 for i in range(size))
    chunks = beacon_chunks(data)
    assert [len(v) for v in chunks.values()][-1] == (size - 1) % CHUNK_BYTES + 1
    assert beacon_from_txt({key.encode(): value for key, value in chunks.items()}) == data


def test_a_beacon_one_byte_past_the_largest_is_refused_when_read() -> None:
    last = BEACON_MAX_SIZE - (MAX_CHUNKS - 1) * CHUNK_BYTES
    with pytest.raises(
        ProtocolError, match=f"{BEACON_MAX_SIZE + 1} bytes exceeds {BEACON_MAX_SIZE}"
    ):
        beacon_from_txt(chunked([CHUNK_BYTES] * (MAX_CHUNKS - 1) + [last + 1]))


def test_chunk_keys_out_of_order_are_refused_with_the_reason() -> None:
    with pytest.raises(ProtocolError) as refused:
        beacon_from_txt({b"b1": b"y"})
    assert str(refused.value) == "beacon chunks are not b0 to bN, each once"
