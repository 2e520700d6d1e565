"""A scripted menu read from a pipe: lines as sys.stdin gives them, output in one write."""

from __future__ import annotations

import pytest

from peerchat.ui.menu import PipeReader


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
