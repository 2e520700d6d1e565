"""The per-peer receive quota: messages and bytes per hour, more for verified peers."""

from __future__ import annotations

from peerchat.policy.quota import HOUR, VERIFIED_FACTOR, QuotaLimits, ReceiveQuota

A, B = "A" * 52, "B" * 52


def test_a_batch_is_admitted_up_to_the_message_budget_and_the_rest_refused() -> None:
    q = ReceiveQuota(QuotaLimits(messages_per_hour=5, bytes_per_hour=10**9))
    assert q.admit(A, [10] * 3, verified=False, now=0.0) == 3
    assert q.admit(A, [10] * 3, verified=False, now=0.0) == 2
    assert q.admit(A, [10], verified=False, now=0.0) == 0
    assert q.admit(B, [10] * 5, verified=False, now=0.0) == 5  # each key has its own


def test_bytes_are_limited_too_and_refill_evenly_over_the_hour() -> None:
    q = ReceiveQuota(QuotaLimits(messages_per_hour=1000, bytes_per_hour=100_000))
    assert q.admit(A, [48_000] * 3, verified=False, now=0.0) == 2
    assert q.admit(A, [48_000], verified=False, now=HOUR / 4) == 0  # 25,000 back: not enough
    assert q.admit(A, [48_000], verified=False, now=HOUR / 2) == 1


def test_a_verified_peer_gets_ten_times_as_much() -> None:
    q = ReceiveQuota(QuotaLimits(messages_per_hour=5, bytes_per_hour=10**9))
    assert q.admit(A, [1] * 100, verified=True, now=0.0) == 5 * VERIFIED_FACTOR
    assert "50 messages" in q.limits_for(True).describe()


def test_the_table_is_bounded() -> None:
    q = ReceiveQuota(QuotaLimits(1, 10), max_tracked=3)
    for i in range(10):
        q.admit(f"{i:052d}", [1], verified=False, now=0.0)
    assert len(q._budgets) == 3
