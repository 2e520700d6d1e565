"""A network thread that does not answer gives the menu a clear line, never a hang or traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from crypto_utils import Identity
from peerchat.errors import NotAnswering
from peerchat.net.node import Node
from peerchat.ui.menu import Menu
from storage import HistoryStore


class StuckNode:
    def active_peers(self) -> list[object]:
        raise NotAnswering("the network part of this peer is not answering")


class NoInput:
    def read(self, prompt: str) -> str:
        raise AssertionError(f"no question expected, got {prompt!r}")


def test_a_call_that_times_out_is_one_line_and_the_menu_goes_on(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    menu = Menu(
        store=cast(HistoryStore, cast(Any, None)),
        identity=cast(Identity, cast(Any, None)),
        data_dir=tmp_path,
    )
    menu._dispatch("2", NoInput(), cast(Node, cast(Any, StuckNode())))
    out = capsys.readouterr().out
    assert out == "Not done: the network part of this peer is not answering. Please try again.\n"
