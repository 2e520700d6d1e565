"""The code and the safety number: what both sides derive, and what any change does to it."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crypto_utils import fingerprint_of
from peerchat.protocol import sas
from peerchat.protocol.sas import SasContext

ALICE = fingerprint_of(b"alice's key")
BOB = fingerprint_of(b"bob's key")
CAROL = fingerprint_of(b"carol's key")
H = hashlib.sha256(b"one session").digest()
ATTEMPT = bytes(range(16))
Q = b"\x11" * 32  # requester's nonce
R = b"\x22" * 32  # responder's nonce


def ctx(own: str = ALICE, peer: str = BOB, h: bytes = H, attempt: bytes = ATTEMPT) -> SasContext:
    return SasContext.create(h, attempt, own, peer)


def test_both_sides_build_the_same_context_and_code() -> None:
    alice_side = ctx(ALICE, BOB)
    bob_side = ctx(BOB, ALICE)
    assert alice_side == bob_side
    assert sas.short_code(alice_side, Q, R) == sas.short_code(bob_side, Q, R)


def test_code_is_six_digits_and_shown_as_two_groups() -> None:
    code = sas.short_code(ctx(), Q, R)
    assert len(code) == 6 and code.isdigit()
    assert sas.format_code("093201") == "093 201"


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param(lambda: sas.short_code(ctx(h=bytes(32)), Q, R), id="handshake hash"),
        pytest.param(lambda: sas.short_code(ctx(attempt=bytes(16)), Q, R), id="attempt"),
        pytest.param(lambda: sas.short_code(ctx(ALICE, CAROL), Q, R), id="peer fingerprint"),
        pytest.param(lambda: sas.short_code(ctx(CAROL, BOB), Q, R), id="own fingerprint"),
        pytest.param(lambda: sas.short_code(ctx(), b"\x12" + Q[1:], R), id="requester nonce"),
        pytest.param(lambda: sas.short_code(ctx(), Q, R[:-1] + b"\x23"), id="responder nonce"),
        pytest.param(lambda: sas.short_code(ctx(), R, Q), id="nonces swapped"),
    ],
)
def test_code_changes_when_any_input_changes(changed: object) -> None:
    assert callable(changed)
    assert changed() != sas.short_code(ctx(), Q, R)


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_codes_of_different_nonces_are_digits_and_agree_across_sides(q: bytes, r: bytes) -> None:
    code = sas.short_code(ctx(ALICE, BOB), q, r)
    assert code == sas.short_code(ctx(BOB, ALICE), q, r)
    assert len(code) == 6 and code.isdigit()


def test_codes_spread_over_the_digit_space() -> None:
    # 2,000 nonces: a fixed code, or one stuck on a few values, would show here.
    codes = {sas.short_code(ctx(), i.to_bytes(32, "big"), R) for i in range(2000)}
    assert len(codes) > 1990
    assert {c[0] for c in codes} == set("0123456789")


def test_commitment_opens_only_with_its_nonce_and_context() -> None:
    c = sas.commitment(ctx(), R)
    assert len(c) == 32
    assert sas.opens(ctx(), c, R)
    assert sas.opens(ctx(BOB, ALICE), c, R)  # the other side checks the same commitment
    assert not sas.opens(ctx(), c, Q)
    assert not sas.opens(ctx(), c, R[:31])
    assert not sas.opens(ctx(h=bytes(32)), c, R)  # made in another session
    assert not sas.opens(ctx(attempt=bytes(16)), c, R)  # for another attempt
    assert not sas.opens(ctx(ALICE, CAROL), c, R)  # between other keys
    assert not sas.opens(ctx(), bytes(32), R)


def test_context_refuses_what_would_make_an_ambiguous_input() -> None:
    with pytest.raises(ValueError):
        SasContext.create(H[:31], ATTEMPT, ALICE, BOB)
    with pytest.raises(ValueError):
        SasContext.create(H, ATTEMPT[:15], ALICE, BOB)
    with pytest.raises(ValueError):
        SasContext.create(H, ATTEMPT, ALICE, ALICE)
    with pytest.raises(ValueError):
        SasContext.create(H, ATTEMPT, ALICE, "not a fingerprint")
    with pytest.raises(ValueError):
        sas.short_code(ctx(), Q[:16], R)


def test_fresh_nonces_and_attempt_ids() -> None:
    assert len({sas.new_nonce() for _ in range(50)}) == 50
    assert all(len(sas.new_attempt_id()) == 16 for _ in range(5))


# -- safety numbers --------------------------------------------------------------


def test_safety_number_is_the_same_on_both_sides_and_sixty_digits() -> None:
    number = sas.safety_number(ALICE, BOB)
    assert number == sas.safety_number(BOB, ALICE)
    assert len(number) == 60 and number.isdigit()
    lines = sas.format_safety_number(number)
    assert len(lines) == 3
    assert all(len(line.split()) == 4 for line in lines)
    assert "".join(line.replace(" ", "") for line in lines) == number


def test_safety_number_changes_with_either_key_and_keeps_each_half() -> None:
    ab = sas.safety_number(ALICE, BOB)
    ac = sas.safety_number(ALICE, CAROL)
    bc = sas.safety_number(BOB, CAROL)
    assert len({ab, ac, bc}) == 3

    def halves(number: str) -> set[str]:
        return {number[:30], number[30:]}

    # Each key owns one half, so a user's own half is the same in every number.
    alice_half = halves(ab) & halves(ac)
    assert len(alice_half) == 1
    assert alice_half == halves(ab) & halves(sas.safety_number(ALICE, fingerprint_of(b"dave")))
    assert len(halves(ab) & halves(bc)) == 1  # Bob's


def test_safety_number_half_is_iterated_sha256_of_the_fingerprint() -> None:
    # Independent restatement of the construction in docs/PROTOCOL.md.
    data = ALICE.encode()
    digest = hashlib.sha256(b"peer_chat/1 safety number\x00" + data).digest()
    for _ in range(5200):
        digest = hashlib.sha256(digest + data).digest()
    expected = "".join(
        f"{int.from_bytes(digest[i : i + 5], 'big') % 100000:05d}" for i in range(0, 30, 5)
    )
    number = sas.safety_number(ALICE, BOB)
    assert expected in (number[:30], number[30:])


def test_safety_number_needs_fingerprints() -> None:
    with pytest.raises(ValueError):
        sas.safety_number(ALICE, "alice")
