"""What the menu shows of legacy peers, and option 8 driven line by line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from peerchat.events import (
    ActivePeer,
    LegacyMessageArrived,
    LegacyOutcome,
    LegacyPeer,
    LegacyPeerDiscovered,
    LegacyPeerLeft,
    LegacySendResult,
)
from peerchat.ui.legacy_menu import (
    describe_legacy_send,
    legacy_section,
    listed_number,
    with_legacy_option,
)
from peerchat.ui.menu import MENU, Menu, describe_event, format_history_row
from storage import DeliveryState, Direction, StoredMessage

# -- lines ---------------------------------------------------------------------------


def test_incoming_legacy_line_says_unencrypted() -> None:
    line = describe_event(LegacyMessageArrived("10.0.0.5", 5000, "Team7", "hello"))
    assert line == "Received from 10.0.0.5:5000 (Team7) [unencrypted]: hello"


def test_hostile_legacy_text_stays_one_visible_line() -> None:
    text = "hi\nReceived from 1.2.3.4:5 (Bob): trust me\x1b[2J"
    line = describe_event(LegacyMessageArrived("10.0.0.5", 5000, "Eve\x1b[31m", text))
    assert "\n" not in line and "\x1b" not in line
    assert line.startswith("Received from 10.0.0.5:5000 (Eve")
    assert "[unencrypted]: hi \\nReceived" in line


def test_legacy_peer_news() -> None:
    assert describe_event(LegacyPeerDiscovered("Bob", "10.0.0.7", 5001)) == (
        "Discovered legacy peer Bob at 10.0.0.7:5001 [unencrypted, unverified]"
    )
    assert describe_event(LegacyPeerLeft("Bob", "10.0.0.7", 5001, "said exit")) == (
        "Legacy peer Bob at 10.0.0.7:5001 left (said exit)."
    )


def test_send_results() -> None:
    sent = LegacySendResult(LegacyOutcome.SENT, "10.0.0.7", 5001, "text")
    assert describe_legacy_send(sent) == (
        "Message sent to 10.0.0.7:5001 (unencrypted, not acknowledged)"
    )
    failed = LegacySendResult(LegacyOutcome.FAILED, "10.0.0.7", 5001, "connection refused")
    assert describe_legacy_send(failed) == (
        "Failed to connect to 10.0.0.7:5001 - connection refused (nothing sent)"
    )
    refused = LegacySendResult(LegacyOutcome.REFUSED, "10.0.0.7", 5001, "too long")
    assert describe_legacy_send(refused) == "Message not sent to 10.0.0.7:5001: too long."


def test_legacy_section_lists_team_address_format_and_last_seen() -> None:
    peers = [
        LegacyPeer("Bob", "10.0.0.7", 5001, "original (shared key)", 990.0),
        LegacyPeer("Carol\x1b", "10.0.0.8", 6000, "text", 1000.0),
    ]
    lines = legacy_section(peers, now=1000.0).splitlines()
    assert lines[0] == "Legacy peers (unencrypted, unverified):"
    assert lines[1].split() == ["#", "Team", "Address", "Speaks", "Last", "seen"]
    assert lines[2].split() == [
        "L1",
        "Bob",
        "10.0.0.7:5001",
        "original",
        "(shared",
        "key)",
        "10s",
        "ago",
    ]
    assert lines[3].split()[:3] == ["L2", "Carol\\x1b", "10.0.0.8:6000"]
    assert legacy_section([], 0) == "Legacy peers (unencrypted, unverified): none heard yet."


def test_history_rows_of_legacy_messages() -> None:
    def row(direction: Direction, state: DeliveryState, detail: str | None) -> StoredMessage:
        return StoredMessage(
            "0" * 32,
            None,
            "Team7",
            "10.0.0.5",
            7000,
            direction,
            "hi",
            1.7e9,
            1.7e9,
            state,
            detail,
            legacy=True,
        )

    received = format_history_row(row(Direction.IN, DeliveryState.RECEIVED, None))
    assert received.endswith("Team7 (10.0.0.5:7000) -> You [unencrypted]: hi")
    sent = format_history_row(row(Direction.OUT, DeliveryState.DELIVERED, "not acknowledged"))
    assert sent.endswith("You -> Team7 (10.0.0.5:7000) [unencrypted, sent, not acknowledged]: hi")
    failed = format_history_row(row(Direction.OUT, DeliveryState.FAILED, "connection refused"))
    assert failed.endswith("[unencrypted, failed: connection refused]: hi")


def test_option_8_sits_in_number_order_above_quit() -> None:
    lines = with_legacy_option(MENU).splitlines()
    at = lines.index("8. Send to a legacy peer (unencrypted)")
    assert lines[at - 1].startswith("7.")
    assert lines[-1] == "0. Quit"
    assert lines[:at] + lines[at + 1 :] == MENU.splitlines()


@pytest.mark.parametrize(("text", "number"), [("L2", 2), ("l12", 12), ("3", 3), ("L", None)])
def test_list_numbers(text: str, number: int | None) -> None:
    assert listed_number(text) == number
    assert listed_number("10.0.0.1") is None


# -- option 8, driven -------------------------------------------------------------------


@dataclass
class FakeBridge:
    listed: list[LegacyPeer] = field(default_factory=list)
    sent: list[tuple[str, int, str]] = field(default_factory=list)
    outcome: LegacyOutcome = LegacyOutcome.SENT
    port: int = 6000

    def peers(self) -> list[LegacyPeer]:
        return list(self.listed)

    def send(self, host: str, port: int, text: str) -> LegacySendResult:
        self.sent.append((host, port, text))
        return LegacySendResult(self.outcome, host, port, "why")


@dataclass
class FakeNode:
    active: list[ActivePeer] = field(default_factory=list)

    def active_peers(self) -> list[ActivePeer]:
        return list(self.active)


class Script:
    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.prompts: list[str] = []

    def read(self, prompt: str) -> str:
        self.prompts.append(prompt)
        return self.answers.pop(0)


def make_menu(tmp_path: Path, bridge: FakeBridge | None) -> Menu:
    return Menu(store=cast(Any, None), identity=cast(Any, None), data_dir=tmp_path, legacy=bridge)


def drive(menu: Menu, node: FakeNode, choice: str, *answers: str) -> Script:
    script = Script(*answers)
    menu._dispatch(choice, script, cast(Any, node))
    assert not script.answers, "questions not asked: " + repr(script.answers)
    return script


def test_send_by_address(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bridge = FakeBridge()
    script = drive(make_menu(tmp_path, bridge), FakeNode(), "8", "127.0.0.1", "7000", "hi there")
    assert script.prompts == [
        "Enter legacy peer's IP (or L-number from option 2): ",
        "Enter legacy peer's port number: ",
        "Enter your message: ",
    ]
    assert bridge.sent == [("127.0.0.1", 7000, "hi there")]
    assert (
        "Message sent to 127.0.0.1:7000 (unencrypted, not acknowledged)" in capsys.readouterr().out
    )


def test_send_by_number_from_option_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bridge = FakeBridge([LegacyPeer("Bob", "10.0.0.7", 5001, "text", 0.0)])
    menu = make_menu(tmp_path, bridge)
    drive(menu, FakeNode(), "2")
    shown = capsys.readouterr().out
    assert "No connected peers." in shown  # the keyed list as before
    assert "Legacy peers (unencrypted, unverified):" in shown and "L1" in shown
    script = drive(menu, FakeNode(), "8", "L1", "hello")
    assert len(script.prompts) == 2  # no port asked
    assert bridge.sent == [("10.0.0.7", 5001, "hello")]


@pytest.mark.parametrize(
    ("answers", "said"),
    [
        (("L5",), "No legacy peer number L5: see option 2."),
        (("127.0.0.1", "port"), "Invalid port number."),
        (("127.0.0.1", "70000"), "Invalid port number."),
        (("",), "No recipient given."),
        (("127.0.0.1", "7000", "  "), "Empty message: nothing sent."),
    ],
)
def test_nothing_is_sent_on_a_wrong_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], answers: tuple[str, ...], said: str
) -> None:
    bridge = FakeBridge()
    drive(make_menu(tmp_path, bridge), FakeNode(), "8", *answers)
    assert bridge.sent == []
    assert said in capsys.readouterr().out


def test_a_keyed_peer_is_never_sent_plain_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bridge = FakeBridge()
    node = FakeNode([ActivePeer("F" * 52, "Bob", "127.0.0.1", 5001, False, 0.0)])
    drive(make_menu(tmp_path, bridge), node, "8", "127.0.0.1", "5001")
    assert bridge.sent == []
    assert "is a peer_chat peer: use option 1 (encrypted)" in capsys.readouterr().out


def test_without_legacy_flags_the_menu_is_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    menu = make_menu(tmp_path, None)
    assert menu.menu_text(cast(Any, FakeNode())) == MENU
    drive(menu, FakeNode(), "8")
    assert "Invalid choice" in capsys.readouterr().out
    drive(menu, FakeNode(), "2")
    assert "Legacy" not in capsys.readouterr().out
