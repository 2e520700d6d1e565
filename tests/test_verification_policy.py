"""One comparison attempt on each side, wired back to back in memory; and the failure limit."""

from __future__ import annotations

import hashlib

import pytest

from crypto_utils import fingerprint_of
from peerchat import limits
from peerchat.events import Ending
from peerchat.policy.verification import Attempt, Binding, FailureLimiter, Stage
from peerchat.protocol import sas
from peerchat.protocol.messages import (
    VERIFY_MESSAGE_TYPES,
    AbortReason,
    Message,
    VerifyAbort,
    VerifyCommit,
    VerifyConfirm,
    VerifyMessage,
    VerifyRequest,
    VerifyReveal,
)

ALICE = fingerprint_of(b"alice's key")
BOB = fingerprint_of(b"bob's key")
H = hashlib.sha256(b"one session").digest()
ATTEMPT = b"\x07" * 16
Q = b"\x11" * 32  # Alice's nonce (she asks)
R = b"\x22" * 32  # Bob's nonce (he commits)


def verify_messages(messages: list[Message]) -> list[VerifyMessage]:
    out: list[VerifyMessage] = []
    for m in messages:
        assert isinstance(m, VERIFY_MESSAGE_TYPES)
        out.append(m)
    return out


def deliver(to: Attempt, messages: list[Message], now: float = 1.0) -> list[Message]:
    out: list[Message] = []
    for m in verify_messages(messages):
        out += to.receive(m, now)
    return out


def comparing(h_alice: bytes = H, h_bob: bytes = H) -> tuple[Attempt, Attempt]:
    """Alice asks Bob; both run the exchange until they show a code."""
    alice, out = Attempt.request(Binding(h_alice, ALICE, BOB), 0.0, attempt_id=ATTEMPT, nonce=Q)
    request = out[0]
    assert isinstance(request, VerifyRequest)
    bob, commit = Attempt.respond(Binding(h_bob, BOB, ALICE), request, 0.0, nonce=R)
    reveal_q = deliver(alice, commit)
    reveal_r = deliver(bob, reveal_q)
    assert deliver(alice, reveal_r) == []
    return alice, bob


def test_both_sides_show_the_same_code_bound_to_the_session() -> None:
    alice, bob = comparing()
    assert alice.stage is Stage.COMPARING and bob.stage is Stage.COMPARING
    assert alice.code is not None and alice.code == bob.code
    expected_ctx = sas.SasContext.create(H, ATTEMPT, ALICE, BOB)
    assert alice.code == sas.short_code(expected_ctx, Q, R)


def test_the_exchange_is_request_commit_reveal_reveal() -> None:
    alice, out = Attempt.request(Binding(H, ALICE, BOB), 0.0, attempt_id=ATTEMPT, nonce=Q)
    assert out == [VerifyRequest(ATTEMPT)]
    request = out[0]
    assert isinstance(request, VerifyRequest)
    bob, commit = Attempt.respond(Binding(H, BOB, ALICE), request, 0.0, nonce=R)
    assert commit == [VerifyCommit(ATTEMPT, sas.commitment(bob.ctx, R))]
    # Alice's nonce goes out only after Bob's commitment came in, Bob's only after hers.
    assert deliver(alice, commit) == [VerifyReveal(ATTEMPT, Q)]
    assert bob.code is None
    assert deliver(bob, [VerifyReveal(ATTEMPT, Q)]) == [VerifyReveal(ATTEMPT, R)]


@pytest.mark.parametrize("alice_first", [True, False])
def test_yes_on_both_sides_verifies_both_in_either_order(alice_first: bool) -> None:
    alice, bob = comparing()
    first, second = (alice, bob) if alice_first else (bob, alice)
    to_second = first.answer(True, 2.0)
    assert to_second == [VerifyConfirm(ATTEMPT, True)]
    assert deliver(second, to_second) == []
    assert not second.ended  # its own user has not answered yet
    to_first = second.answer(True, 3.0)
    assert second.ending is Ending.VERIFIED
    deliver(first, to_first)
    assert first.ending is Ending.VERIFIED
    assert not first.counts_as_failure and not second.counts_as_failure


