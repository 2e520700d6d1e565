"""The failed-handshake budget per source address: cool-down, recovery, reserve, memory."""

from __future__ import annotations

import math

import pytest

from peerchat.policy.handshake_budget import Admitted, CoolingDown, FailureLimits, HandshakeBudget

ATTACKER = "10.0.0.66"
FRIEND = "10.0.0.7"


def budget(
    burst: float = 4, rate: float = 0.5, reserve: float = 1.0, sources: int = 8
) -> HandshakeBudget:
    return HandshakeBudget(FailureLimits(burst, rate, reserve, sources))


def fail(b: HandshakeBudget, ip: str, times: int, now: float) -> None:
    for _ in range(times):
        b.failed(ip, now)


def test_an_address_never_seen_is_admitted_and_not_remembered() -> None:
    b = budget()
    assert b.admit(ATTACKER, 0.0) == Admitted()
    assert b.tracked_sources == 0


def test_failures_up_to_the_burst_are_tolerated_and_the_next_connection_refused() -> None:
    b = budget(burst=4)
    fail(b, ATTACKER, 3, 0.0)
    assert isinstance(b.admit(ATTACKER, 0.0), Admitted)
    b.failed(ATTACKER, 0.0)
    refused = b.admit(ATTACKER, 0.0)
    assert isinstance(refused, CoolingDown) and refused.count == 1 and refused.first
    assert refused.wait == pytest.approx(2.0)
    second = b.admit(ATTACKER, 0.5)
    assert isinstance(second, CoolingDown) and second.count == 2 and not second.first
    assert second.wait == pytest.approx(1.5)


def test_the_cool_down_ends_when_the_bucket_refills_and_says_how_many_were_refused() -> None:
    b = budget(burst=4, rate=0.5)
    fail(b, ATTACKER, 4, 0.0)
    for t in (0.1, 0.2, 1.9):
        assert isinstance(b.admit(ATTACKER, t), CoolingDown)
    assert b.admit(ATTACKER, 2.0) == Admitted(refused=3)
    assert b.admit(ATTACKER, 2.0) == Admitted()  # the count was given once


def test_an_address_that_failed_a_few_times_recovers_in_full() -> None:
    b = budget(burst=4, rate=0.5)
    fail(b, FRIEND, 3, 0.0)
    assert isinstance(b.admit(FRIEND, 0.0), Admitted)  # a few failures: never refused
    # Six seconds later the three are forgiven: a whole burst is there again.
    fail(b, FRIEND, 3, 6.0)
    assert isinstance(b.admit(FRIEND, 6.0), Admitted)
    b.failed(FRIEND, 6.0)
    assert isinstance(b.admit(FRIEND, 6.0), CoolingDown)


def test_a_flood_with_many_handshakes_in_flight_pays_its_debt_before_it_is_admitted() -> None:
    """Sixteen handshakes admitted at once, then all fail: the address waits for all of them."""
    b = budget(burst=4, rate=0.5)
    fail(b, ATTACKER, 3, 0.0)
    for _ in range(16):
        assert isinstance(b.admit(ATTACKER, 0.0), Admitted)
    fail(b, ATTACKER, 16, 0.1)  # debt is bounded at -burst
    refused = b.admit(ATTACKER, 0.1)
    assert isinstance(refused, CoolingDown)
    assert refused.wait == pytest.approx((1 + 4) / 0.5)
    assert isinstance(b.admit(ATTACKER, 0.1 + 9.9), CoolingDown)
    assert isinstance(b.admit(ATTACKER, 0.1 + 10.0), Admitted)


def test_failures_in_the_long_run_are_bounded_by_the_rate() -> None:
    """An address that retries as fast as it can gets about `rate` failed handshakes a second."""
    b = budget(burst=4, rate=0.5)
    admitted = 0
    for step in range(60 * 100):  # one connection every 10 ms for a minute, each failing
        now = step / 100
        if isinstance(b.admit(ATTACKER, now), Admitted):
            admitted += 1
            b.failed(ATTACKER, now)
    assert admitted <= 4 + 60 * 0.5 + 1


def test_successful_handshakes_cost_nothing() -> None:
    b = budget(burst=1)
    for _ in range(100):
        assert isinstance(b.admit(FRIEND, 0.0), Admitted)
        b.succeeded(FRIEND, known=False, now=0.0)
    assert b.tracked_sources == 0


