"""Comparing a code between real peer_chat processes on loopback, as two people would.

These need the node to run peerchat/net/verification.py (its docstring says
how it is wired); the file is named so that pytest does not collect it until
then, when it becomes tests/test_verify_e2e.py.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT, Peer, child_env, free_tcp_port, peer_args, peer_rows

pytestmark = pytest.mark.slow

CODE = r"(\d{3} \d{3})"
PEER_PROMPT = "Peer to verify (number, name, or c<number> to re-trust):"
MATCH_PROMPT = "Do they match? Type yes to mark verified:"
MIDDLE = "someone may be in the middle"


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    for peer in started:
        peer.close()


def connected_pair(tmp: Path, peers: list[Peer]) -> tuple[Peer, Peer]:
    """Alice and Bob, without discovery, with a session opened by Bob (option 4)."""
    alice = Peer("Alice", tmp, None)
    bob = Peer("Bob", tmp, None)
    peers += [alice, bob]
    bob.connect("127.0.0.1", alice.port)
    bob.expect_text(f"Connected to {alice.addr} (Alice)")
    alice.expect_text(f"Peer Bob connected from {bob.addr}")
    return alice, bob


def codes_on_both_screens(alice: Peer, bob: Peer) -> str:
    """Alice asks from option 6; Bob is told and answers from option 6. Both codes."""
    alice.choose("6")
    alice.answer(PEER_PROMPT, "Bob")
    alice.expect_text("Or type code to compare a six-digit code with Bob.")
    alice.answer(MATCH_PROMPT, "code")
    alice.expect(f"Code for you and Bob: {CODE}")
    alice_code = str(alice.child.match.group(1))
    bob.expect_text("asks to compare a code with you: choose 6 and pick Alice.")
    bob.expect_menu()
    bob.choose("6")
    bob.expect_text("asks to compare a code: pick Alice.")
    bob.answer(PEER_PROMPT, "Alice")
    bob.expect(f"Code for you and Alice: {CODE}")
    assert str(bob.child.match.group(1)) == alice_code
    return alice_code


def verified_column(peer: Peer) -> list[bool]:
    return [row.verified for row in peer_rows(peer.peers_table())]


def test_yes_on_both_screens_marks_both_verified(tmp_path: Path, peers: list[Peer]) -> None:
    alice, bob = connected_pair(tmp_path, peers)
    assert verified_column(alice) == [False] and verified_column(bob) == [False]
    code = codes_on_both_screens(alice, bob)
    alice.answer(f"Does Bob's screen show {code}? Type yes or no:", "yes")
    alice.expect_text("Waiting for Bob's answer: the result will be shown here.")
    bob.answer(f"Does Alice's screen show {code}? Type yes or no:", "yes")
    bob.expect_text("Alice is now verified: both of you saw the same code.")
    alice.expect_text("Bob is now verified: both of you saw the same code.")
    alice.expect_menu()
    bob.expect_menu()
    assert verified_column(alice) == [True] and verified_column(bob) == [True]
    # Marked where the peer's words appear, too.
    bob.send_to("Alice", "hello, verified")
    alice.expect_text(f"Received from {bob.addr} (Bob, verified): hello, verified")
    assert "Bob (127.0.0.1" in alice.history() and ", verified) -> You" in alice.history()


def test_no_on_one_screen_marks_nobody_and_warns_both(tmp_path: Path, peers: list[Peer]) -> None:
    alice, bob = connected_pair(tmp_path, peers)
    code = codes_on_both_screens(alice, bob)
    alice.answer(f"Does Bob's screen show {code}? Type yes or no:", "yes")
    bob.answer(f"Does Alice's screen show {code}? Type yes or no:", "no")
    bob.expect_text(f"WARNING: the codes differ; {MIDDLE} between you and Alice")
    alice.expect_text(f"WARNING: Bob saw a different code; {MIDDLE} between you and Bob")
    alice.expect_menu()
    bob.expect_menu()
    assert verified_column(alice) == [False] and verified_column(bob) == [False]
    for peer in (alice, bob):
        log = (peer.data_dir / "peer_chat.log").read_text(encoding="utf-8")
        assert MIDDLE in log


def test_an_unanswered_request_expires_on_both_sides(tmp_path: Path, peers: list[Peer]) -> None:
    alice, bob = connected_pair(tmp_path, peers)
    alice.choose("6")
    alice.answer(PEER_PROMPT, "Bob")
    alice.answer(MATCH_PROMPT, "code")
    alice.expect(f"Code for you and Bob: {CODE}")
    code = str(alice.child.match.group(1))
    bob.expect_text("asks to compare a code with you")
    alice.answer(f"Does Bob's screen show {code}? Type yes or no:", "yes")
    # Bob never answers: two minutes after the request, both are told.
    expired = "expired: nothing was marked verified."
    alice.expect_text(f"The code comparison with Bob {expired}", timeout=150)
    bob.expect_text(f"The code comparison with Alice {expired}", timeout=30)
    assert verified_column(alice) == [False] and verified_column(bob) == [False]


# -- piped standard input: the same, answered as lines ----------------------------------


class PipedPeer:
    """peer_chat.py with piped stdin/stdout and no discovery; output collected as it comes."""

    def __init__(self, name: str, tmp: Path) -> None:
        self.name = name
        self.port = free_tcp_port()
        args = peer_args(name, self.port, tmp / name, None)
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
            env=child_env(),
        )
        self._text = ""
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while chunk := os.read(self.proc.stdout.fileno(), 65536):
            with self._changed:
                self._text += decoder.decode(chunk)
                self._changed.notify_all()

    def expect(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        found: list[re.Match[str]] = []

        def seen() -> bool:
            match = re.search(pattern, self._text)
            if match:
                found.append(match)
            return match is not None

        with self._changed:
            if not self._changed.wait_for(seen, timeout):
                pytest.fail(f"{self.name}: no {pattern!r} in:\n{self._text[-2000:]}")
        return found[-1]

    def write(self, lines: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(lines.encode())
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def test_comparing_a_code_in_piped_mode(tmp_path: Path) -> None:
    alice, bob = PipedPeer("Alice", tmp_path), PipedPeer("Bob", tmp_path)
    try:
        alice.expect(f"Server listening on port {alice.port}")
        bob.expect(f"Server listening on port {bob.port}")
        bob.write(f"4\n127.0.0.1\n{alice.port}\n")
        alice.expect("Peer Bob connected from")
        alice.write("6\nBob\ncode\n")
        code = alice.expect(f"Code for you and Bob: {CODE}").group(1)
        bob.expect("asks to compare a code with you: choose 6 and pick Alice")
        bob.write("6\nAlice\n")
        assert bob.expect(f"Code for you and Alice: {CODE}").group(1) == code
        alice.write("yes\n")
        bob.write("yes\n")
        bob.expect("Alice is now verified: both of you saw the same code.")
        alice.expect("Bob is now verified: both of you saw the same code.")
        alice.write("2\n")
        alice.expect(r"Bob\s+127\.0\.0\.1:\d+\s+[A-Z2-7]{8}\s+yes")
    finally:
        alice.close()
        bob.close()