def test_no_on_one_side_fails_both_and_warns() -> None:
    alice, bob = comparing()
    to_alice = bob.answer(False, 2.0)
    assert bob.ending is Ending.SAID_NO
    deliver(alice, to_alice)
    assert alice.ending is Ending.PEER_SAID_NO
    for side in (alice, bob):
        assert side.ending is not None and side.ending.warns_of_middle
        assert side.counts_as_failure
    # Alice's later "yes" cannot revive it.
    with pytest.raises(ValueError):
        alice.answer(True, 3.0)


def test_a_yes_after_the_peer_said_no_changes_nothing() -> None:
    alice, bob = comparing()
    deliver(alice, bob.answer(False, 2.0))
    assert alice.ending is Ending.PEER_SAID_NO
    assert alice.receive(VerifyConfirm(ATTEMPT, True), 3.0) == []
    assert alice.ending is Ending.PEER_SAID_NO


def test_a_reveal_that_does_not_open_the_commitment_aborts() -> None:
    alice, out = Attempt.request(Binding(H, ALICE, BOB), 0.0, attempt_id=ATTEMPT, nonce=Q)
    request = out[0]
    assert isinstance(request, VerifyRequest)
    bob, commit = Attempt.respond(Binding(H, BOB, ALICE), request, 0.0, nonce=R)
    deliver(alice, commit)
    other = b"\x33" * 32  # Bob (or whoever) reveals a nonce he did not commit to
    back = alice.receive(VerifyReveal(ATTEMPT, other), 1.0)
    assert back == [VerifyAbort(ATTEMPT, AbortReason.BAD_REVEAL)]
    assert alice.ending is Ending.BAD_REVEAL
    assert alice.code is None  # no code is ever shown
    assert alice.counts_as_failure and Ending.BAD_REVEAL.warns_of_middle
    deliver(bob, back)
    assert bob.ending is Ending.BAD_REVEAL


@pytest.mark.parametrize(
    "message",
    [
        VerifyReveal(ATTEMPT, R),  # a reveal before any commitment
        VerifyConfirm(ATTEMPT, True),  # an answer before a code
        VerifyRequest(ATTEMPT),
    ],
)
def test_messages_out_of_order_abort_the_requester(message: VerifyMessage) -> None:
    alice, _ = Attempt.request(Binding(H, ALICE, BOB), 0.0, attempt_id=ATTEMPT, nonce=Q)
    assert alice.receive(message, 1.0) == [VerifyAbort(ATTEMPT, AbortReason.UNEXPECTED)]
    assert alice.ending is Ending.UNEXPECTED
    assert alice.receive(VerifyCommit(ATTEMPT, bytes(32)), 1.0) == []  # ended stays ended


def test_a_second_answer_from_the_peer_aborts() -> None:
    alice, bob = comparing()
    confirm = bob.answer(True, 2.0)
    deliver(alice, confirm)
    assert deliver(alice, confirm) == [VerifyAbort(ATTEMPT, AbortReason.UNEXPECTED)]
    assert alice.ending is Ending.UNEXPECTED


def test_a_responder_refuses_a_second_reveal_and_a_commit() -> None:
    _, bob = comparing()
    assert bob.receive(VerifyCommit(ATTEMPT, bytes(32)), 1.0) == [
        VerifyAbort(ATTEMPT, AbortReason.UNEXPECTED)
    ]


def test_peer_abort_reasons_become_endings() -> None:
    for reason, ending in [
        (AbortReason.CANCELLED, Ending.PEER_CANCELLED),
        (AbortReason.EXPIRED, Ending.EXPIRED),
        (AbortReason.RATE_LIMITED, Ending.PEER_RATE_LIMITED),
        (AbortReason.BAD_REVEAL, Ending.BAD_REVEAL),
        (AbortReason.UNEXPECTED, Ending.UNEXPECTED),
    ]:
        alice, _ = comparing()
        assert alice.receive(VerifyAbort(ATTEMPT, reason), 1.0) == []
        assert alice.ending is ending
        assert alice.counts_as_failure  # a code had been shown


def test_no_answer_from_the_user_cancels() -> None:
    alice, bob = comparing()
    back = alice.answer(None, 2.0)
    assert back == [VerifyAbort(ATTEMPT, AbortReason.CANCELLED)]
    assert alice.ending is Ending.CANCELLED
    deliver(bob, back)
    assert bob.ending is Ending.PEER_CANCELLED


