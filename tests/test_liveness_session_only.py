"""A peer known only by its session (seed, peer exchange) stays listed past the idle timeout.

Its beacons never reach us, so the session is the only sign that it is
there: closing it for idleness would take it off the list (and announce it
offline) while it is still running. A peer whose beacons we hear keeps its
idle session closed as before.
"""

from __future__ import annotations

from typing import cast

from peerchat.events import PeerOffline, UiEvent
from peerchat.net.liveness_checker import LivenessChecker
from peerchat.net.session import BYE_IDLE, Session
from peerchat.policy.presence import Presence
from peerchat.policy.session_table import AdmissionLimits, SessionTable
from peerchat.policy.upkeep import UpkeepLimits
from peerchat.protocol.channel import Role
from peerchat.protocol.messages import Message, Ping

BOB = "b" * 64
LIMITS = UpkeepLimits(peer_timeout=15.0, idle_timeout=600.0, ping_interval=5.0)
RUN = b"r" * 16
TICK = 0.01


class PingedSession:
    """A healthy session nobody chats on: each ping is answered at once."""

    role = Role.INITIATOR
    remote_ip = "10.0.2.5"
    established = True

    def __init__(self) -> None:
        self.closed_why: str | None = None
        self.last_received = self.last_chat = self.last_ping = 0.0
        self.answered_at = 0.0

    @property
    def closed(self) -> bool:
        return self.closed_why is not None

    def close(self, reason: str) -> None:
        self.closed_why = reason

    def fail(self, why: str) -> None:
        self.closed_why = why

    def send(self, messages: list[Message]) -> None:
        if any(isinstance(m, Ping) for m in messages):
            self.last_received = self.last_ping  # the pong


def node(presence: Presence) -> tuple[PingedSession, LivenessChecker, list[UiEvent]]:
    table: SessionTable[Session] = SessionTable("a" * 64, AdmissionLimits(8, 8, 8))
    pinged = PingedSession()
    session = cast(Session, pinged)
    assert table.admit(session) is None
    table.settle(BOB, session)
    events: list[UiEvent] = []
    checker = LivenessChecker(presence, table, LIMITS, events.append, lambda when: None)
    return pinged, checker, events


def run_until(
    checker: LivenessChecker, presence: Presence, end: float, *, beacons_every: float | None = None
) -> None:
    """Fire the checker whenever it is due (as the alarm does), hearing beacons if any."""
    now, next_beacon = 0.0, beacons_every
    while now < end:
        due = checker.next_due()
        assert due is not None and due > now - 1e-9, (due, now)  # never due in the past
        due += TICK  # the alarm fires just after
        now = min(due, next_beacon) if next_beacon is not None else due
        if next_beacon is not None and now == next_beacon:
            presence.beacon(BOB, "Bob", "10.0.2.5", 5000, RUN, now=now, wall=now)
            next_beacon += beacons_every  # type: ignore[operator]
            continue
        checker.handle_timer(now)


def test_a_peer_listed_by_its_session_alone_is_not_closed_for_idleness() -> None:
    presence = Presence(LIMITS.peer_timeout, lambda fp, name: False)
    presence.session_up(BOB, "Bob", "10.0.2.5", 5000, now=0.0, wall=0.0)
    session, checker, events = node(presence)
    pongs = 0

    def heard(fp: str, now: float) -> None:
        presence.heard(fp, now, now)

    # Half an hour without a chat: pings and pongs go on, the peer stays listed.
    now = 0.0
    while now < 1800.0:
        due = checker.next_due()
        assert due is not None and due > now
        now = due + TICK
        checker.handle_timer(now)
        if session.last_received == now:
            heard(BOB, now)
            pongs += 1
    assert session.closed_why is None
    assert BOB in presence and not any(isinstance(e, PeerOffline) for e in events)
    assert pongs > 300


def test_a_peer_whose_beacons_are_heard_has_its_idle_session_closed() -> None:
    presence = Presence(LIMITS.peer_timeout, lambda fp, name: False)
    presence.session_up(BOB, "Bob", "10.0.2.5", 5000, now=0.0, wall=0.0)
    session, checker, _ = node(presence)
    run_until(checker, presence, 700.0, beacons_every=5.0)
    assert session.closed_why == BYE_IDLE
    assert BOB in presence  # its beacons keep it listed


def test_presence_says_when_the_session_is_all_there_is() -> None:
    presence = Presence(15.0, lambda fp, name: False)
    assert not presence.by_session_only(BOB, 0.0)  # not listed at all
    presence.session_up(BOB, "Bob", "10.0.2.5", 5000, now=0.0, wall=0.0)
    assert presence.by_session_only(BOB, 1.0)
    presence.beacon(BOB, "Bob", "10.0.2.5", 5000, RUN, now=2.0, wall=2.0)
    assert not presence.by_session_only(BOB, 17.0)
    assert presence.by_session_only(BOB, 17.5)  # no beacon within the timeout
    presence.depart(BOB)
    assert not presence.by_session_only(BOB, 18.0)
