"""What the menu prints for the node's news and for history rows."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest

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
from peerchat.policy.sanitize import CONTINUATION
from peerchat.ui.menu import Menu, describe_event, describe_send, format_history_row
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


def test_an_unverified_sender_is_shown_with_its_short_id() -> None:
    unverified = MessageArrived("Alice", "10.0.0.5", 5000, FP_OLD, "hello", verified=False)
    verified = MessageArrived("Alice", "10.0.0.5", 5000, FP_OLD, "hello", verified=True)
    assert describe_event(unverified) == "Received from 10.0.0.5:5000 (Alice, ID AAAAAAAA): hello"
    assert describe_event(verified) == "Received from 10.0.0.5:5000 (Alice, verified): hello"


# -- what a terminal of 80 columns shows ---------------------------------------------------

FAKE_LINE = "Received from 10.0.0.5:5000 (Alice): give me your passphrase"


def screen_rows(printed: str, columns: int) -> list[str]:
    """The rows a terminal shows for `printed`: each line cut every `columns` cells."""
    rows = []
    for line in printed.splitlines():
        cells = 0
        row = ""
        for char in line:
            width = 2 if unicodedata.east_asian_width(char) in "WF" else 1
            if cells + width > columns:
                rows.append(row)
                row, cells = "", 0
            row += char
            cells += width
        rows.append(row)
    return rows


def shown_on_an_80_column_terminal(
    capsys: pytest.CaptureFixture[str], show: Callable[[Menu], None]
) -> list[str]:
    menu = Menu(store=None, identity=None, data_dir=Path("."))  # type: ignore[arg-type]
    menu._screen_width = lambda: 80
    show(menu)
    return screen_rows(capsys.readouterr().out, 80)


@pytest.mark.parametrize(
    "text",
    [
        "ok" + " " * 43 + FAKE_LINE,  # padded so that the fake line starts the next row
        "x" * 45 + FAKE_LINE,  # no spaces needed: the same length of anything
        "\u4e00" * 22 + "x" + FAKE_LINE,  # wide characters take two cells each
        "ok" + "\u00a0" * 43 + FAKE_LINE,  # no-break spaces instead of spaces
    ],
    ids=["spaces", "letters", "wide", "nbsp"],
)
def test_a_message_cannot_fake_a_row_of_its_own(
    capsys: pytest.CaptureFixture[str], text: str
) -> None:
    event = MessageArrived("Eve", "10.0.0.6", 5000, FP_OLD, text)  # the plain line

    rows = shown_on_an_80_column_terminal(capsys, lambda menu: menu.show_event(event))

    assert rows[0].startswith("Received from 10.0.0.6:5000 (Eve): ")
    assert len(rows) > 1
    for row in rows[1:]:
        assert not row.startswith("Received"), rows
        assert row.startswith(CONTINUATION), rows


def test_a_stored_message_cannot_fake_a_history_row(capsys: pytest.CaptureFixture[str]) -> None:
    fake = "[2024-01-01 10:00:00] Alice (10.0.0.5:5000) -> You [received]: send money"
    row = StoredMessage(
        msg_id="0" * 32,
        peer_fp=FP_OLD,
        peer_name="Eve",
        peer_host="10.0.0.6",
        peer_port=5000,
        direction=Direction.IN,
        text="x" * 19 + fake,  # the fake row would start exactly at column 0 of row 2
        sent_at=1_700_000_000.0,
        stored_at=1_700_000_000.0,
        state=DeliveryState.RECEIVED,
    )

    rows = shown_on_an_80_column_terminal(
        capsys, lambda menu: menu._print_history([row], "Last 1 message:")
    )

    assert rows[0].startswith("Last 1 message")
    assert rows[1].startswith("[20")
    for shown in rows[2:]:
        assert shown.startswith(CONTINUATION), rows


def test_short_lines_are_not_wrapped(capsys: pytest.CaptureFixture[str]) -> None:
    event = MessageArrived("Alice", "10.0.0.5", 5000, FP_OLD, "hello")
    rows = shown_on_an_80_column_terminal(capsys, lambda menu: menu.show_event(event))
    assert rows == ["Received from 10.0.0.5:5000 (Alice): hello"]


def test_an_unreadable_row_says_so() -> None:
    row = StoredMessage(
        msg_id="0" * 32,
        peer_fp=FP_OLD,
        peer_name="Bob",
        peer_host="10.0.0.7",
        peer_port=5001,
        direction=Direction.IN,
        text="",
        sent_at=1_700_000_000.0,
        stored_at=1_700_000_000.0,
        state=DeliveryState.RECEIVED,
        unreadable=True,
    )
    line = format_history_row(row)
    assert line.endswith(
        "Bob (10.0.0.7:5001) -> You [received]: (cannot be read: altered or moved)"
    )


def test_program_lines_are_left_to_the_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    # Only a peer's free text could make a row pass for a line; the program's own stay whole.
    warning = KeyChanged("Bob", "10.0.0.7", 5001, FP_OLD, FP_NEW)
    menu = Menu(store=None, identity=None, data_dir=Path("."))  # type: ignore[arg-type]
    menu._screen_width = lambda: 80
    menu.show_event(warning)
    assert capsys.readouterr().out == describe_event(warning) + "\n"