def test_a_request_nobody_takes_up_ends_after_the_code_wait() -> None:
    alice, _ = Attempt.request(Binding(H, ALICE, BOB), 100.0, attempt_id=ATTEMPT, nonce=Q)
    assert alice.check_time(100.0 + limits.VERIFY_CODE_WAIT - 0.01) == []
    assert not alice.ended
    out = alice.check_time(100.0 + limits.VERIFY_CODE_WAIT)
    assert out == [VerifyAbort(ATTEMPT, AbortReason.CANCELLED)]
    assert alice.ending is Ending.NO_RESPONSE
    assert not alice.counts_as_failure  # no code was shown: nothing to guess from


def test_an_unanswered_code_expires_after_two_minutes() -> None:
    alice, bob = comparing()
    assert limits.VERIFY_EXPIRY == 120.0
    assert alice.check_time(119.9) == []
    assert alice.check_time(120.0) == [VerifyAbort(ATTEMPT, AbortReason.EXPIRED)]
    assert alice.ending is Ending.EXPIRED and alice.counts_as_failure
    deliver(bob, [VerifyAbort(ATTEMPT, AbortReason.EXPIRED)])
    assert bob.ending is Ending.EXPIRED


def test_messages_passed_unchanged_between_two_sessions_are_caught() -> None:
    # A relay forwards every message as it is, but Alice and Bob are in different
    # sessions with it: Bob's commitment does not open in Alice's session.
    alice, out = Attempt.request(Binding(H, ALICE, BOB), 0.0, attempt_id=ATTEMPT, nonce=Q)
    request = out[0]
    assert isinstance(request, VerifyRequest)
    other_session = hashlib.sha256(b"another session").digest()
    bob, commit = Attempt.respond(Binding(other_session, BOB, ALICE), request, 0.0, nonce=R)
    reveal_r = deliver(bob, deliver(alice, commit))
    assert deliver(alice, reveal_r) == [VerifyAbort(ATTEMPT, AbortReason.BAD_REVEAL)]
    assert alice.ending is Ending.BAD_REVEAL and alice.code is None


# -- the limit on failed comparisons -----------------------------------------------


def test_three_failures_are_free_then_the_wait_doubles_up_to_the_cap() -> None:
    limiter = FailureLimiter(free=3, backoff=30.0, backoff_max=120.0, memory=3600.0)
    now = 1000.0
    for _ in range(3):
        assert limiter.wait(BOB, now) == 0.0
        limiter.failed(BOB, now)
    assert limiter.wait(BOB, now) == 30.0
    assert limiter.wait(BOB, now + 10) == 20.0
    assert limiter.wait(BOB, now + 30) == 0.0
    now += 30
    limiter.failed(BOB, now)
    assert limiter.wait(BOB, now) == 60.0
    for _ in range(5):
        now += 200
        limiter.failed(BOB, now)
    assert limiter.wait(BOB, now) == 120.0  # capped
    assert limiter.wait(ALICE, now) == 0.0  # per peer


def test_a_success_or_an_hour_without_failure_forgets_the_count() -> None:
    limiter = FailureLimiter(free=1, backoff=30.0, memory=3600.0)
    limiter.failed(BOB, 0.0)
    assert limiter.wait(BOB, 0.0) == 30.0
    limiter.succeeded(BOB)
    assert limiter.wait(BOB, 0.0) == 0.0
    limiter.failed(BOB, 0.0)
    assert limiter.wait(BOB, 3599.0) == 0.0  # the 30 s are long over
    limiter.failed(BOB, 3599.0)
    assert limiter.wait(BOB, 3599.0) == 60.0  # still the second failure within the hour
    limiter.failed(BOB, 3599.0 + 3600.0)
    assert limiter.wait(BOB, 3599.0 + 3600.0) == 30.0  # counted afresh


def test_the_limiter_remembers_a_bounded_number_of_peers() -> None:
    limiter = FailureLimiter(free=0, backoff=30.0, tracked=3)
    peers = [fingerprint_of(bytes([i])) for i in range(5)]
    for fp in peers:
        limiter.failed(fp, 0.0)
    assert [limiter.wait(fp, 0.0) > 0 for fp in peers] == [False, False, True, True, True]


def test_the_limiter_survives_a_very_long_run_of_failures() -> None:
    limiter = FailureLimiter(free=0, backoff=30.0, backoff_max=900.0, memory=1e9)
    for i in range(3000):
        limiter.failed(BOB, float(i))
    assert limiter.wait(BOB, 2999.0) == 900.0
