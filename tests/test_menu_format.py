"""What the menu prints for the node's news and for history rows."""

from __future__ import annotations

from peerchat.events import (
    DiscoveryBlocked,
    DiscoveryQuiet,
    KeyChanged,
    MessageArrived,
    Outcome,
    PeerDiscovered,
    PeerOffline,
    SendResult,
)
from peerchat.limits import MAX_TIMESTAMP
from peerchat.ui.menu import describe_event, describe_send, format_history_row
from storage import DeliveryState, Direction, StoredMessage

FP_OLD = "A" * 52
FP_NEW = "B" * 52


def test_incoming_message_line_is_the_original_format() -> None:
    line = describe_event(MessageArrived("Alice", "10.0.0.5", 5000, FP_OLD, "hello"))
    assert line == "Received from 10.0.0.5:5000 (Alice): hello"


def test_hostile_text_cannot_fake_a_program_line() -> None:
    text = "hi\nReceived from 1.2.3.4:5 (Bob): send me your key\x1b[2J"
    line = describe_event(MessageArrived("Eve\x1b[31m", "10.0.0.6", 5000, FP_OLD, text))
    assert "\n" not in line and "\x1b" not in line
    assert line.startswith("Received from 10.0.0.6:5000 (Eve")


def test_discovery_and_offline_lines() -> None:
    assert describe_event(PeerDiscovered("Bob", "10.0.0.7", 5001)) == (
        "Discovered peer Bob at 10.0.0.7:5001"
    )
    offline = describe_event(PeerOffline("Bob", "10.0.0.7", 5001, "timed out"))
    assert "Bob" in offline and "offline" in offline and "10.0.0.7:5001" in offline


def test_key_change_warning_is_one_short_line_with_both_short_ids() -> None:
    line = describe_event(KeyChanged("Bob", "10.0.0.7", 5001, FP_OLD, FP_NEW))
    assert line.startswith("WARNING: the key of peer Bob at 10.0.0.7:5001 has changed")
    assert "was AAAAAAAA, now BBBBBBBB" in line
    assert "option 6" in line  # where the full fingerprints are compared
    assert "\n" not in line and "AAAA-AAAA" not in line and "B" * 9 not in line
    assert len(line) <= 200


def test_a_send_refused_for_a_changed_key_does_not_repeat_the_warning() -> None:
    detail = f"pinned {FP_OLD}, now presents {FP_NEW}"
    line = describe_send(SendResult(Outcome.KEY_CHANGED, "10.0.0.7", 5001, "Bob", detail))
    assert line == "Message to Bob (10.0.0.7:5001) not sent: its key has changed (see option 6)."


def test_a_queued_message_says_when_it_goes_out() -> None:
    line = describe_send(SendResult(Outcome.QUEUED, "10.0.0.7", 5001, "Bob", "offline"))
    assert line == (
        "Bob (10.0.0.7:5001) is not reachable (offline): message queued for delivery. "
        "It goes out when both of you are online."
    )


def test_discovery_trouble_lines() -> None:
    blocked = DiscoveryBlocked("255.255.255.255", 54545, "Network is unreachable")
    assert describe_event(blocked) == (
        "Discovery: cannot broadcast to 255.255.255.255:54545 (Network is unreachable); "
        "peers can still be reached by address"
    )
    quiet = describe_event(DiscoveryQuiet(54545, 30.0))
    assert quiet.startswith("Discovery: no other peer heard on UDP port 54545 in 30 s")
    assert quiet.endswith("; peers can still be reached by address")


def test_sent_is_only_said_for_a_delivered_message() -> None:
    delivered = describe_send(SendResult(Outcome.DELIVERED, "10.0.0.7", 5001, "Bob"))
    assert delivered == "Message sent to 10.0.0.7:5001"
    for outcome in Outcome:
        if outcome is Outcome.DELIVERED:
            continue
        line = describe_send(SendResult(outcome, "10.0.0.7", 5001, "Bob", "why"))
        assert "Message sent to" not in line
    assert "queued for delivery" in describe_send(
        SendResult(Outcome.QUEUED, "10.0.0.7", 5001, "Bob", "connection refused")
    )


def test_history_row_shows_time_direction_peer_state_and_text() -> None:
    row = StoredMessage(
        msg_id="0" * 32,
        peer_fp=FP_OLD,
        peer_name="Bob",
        peer_host="10.0.0.7",
        peer_port=5001,
        direction=Direction.OUT,
        text="hello",
        sent_at=1_700_000_000.0,
        stored_at=1_700_000_000.0,
        state=DeliveryState.PENDING,
    )
    line = format_history_row(row)
    assert line.endswith("You -> Bob (10.0.0.7:5001) [pending]: hello")
    assert line.startswith("[20")


def test_a_history_row_with_a_time_no_calendar_can_show_is_still_shown() -> None:
    """A row stored by an older version may hold any time: option 3 must still show it."""
    for sent_at in (1e20, 253_402_300_800.0, 1e308):
        row = StoredMessage(
            msg_id="0" * 32,
            peer_fp=FP_OLD,
            peer_name="Mallory",
            peer_host="10.0.0.6",
            peer_port=5000,
            direction=Direction.IN,
            text="from the far future",
            sent_at=sent_at,
            stored_at=1_700_000_000.0,
            state=DeliveryState.RECEIVED,
        )
        assert format_history_row(row) == (
            "[time unknown] Mallory (10.0.0.6:5000) -> You [received]: from the far future"
        )


def test_the_latest_time_a_chat_may_carry_is_shown_as_a_date() -> None:
    row = StoredMessage(
        msg_id="0" * 32,
        peer_fp=FP_OLD,
        peer_name="Bob",
        peer_host="10.0.0.7",
        peer_port=5001,
        direction=Direction.IN,
        text="late",
        sent_at=MAX_TIMESTAMP,
        stored_at=1_700_000_000.0,
        state=DeliveryState.RECEIVED,
    )
    assert format_history_row(row).startswith("[3000-01-0")  # local time of MAX_TIMESTAMP
