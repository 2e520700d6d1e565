"""Session upkeep: ping a quiet session, close an idle one, drop a dead one."""

from __future__ import annotations

from peerchat.policy.upkeep import Upkeep, UpkeepLimits, upkeep, upkeep_due

LIMITS = UpkeepLimits(peer_timeout=15.0, idle_timeout=600.0, ping_interval=5.0)


def test_a_session_heard_recently_needs_nothing_until_its_due_time() -> None:
    assert upkeep_due(LIMITS, 0.0, 0.0, 0.0) == 5.0
    assert upkeep(LIMITS, 5.0, 0.0, 0.0, 0.0) is Upkeep.NOTHING
    assert upkeep(LIMITS, 5.001, 0.0, 0.0, 0.0) is Upkeep.PING


def test_a_quiet_session_is_pinged_once_per_interval() -> None:
    # Pinged at 5.5: the next ping is due 5 s after it, not after the last traffic.
    assert upkeep(LIMITS, 7.0, 0.0, 0.0, 5.5) is Upkeep.NOTHING
    assert upkeep_due(LIMITS, 0.0, 0.0, 5.5) == 10.5
    assert upkeep(LIMITS, 10.6, 0.0, 0.0, 5.5) is Upkeep.PING


def test_pings_come_well_within_a_short_peer_timeout() -> None:
    short = UpkeepLimits(peer_timeout=3.0, idle_timeout=600.0, ping_interval=5.0)
    assert short.ping_every == 1.0
    assert upkeep_due(short, 0.0, 0.0, 0.0) == 1.0


def test_a_session_silent_past_the_peer_timeout_is_dropped() -> None:
    assert upkeep(LIMITS, 15.5, 0.0, 0.0, 12.0) is Upkeep.FAIL
    assert upkeep_due(LIMITS, 0.0, 0.0, 12.0) == 15.0


def test_a_session_without_chat_for_the_idle_timeout_is_closed() -> None:
    # Pongs keep it alive, but nobody has chatted for ten minutes.
    assert upkeep(LIMITS, 600.5, 600.0, 0.0, 598.0) is Upkeep.CLOSE_IDLE
    assert upkeep_due(LIMITS, 600.0, 0.0, 598.0) == 600.0