def test_one_address_s_failures_do_not_touch_another() -> None:
    b = budget(burst=2)
    fail(b, ATTACKER, 10, 0.0)
    assert isinstance(b.admit(ATTACKER, 0.0), CoolingDown)
    assert b.admit(FRIEND, 0.0) == Admitted()


def test_a_known_key_s_address_keeps_a_reserve_during_its_cool_down() -> None:
    b = budget(burst=2, rate=0.01, reserve=1.0)
    b.succeeded(FRIEND, known=True, now=0.0)  # the friend, and a flood from the same address
    fail(b, FRIEND, 10, 0.0)
    assert b.admit(FRIEND, 0.0) == Admitted(reserve=True)
    refused = b.admit(FRIEND, 0.5)
    assert isinstance(refused, CoolingDown)
    assert refused.wait == pytest.approx(0.5)  # the reserve comes long before the bucket
    assert b.admit(FRIEND, 1.0) == Admitted(reserve=True)
    # Once a second, and no more, however often the address knocks (at 2, 3, ... 10 s).
    admitted = sum(isinstance(b.admit(FRIEND, 1.0 + i / 100), Admitted) for i in range(1000))
    assert admitted == 9


def test_a_new_key_earns_no_reserve() -> None:
    b = budget(burst=2, rate=0.01)
    b.succeeded(ATTACKER, known=False, now=0.0)  # a key made for the purpose
    fail(b, ATTACKER, 10, 0.0)
    assert isinstance(b.admit(ATTACKER, 0.0), CoolingDown)
    assert isinstance(b.admit(ATTACKER, 5.0), CoolingDown)


def test_the_reserve_s_failures_are_charged_too() -> None:
    b = budget(burst=2, rate=0.5, reserve=1.0)
    b.succeeded(FRIEND, known=True, now=0.0)
    fail(b, FRIEND, 2, 0.0)
    assert b.admit(FRIEND, 0.0) == Admitted(reserve=True)
    b.failed(FRIEND, 0.0)  # the bucket is one in debt
    # Two seconds would have refilled an empty bucket to one; this one is still in debt.
    assert b.admit(FRIEND, 2.0) == Admitted(reserve=True)
    assert isinstance(b.admit(FRIEND, 2.5), CoolingDown)
    assert b.admit(FRIEND, 4.0) == Admitted(refused=1)  # the cool-down's count, at its end


def test_tracked_addresses_are_capped_and_the_oldest_forgotten_which_forgives_it() -> None:
    b = budget(burst=1, sources=3)
    fail(b, "10.0.0.1", 5, 0.0)
    for n in (2, 3, 4):
        b.failed(f"10.0.0.{n}", 0.0)
    assert b.tracked_sources == 3
    assert b.admit("10.0.0.1", 0.0) == Admitted()  # forgotten: starts again with a full bucket
    assert isinstance(b.admit("10.0.0.4", 0.0), CoolingDown)


def test_an_address_still_knocking_is_remembered_over_quiet_ones() -> None:
    b = budget(burst=1, rate=0.001, sources=3)
    b.failed("10.0.0.1", 0.0)
    b.failed("10.0.0.2", 0.0)
    b.failed("10.0.0.3", 0.0)
    assert isinstance(b.admit("10.0.0.1", 1.0), CoolingDown)  # it knocks again: now the newest
    b.failed("10.0.0.4", 2.0)
    assert isinstance(b.admit("10.0.0.1", 2.0), CoolingDown)
    assert b.admit("10.0.0.2", 2.0) == Admitted()  # the oldest was forgotten


def test_a_clock_step_back_refills_nothing() -> None:
    b = budget(burst=1, rate=1.0)
    b.failed(ATTACKER, 100.0)
    assert isinstance(b.admit(ATTACKER, 50.0), CoolingDown)
    assert isinstance(b.admit(ATTACKER, 50.5), CoolingDown)
    assert isinstance(b.admit(ATTACKER, 51.0), Admitted)


def test_with_no_refill_the_cool_down_has_no_end_but_the_reserve() -> None:
    b = budget(burst=1, rate=0.0, reserve=10.0)
    b.failed(ATTACKER, 0.0)
    refused = b.admit(ATTACKER, 100.0)
    assert isinstance(refused, CoolingDown) and refused.wait == math.inf
    b.succeeded(FRIEND, known=True, now=0.0)
    b.failed(FRIEND, 0.0)
    assert b.admit(FRIEND, 0.0) == Admitted(reserve=True)
    waiting = b.admit(FRIEND, 4.0)
    assert isinstance(waiting, CoolingDown) and waiting.wait == pytest.approx(6.0)
