"""A signed beacon in a DNS-SD TXT record, pure: split into TXT strings and put back together.

A peer's mDNS record carries its own current beacon (the bytes of
beacon.py's format, signed as for a broadcast), so that a peer found by mDNS
is judged by the same rules as one found by broadcast. A TXT string holds at
most 255 bytes (RFC 6763, section 6.1), a beacon up to BEACON_MAX_SIZE, so the
beacon goes in chunks under the keys "b0", "b1", ...: every chunk but the last
exactly CHUNK_BYTES long, values binary (section 6.5). A 3072-bit key and a
short name make four chunks and a whole record of about 930 bytes; a 4096-bit
key and the longest name five, about 1280 bytes: within the 1300 that section
6.2 suggests. A reader takes at most MAX_CHUNKS.

Reading is bounded before anything else: the number of chunk keys, then their
set, then each length and the total; only then are the chunks joined.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Final

from peerchat.errors import ProtocolError
from peerchat.limits import BEACON_MAX_SIZE

KEY_PREFIX: Final = "b"
CHUNK_BYTES: Final = 252  # "bN=" and the value fill one TXT string of 255 bytes
MAX_CHUNKS: Final = math.ceil(BEACON_MAX_SIZE / CHUNK_BYTES)  # a single digit: "b0".."b8"

_CHUNK_KEY: Final = re.compile(rb"[bB][0-9]+")


def beacon_chunks(beacon: bytes) -> dict[str, bytes]:
    """TXT properties that carry `beacon`: {"b0": ..., "b1": ...}."""
    if not 0 < len(beacon) <= BEACON_MAX_SIZE:
        raise ValueError(f"a beacon of {len(beacon)} bytes does not fit")
    return {
        f"{KEY_PREFIX}{i}": beacon[start : start + CHUNK_BYTES]
        for i, start in enumerate(range(0, len(beacon), CHUNK_BYTES))
    }


def beacon_from_txt(properties: Mapping[bytes, bytes | None]) -> bytes | None:
    """The beacon carried by a record's TXT properties; None if it carries none.

    ProtocolError for chunks that cannot be a beacon written by `beacon_chunks`.
    Keys compare without case (RFC 6763, section 6.4). Nothing here checks the
    beacon itself: that is the beacon filter's work.
    """
    keys = [key for key in properties if _CHUNK_KEY.fullmatch(key)]
    if not keys:
        return None
    if len(keys) > MAX_CHUNKS:
        raise ProtocolError(f"{len(keys)} beacon chunks, at most {MAX_CHUNKS}")
    order = {key.lower(): key for key in keys}
    expected = [f"{KEY_PREFIX}{i}".encode() for i in range(len(keys))]
    if sorted(order) != sorted(expected):
        raise ProtocolError("beacon chunks are not b0 to bN, each once")
    chunks = [properties[order[key]] for key in expected]
    total = 0
    for i, chunk in enumerate(chunks):
        if chunk is None or not 0 < len(chunk) <= CHUNK_BYTES:
            raise ProtocolError(f"beacon chunk {i} has a bad length")
        if i < len(chunks) - 1 and len(chunk) != CHUNK_BYTES:
            raise ProtocolError(f"beacon chunk {i} is short")
        total += len(chunk)
    if total > BEACON_MAX_SIZE:
        raise ProtocolError(f"beacon of {total} bytes exceeds {BEACON_MAX_SIZE}")
    return b"".join(chunk for chunk in chunks if chunk is not None)
