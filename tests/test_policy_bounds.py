"""Small pure decisions at their exact bounds: a session's upkeep and a peer's quota.

Their own test files check the behaviour; these pin each comparison at the value where
it turns, and the exact words and figures the user reads."""

from __future__ import annotations

import pytest

from peerchat.policy.quota import HOUR, VERIFIED_FACTOR, QuotaLimits, ReceiveQuota
from peerchat.policy.upkeep import Upkeep, UpkeepLimits, upkeep

LIMITS = UpkeepLimits(peer_timeout=90.0, idle_timeout=600.0, ping_interval=20.0)
NOW = 10_000.0


@pytest.mark.parametrize(
    ("silent", "expected"),
    [(90.0, Upkeep.PING), (90.5, Upkeep.FAIL)],
)
def test_a_session_fails_only_when_silent_past_the_peer_timeout(
    silent: float, expected: Upkeep
) -> None:
    assert upkeep(LIMITS, NOW, NOW - silent, NOW, NOW - 100.0) is expected


@pytest.mark.parametrize(
    ("quiet", "expected"),
    [(600.0, Upkeep.NOTHING), (600.5, Upkeep.CLOSE_IDLE)],
)
def test_a_session_is_closed_idle_only_past_the_idle_timeout(
    quiet: float, expected: Upkeep
) -> None:
    assert upkeep(LIMITS, NOW, NOW, NOW - quiet, NOW) is expected


def test_a_ping_goes_only_when_silent_and_unpinged_past_the_interval() -> None:
    every = LIMITS.ping_every
    assert every == 20.0
    assert upkeep(LIMITS, NOW, NOW - every, NOW, NOW - 50.0) is Upkeep.NOTHING
    assert upkeep(LIMITS, NOW, NOW - every - 0.5, NOW, NOW - every) is Upkeep.NOTHING
    assert upkeep(LIMITS, NOW, NOW - every - 0.5, NOW, NOW - every - 0.5) is Upkeep.PING


def test_quota_limits_are_said_in_mebibytes() -> None:
    assert QuotaLimits(200, 3 * 1024 * 1024).describe() == "at most 200 messages and 3 MiB an hour"
    assert QuotaLimits(5_000, 512 * 1024).describe() == "at most 5,000 messages and 0.5 MiB an hour"


def test_a_verified_peer_gets_ten_times_both_budgets() -> None:
    quota = ReceiveQuota(QuotaLimits(10, 1000))
    assert quota.limits_for(True) == QuotaLimits(10 * VERIFIED_FACTOR, 1000 * VERIFIED_FACTOR)
    assert quota.limits_for(False) == QuotaLimits(10, 1000)


def test_a_message_that_fits_the_bytes_left_exactly_is_admitted() -> None:
    quota = ReceiveQuota(QuotaLimits(10, 100))
    assert quota.admit("a", [60, 40, 1], verified=False, now=0.0) == 2


def test_budgets_refill_in_proportion_to_the_time_passed() -> None:
    quota = ReceiveQuota(QuotaLimits(3600, 3600))
    assert quota.admit("a", [1] * 3600, verified=False, now=1000.0) == 3600
    assert quota.admit("a", [1] * 100, verified=False, now=1010.0) == 10  # 1 a second
    assert quota.admit("a", [1] * 100, verified=False, now=1010.5) == 0
    # A clock that goes back refills nothing.
    assert quota.admit("a", [1] * 100, verified=False, now=500.0) == 0
    assert quota.admit("a", [1] * 100, verified=False, now=1000.0 + HOUR) == 100


def test_byte_budgets_refill_in_proportion_to_the_time_passed() -> None:
    quota = ReceiveQuota(QuotaLimits(10_000, 3600))
    assert quota.admit("a", [3600], verified=False, now=0.0) == 1
    assert quota.admit("a", [30, 1], verified=False, now=30.0) == 1


def test_the_peer_pushed_out_of_the_table_is_the_least_recently_seen() -> None:
    quota = ReceiveQuota(QuotaLimits(1, 100), max_tracked=2)
    assert quota.admit("a", [1], verified=False, now=0.0) == 1
    assert quota.admit("b", [1], verified=False, now=0.0) == 1
    assert quota.admit("c", [1], verified=False, now=0.0) == 1  # pushes out "a"
    assert quota.admit("c", [1], verified=False, now=0.0) == 0  # "c" is still charged
    assert quota.admit("a", [1], verified=False, now=0.0) == 1  # "a" starts again, full
