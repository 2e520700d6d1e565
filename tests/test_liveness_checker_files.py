"""The liveness checker leaves a session that carries a file open, and closes it idle otherwise."""

from __future__ import annotations

from typing import cast

import pytest

from peerchat.events import UiEvent
from peerchat.net.liveness_checker import LivenessChecker
from peerchat.net.session import BYE_IDLE, Session
from peerchat.policy.presence import Presence
from peerchat.policy.session_table import AdmissionLimits, SessionTable
from peerchat.policy.upkeep import UpkeepLimits
from peerchat.protocol.channel import Role
from peerchat.protocol.messages import Message

BOB = "b" * 64
LIMITS = UpkeepLimits(peer_timeout=30.0, idle_timeout=10.0, ping_interval=5.0)


class QuietSession:
    """A session with no chat for a while but recent traffic (file chunks, pongs)."""

    role = Role.INITIATOR
    remote_ip = "127.0.0.1"
    established = True

    def __init__(self) -> None:
        self.closed = False
        self.closed_why: str | None = None
        self.last_received = 19.0
        self.last_chat = 0.0
        self.last_ping = 19.0

    def close(self, reason: str) -> None:
        self.closed, self.closed_why = True, reason

    def fail(self, why: str) -> None:
        self.closed, self.closed_why = True, why

    def send(self, messages: list[Message]) -> None:
        pass


def check_at(now: float, *, carrying_file: bool) -> tuple[QuietSession, LivenessChecker]:
    table: SessionTable[Session] = SessionTable("a" * 64, AdmissionLimits(8, 8, 8))
    quiet = QuietSession()
    session = cast(Session, quiet)
    assert table.admit(session) is None
    table.settle(BOB, session)
    events: list[UiEvent] = []
    checker = LivenessChecker(
        Presence(LIMITS.peer_timeout, lambda fp, name: False),
        table,
        LIMITS,
        events.append,
        lambda when: None,
        in_use=lambda fp: carrying_file and fp == BOB,
    )
    checker.handle_timer(now)
    return quiet, checker


def test_a_quiet_session_without_a_transfer_is_closed_as_idle() -> None:
    quiet, _ = check_at(20.0, carrying_file=False)
    assert quiet.closed_why == BYE_IDLE


@pytest.mark.parametrize("now", [20.0, 45.0])
def test_a_session_carrying_a_file_is_not_idle(now: float) -> None:
    # Both past the idle timeout since the last chat; neither past the peer timeout.
    quiet, checker = check_at(now, carrying_file=True)
    assert not quiet.closed
    # Its next look is an idle timeout from now, not in the past (no busy wake-ups).
    due = checker.next_due()
    assert due is not None and due > now
