"""What two people compare to verify each other: a six-digit code, or a safety number.

Pure functions over hashlib/hmac (SHA-256, HMAC-SHA256). docs/PROTOCOL.md,
"Comparing a code", gives the construction and why it holds against a man in
the middle; in short:

- A **code** belongs to one comparison attempt in one session. The responder
  commits to a fresh nonce (`commitment`), the requester then sends its own
  nonce in the clear, the responder opens its commitment. The code is
  HMAC-SHA256 keyed with the session's Noise handshake hash over both
  fingerprints (canonical order), the attempt id and both nonces, reduced to
  six digits. Each side's nonce is fixed before it sees the other's, so
  neither side (nor a relay between two sessions) can steer the code.
- A **safety number** belongs to a pair of keys, for ever: 30 digits derived
  from each fingerprint by iterated hashing, the two halves in canonical
  order, 60 digits in 12 groups of five. Each half depends on one key only, so
  a user's own half is the same in every safety number they have.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Final

from crypto_utils import is_fingerprint
from peerchat.limits import SAFETY_NUMBER_ITERATIONS
from peerchat.protocol.messages import ATTEMPT_ID_BYTES, COMMITMENT_BYTES, VERIFY_NONCE_BYTES

CODE_DIGITS: Final = 6
HANDSHAKE_HASH_BYTES: Final = 32  # SHA-256, the Noise hash of peer_chat

COMMIT_LABEL: Final = b"peer_chat/1 sas commit\x00"
CODE_LABEL: Final = b"peer_chat/1 sas code\x00"
SAFETY_LABEL: Final = b"peer_chat/1 safety number\x00"

_CODE_MODULUS: Final = 10**CODE_DIGITS
_SAFETY_CHUNKS: Final = 6  # per side: 6 chunks of 5 bytes, each to 5 digits
_SAFETY_CHUNK_BYTES: Final = 5
_SAFETY_GROUP: Final = 5  # digits per group on screen
_SAFETY_GROUPS_PER_LINE: Final = 4


def new_attempt_id() -> bytes:
    return secrets.token_bytes(ATTEMPT_ID_BYTES)


def new_nonce() -> bytes:
    return secrets.token_bytes(VERIFY_NONCE_BYTES)


@dataclass(frozen=True)
class SasContext:
    """What one comparison attempt is bound to; both honest sides build the same one."""

    handshake_hash: bytes
    attempt: bytes
    fingerprints: bytes  # both fingerprints, ASCII, the smaller first

    @classmethod
    def create(cls, handshake_hash: bytes, attempt: bytes, own_fp: str, peer_fp: str) -> SasContext:
        if len(handshake_hash) != HANDSHAKE_HASH_BYTES:
            raise ValueError(f"handshake hash must be {HANDSHAKE_HASH_BYTES} bytes")
        if len(attempt) != ATTEMPT_ID_BYTES:
            raise ValueError(f"attempt id must be {ATTEMPT_ID_BYTES} bytes")
        if not (is_fingerprint(own_fp) and is_fingerprint(peer_fp)) or own_fp == peer_fp:
            raise ValueError("two different canonical fingerprints are needed")
        low, high = sorted((own_fp, peer_fp))
        return cls(handshake_hash, attempt, (low + high).encode("ascii"))


def commitment(ctx: SasContext, nonce: bytes) -> bytes:
    """The responder's commitment to its nonce, bound to this session and attempt.

    Every field has a fixed length, so the concatenation is unambiguous.
    """
    _check_nonce(nonce)
    data = COMMIT_LABEL + ctx.handshake_hash + ctx.attempt + ctx.fingerprints + nonce
    digest = hashlib.sha256(data).digest()
    assert len(digest) == COMMITMENT_BYTES
    return digest


def opens(ctx: SasContext, commitment_value: bytes, nonce: bytes) -> bool:
    """Whether `nonce` is the one `commitment_value` was made to (in this context)."""
    if len(nonce) != VERIFY_NONCE_BYTES:
        return False
    return hmac.compare_digest(commitment(ctx, nonce), commitment_value)


def short_code(ctx: SasContext, requester_nonce: bytes, responder_nonce: bytes) -> str:
    """The six digits both screens show, as a string with leading zeros."""
    _check_nonce(requester_nonce)
    _check_nonce(responder_nonce)
    data = CODE_LABEL + ctx.attempt + ctx.fingerprints + requester_nonce + responder_nonce
    mac = hmac.digest(ctx.handshake_hash, data, "sha256")
    # 64 bits reduced mod 10^6: the bias is below 10^-13, nothing a guess could use.
    value = int.from_bytes(mac[:8], "big") % _CODE_MODULUS
    return f"{value:0{CODE_DIGITS}d}"


def format_code(code: str) -> str:
    """Six digits as two groups of three ("493 201"), easier to read aloud."""
    half = len(code) // 2
    return f"{code[:half]} {code[half:]}"


def _check_nonce(nonce: bytes) -> None:
    if len(nonce) != VERIFY_NONCE_BYTES:
        raise ValueError(f"nonce must be {VERIFY_NONCE_BYTES} bytes")


# -- safety numbers ------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _safety_half(fingerprint: str) -> str:
    """30 digits that depend on one key only (cached: each costs thousands of hashes)."""
    data = fingerprint.encode("ascii")
    digest = hashlib.sha256(SAFETY_LABEL + data).digest()
    for _ in range(SAFETY_NUMBER_ITERATIONS):
        digest = hashlib.sha256(digest + data).digest()
    step = _SAFETY_CHUNK_BYTES
    return "".join(
        f"{int.from_bytes(digest[i : i + step], 'big') % 10**_SAFETY_GROUP:0{_SAFETY_GROUP}d}"
        for i in range(0, _SAFETY_CHUNKS * step, step)
    )


def safety_number(fp_a: str, fp_b: str) -> str:
    """60 digits for a pair of keys, the same whichever side computes it."""
    if not (is_fingerprint(fp_a) and is_fingerprint(fp_b)):
        raise ValueError("safety numbers are made from canonical fingerprints")
    low, high = sorted((fp_a, fp_b))
    return _safety_half(low) + _safety_half(high)


def format_safety_number(number: str) -> list[str]:
    """Lines of four five-digit groups (three lines for 60 digits)."""
    groups = [number[i : i + _SAFETY_GROUP] for i in range(0, len(number), _SAFETY_GROUP)]
    per_line = _SAFETY_GROUPS_PER_LINE
    return [" ".join(groups[i : i + per_line]) for i in range(0, len(groups), per_line)]
