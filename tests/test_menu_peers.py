"""Option 2: the keyed peers' table, and the note on hostile peer-exchange records under it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from peerchat.events import ActivePeer
from peerchat.ui.menu import Menu, hostile_exchange_note

BOB = "B" * 52


@dataclass
class FakeNode:
    peers: list[ActivePeer] = field(default_factory=list)
    hostile: dict[str, int] = field(default_factory=dict)

    def active_peers(self) -> list[ActivePeer]:
        return list(self.peers)

    def exchange_hostile(self) -> dict[str, int]:
        return dict(self.hostile)


class NoInput:
    def read(self, prompt: str) -> str:
        raise AssertionError(f"no question expected, got {prompt!r}")


def option_2(tmp_path: Path, node: FakeNode, capsys: pytest.CaptureFixture[str]) -> str:
    menu = Menu(store=cast(Any, None), identity=cast(Any, None), data_dir=tmp_path)
    menu._dispatch("2", NoInput(), cast(Any, node))
    return capsys.readouterr().out


def test_hostile_records_are_said_under_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bob = ActivePeer(BOB, "Bob", "10.0.0.7", 5001, False, 0.0, found="via Alice")
    node = FakeNode([bob], {"bad signature": 3, "rate limited": 1})
    out = option_2(tmp_path, node, capsys)
    table, _, note = out.partition("via Alice")
    assert "Bob" in table
    assert note.strip() == (
        "4 peer-exchange records from connected peers dropped as hostile "
        "(bad signature 3, rate limited 1); see the log."
    )


def test_the_note_is_said_with_no_peer_listed_and_not_at_all_when_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = option_2(tmp_path, FakeNode([], {"malformed": 1}), capsys)
    assert out.splitlines() == ["No connected peers.", hostile_exchange_note({"malformed": 1})]
    assert "1 peer-exchange record from" in out
    assert option_2(tmp_path, FakeNode([], {}), capsys) == "No connected peers.\n"
