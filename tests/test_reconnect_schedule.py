"""When the node tries again to reach a peer that has messages waiting (pure, time passed in)."""

from __future__ import annotations

from peerchat.delivery import ReconnectSchedule

BOB, CAROL = "bob", "carol"


def attempts(
    schedule: ReconnectSchedule, peer: str, until: float, step: float = 0.25
) -> list[float]:
    """The times at which `peer` is tried, looking every `step` seconds from 0 to `until`."""
    tried: list[float] = []
    now = 0.0
    while now <= until:
        if peer in schedule.due(now):
            tried.append(now)
            schedule.attempted(peer, now)
        now += step
    return tried


def test_a_peer_asked_for_at_once_is_tried_now_then_with_doubling_delays() -> None:
    schedule = ReconnectSchedule(shortest=1.0, longest=10.0)
    schedule.want(BOB, 0.0, at_once=True)
    assert attempts(schedule, BOB, 40.0) == [0.0, 1.0, 3.0, 7.0, 15.0, 25.0, 35.0]


def test_a_lost_session_waits_the_shortest_delay_before_the_first_try() -> None:
    schedule = ReconnectSchedule(shortest=1.0, longest=10.0)
    schedule.want(BOB, 5.0)
    assert schedule.due(5.0) == []
    assert schedule.due(6.0) == [BOB]


def test_asking_again_does_not_push_a_pending_try_later() -> None:
    schedule = ReconnectSchedule(shortest=1.0, longest=10.0)
    schedule.want(BOB, 0.0)
    schedule.want(BOB, 0.5)  # another message queued meanwhile
    assert schedule.due(1.0) == [BOB]


def test_discovery_resets_the_backoff() -> None:
    schedule = ReconnectSchedule(shortest=1.0, longest=10.0)
    schedule.want(BOB, 0.0, at_once=True)
    for now in (0.0, 1.0, 3.0, 7.0, 15.0):
        assert BOB in schedule.due(now)
        schedule.attempted(BOB, now)
    schedule.want(BOB, 16.0, at_once=True)  # it was just discovered again
    assert schedule.due(16.0) == [BOB]
    schedule.attempted(BOB, 16.0)
    assert schedule.due(16.5) == []
    assert schedule.due(17.0) == [BOB]


def test_a_peer_without_an_address_is_looked_at_again_after_the_longest_delay() -> None:
    schedule = ReconnectSchedule(shortest=1.0, longest=10.0)
    schedule.want(BOB, 0.0, at_once=True)
    schedule.postpone(BOB, 0.0)
    assert schedule.due(9.9) == []
    assert schedule.due(10.0) == [BOB]


def test_peers_are_independent_and_a_dropped_peer_is_forgotten() -> None:
    schedule = ReconnectSchedule(shortest=1.0, longest=10.0)
    schedule.want(BOB, 0.0, at_once=True)
    schedule.want(CAROL, 0.0)
    assert schedule.due(0.0) == [BOB]
    assert sorted(schedule.due(1.0)) == [BOB, CAROL]
    schedule.drop(BOB)
    assert schedule.peers() == [CAROL]
    assert schedule.due(100.0) == [CAROL]
    schedule.want(BOB, 100.0)  # back with a fresh delay
    assert schedule.due(100.5) == [CAROL]
    assert sorted(schedule.due(101.0)) == [BOB, CAROL]


def test_a_dropped_peer_starts_again_from_the_shortest_delay() -> None:
    schedule = ReconnectSchedule(shortest=1.0, longest=10.0)
    schedule.want(BOB, 0.0, at_once=True)
    for now in (0.0, 1.0, 3.0):
        schedule.attempted(BOB, now)  # the delay is 8 s now
    schedule.drop(BOB)
    schedule.want(BOB, 20.0)
    assert schedule.due(20.9) == []
    assert schedule.due(21.0) == [BOB]


def test_asking_again_after_a_failed_try_waits_the_grown_delay() -> None:
    schedule = ReconnectSchedule(shortest=1.0, longest=10.0)
    schedule.want(BOB, 0.0)
    schedule.attempted(BOB, 1.0)  # next try at 2.0; the delay is 2 s now
    schedule.want(BOB, 5.0)  # a message queued after that try was due
    assert schedule.due(6.9) == []
    assert schedule.due(7.0) == [BOB]


def test_a_try_nobody_asked_for_waits_the_shortest_delay() -> None:
    schedule = ReconnectSchedule(shortest=1.0, longest=10.0)
    schedule.attempted(BOB, 0.0)  # with no want() before it
    assert schedule.due(0.9) == []
    assert schedule.due(1.0) == [BOB]


def test_dropping_a_peer_never_scheduled_or_only_postponed_is_harmless() -> None:
    schedule = ReconnectSchedule(shortest=1.0, longest=10.0)
    schedule.drop(BOB)
    schedule.postpone(CAROL, 0.0)
    schedule.drop(CAROL)
    assert schedule.peers() == []
