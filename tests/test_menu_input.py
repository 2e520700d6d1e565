"""A scripted menu read from a pipe: lines as sys.stdin gives them, output in one write."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from crypto_utils import Identity
from peerchat.events import ActivePeer, Outcome, SendResult
from peerchat.net.node import Node
from peerchat.ui.menu import Menu, PipeReader
from storage import HistoryStore


class Pipe:
    """Chunks as os.read would return them; a log of prompts, flushes and reads."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)
        self.log: list[str] = []

    def write(self, text: str) -> None:
        self.log.append(f"write {text}")

    def flush(self) -> None:
        self.log.append("flush")

    def read(self, size: int) -> bytes:
        assert size > 0
        self.log.append("read")
        return self.chunks.pop(0) if self.chunks else b""

    def reader(self) -> PipeReader:
        return PipeReader(self.write, self.flush, self.read, encoding="utf-8", errors="strict")


def test_lines_are_split_as_sys_stdin_splits_them() -> None:
    pipe = Pipe(b"1\r\n127.0.0.1\n50", b"01\nh\xc3", b"\xa9llo\r\n\nno newline\r")
    reader = pipe.reader()
    lines = [reader.read("> ") for _ in range(6)]
    assert lines == ["1", "127.0.0.1", "5001", "h\u00e9llo", "", "no newline"]
    with pytest.raises(EOFError):
        reader.read("> ")
    with pytest.raises(EOFError):
        reader.read("> ")


def test_a_carriage_return_inside_a_line_stays() -> None:
    reader = Pipe(b"a\rb\r\n").reader()
    assert reader.read("") == "a\rb"


def test_a_script_that_has_arrived_is_answered_without_a_flush_per_prompt() -> None:
    pipe = Pipe(b"1\n127.0.0.1\n5001\nhello\n")
    reader = pipe.reader()
    answers = [reader.read(p) for p in ("choice: ", "IP: ", "port: ", "message: ")]
    assert answers == ["1", "127.0.0.1", "5001", "hello"]
    # One flush before the only read that had to wait; the other prompts ride along.
    assert pipe.log == [
        "write choice: ",
        "flush",
        "read",
        "write IP: ",
        "write port: ",
        "write message: ",
    ]


def test_the_prompt_is_flushed_before_waiting_for_its_answer() -> None:
    pipe = Pipe(b"1\n", b"2\n")
    reader = pipe.reader()
    reader.read("first: ")
    reader.read("second: ")
    assert pipe.log == ["write first: ", "flush", "read", "write second: ", "flush", "read"]


# -- the menu's own output in a pipe: kept only while nothing can wait for it ------

BOB = "b0" * 32


class Screen(io.StringIO):
    """What the menu has written so far (flushes are no-ops)."""


class FakeNode:
    """Option 1's and option 2's calls, noting what the screen showed when each came."""

    def __init__(self, screen: Screen, bob_listed_after: int) -> None:
        self.config = SimpleNamespace(discovery=True)
        self.screen = screen
        self.seen: list[str] = []
        self._lists = 0
        self._bob_listed_after = bob_listed_after

    def active_peers(self) -> list[ActivePeer]:
        self.seen.append(self.screen.getvalue())
        self._lists += 1
        if self._lists <= self._bob_listed_after:
            return []
        return [ActivePeer(BOB, "Bob", "127.0.0.1", 5001, verified=False, last_seen=0.0)]

    def exchange_hostile(self) -> dict[str, int]:
        return {}

    def send_to_peer(self, fingerprint: str, text: str) -> SendResult:
        self.seen.append(self.screen.getvalue())
        return SendResult(Outcome.DELIVERED, "127.0.0.1", 5001, "Bob", fingerprint=fingerprint)


def piped_menu(script: bytes, tmp_path: Path) -> tuple[Menu, Screen, PipeReader]:
    menu = Menu(
        store=cast(HistoryStore, cast(Any, SimpleNamespace(pins=dict))),  # nobody pinned
        identity=cast(Identity, cast(Any, None)),
        data_dir=tmp_path,
    )
    screen = Screen()
    menu._terminal = screen
    menu._flush_each = False  # as `run` sets it when standard input is not a terminal
    chunks = [script]
    reader = PipeReader(
        menu._write,
        menu._before_waiting,
        lambda size: chunks.pop(0) if chunks else b"",
        encoding="utf-8",
        errors="strict",
    )
    return menu, screen, reader


def test_option_1_shows_its_prompts_before_the_send_and_keeps_its_result(
    tmp_path: Path,
) -> None:
    menu, screen, reader = piped_menu(b"Bob\nhello\n", tmp_path)
    node = FakeNode(screen, bob_listed_after=0)
    menu._dispatch("1", reader, cast(Node, cast(Any, node)))
    assert node.seen[-1].endswith("Enter recipient's IP: Enter your message: ")
    assert "Message sent" not in screen.getvalue()  # kept: the menu does not wait after it
    menu._before_waiting()
    assert screen.getvalue().endswith("Message sent to 127.0.0.1:5001 (Bob, b0b0b0b0)\n")


def test_the_wait_for_a_name_is_announced_before_it_waits(tmp_path: Path) -> None:
    menu, screen, reader = piped_menu(b"Bob\nhello\n", tmp_path)
    node = FakeNode(screen, bob_listed_after=1)  # listed once the menu waits for it
    menu._dispatch("1", reader, cast(Node, cast(Any, node)))
    first_look_while_waiting = node.seen[1]
    assert "Bob is not known yet: waiting up to" in first_look_while_waiting


def test_other_options_write_each_line_as_it_is_said(tmp_path: Path) -> None:
    menu, screen, reader = piped_menu(b"", tmp_path)
    menu.say("kept line")
    node = FakeNode(screen, bob_listed_after=1)
    menu._dispatch("2", reader, cast(Node, cast(Any, node)))
    assert node.seen[0] == "kept line\n"  # out before option 2 asked the network
    assert screen.getvalue() == "kept line\nNo connected peers.\n"
