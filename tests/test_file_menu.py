"""Menu options 11 and 12 and the lines transfers print, driven against a fake node."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from crypto_utils import Sealer
from peerchat.events import (
    ActivePeer,
    ConnectResult,
    FileOffered,
    FileOutcome,
    FileProgress,
    FileResult,
    FileTransferEnded,
    IncomingOffer,
)
from peerchat.net.file_store import SourceFile
from peerchat.net.node import Node, NodeConfig
from peerchat.policy.progress import format_size
from peerchat.policy.transfer import TransferOutcome
from peerchat.ui import file_menu
from peerchat.ui.file_menu import (
    FileTransferControl,
    Recipient,
    describe_answer,
    describe_file_event,
    describe_file_result,
    format_duration,
)
from peerchat.ui.menu import MENU, Menu, describe_event
from storage import HistoryStore

BOB = "B" * 52


class Script:
    """Typed lines, one per prompt; the prompts asked are kept."""

    def __init__(self, *lines: str) -> None:
        self.lines = list(lines)
        self.prompts: list[str] = []

    def read(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if not self.lines:
            raise EOFError
        return self.lines.pop(0)


class FakeNode:
    # Discovery off: a name that is not known is not waited for.
    config = NodeConfig(name="Me", port=1, data_dir=Path("."), discovery=False)

    def __init__(self) -> None:
        self.sent: list[tuple[str, SourceFile]] = []
        self.answers: list[tuple[str, bool]] = []
        self.waiting = [
            IncomingOffer("k1", "Alice", "A" * 52, "report.pdf", 2_400_000),
            IncomingOffer("k2", "Eve\x1b[31m", "E" * 52, "evil\x07.txt", 12),
        ]
        self.connected: list[tuple[str, int]] = []

    def active_peers(self) -> list[ActivePeer]:
        return [ActivePeer(BOB, "Bob", "127.0.0.1", 5001, False, 0.0)]

    def connect(self, host: str, port: int) -> ConnectResult:
        self.connected.append((host, port))
        return ConnectResult(False, host, port, detail="connection refused")

    def send_file(self, fingerprint: str, source: SourceFile) -> FileResult:
        self.sent.append((fingerprint, source))
        return FileResult(FileOutcome.OFFERED, source.name, "Bob")

    def file_offers(self) -> list[IncomingOffer]:
        return list(self.waiting)

    def answer_offer(self, key: str, accept: bool) -> FileResult:
        self.answers.append((key, accept))
        outcome = FileOutcome.ACCEPTED if accept else FileOutcome.DECLINED
        return FileResult(outcome, "report.pdf", "Alice", "/home/bob/downloads")


@pytest.fixture
def said() -> list[str]:
    return []


def test_the_fake_node_is_what_the_menu_expects() -> None:
    assert isinstance(FakeNode(), FileTransferControl)
    assert not isinstance(object(), FileTransferControl)


def test_menu_shows_options_11_and_12_only_with_a_node_that_transfers_files() -> None:
    menu = Menu(store=None, identity=None, data_dir=Path("."))  # type: ignore[arg-type]
    assert menu.menu_text(cast(Node, object())) == MENU
    with_files = menu.menu_text(cast(Node, FakeNode()))
    assert with_files.endswith("11. Send file\n12. Answer file offers\n0. Quit")
    assert with_files.startswith(MENU.removesuffix("0. Quit"))


def test_send_file_offers_a_checked_and_hashed_file(tmp_path: Path, said: list[str]) -> None:
    path = tmp_path / "report.pdf"
    path.write_bytes(b"%PDF-1.7 data")
    node = FakeNode()
    script = Script(str(path))
    file_menu.send_file(script, said.append, node, lambda r: Recipient(BOB))
    ((fp, source),) = node.sent
    assert fp == BOB
    assert (source.name, source.size) == ("report.pdf", 13)
    assert source.sha256 == hashlib.sha256(b"%PDF-1.7 data").digest()
    assert said == ["Offered report.pdf to Bob: it is sent once Bob accepts."]
    assert script.prompts == ["Enter the file's path: "]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "is a folder, not a file"),
    ],
    ids=["missing", "folder"],
)
def test_a_path_that_is_not_a_readable_file_is_one_clear_line(
    tmp_path: Path, said: list[str], make: object, expected: str
) -> None:
    path = tmp_path / "thing"
    make(path)  # type: ignore[operator]
    node = FakeNode()
    file_menu.send_file(Script(str(path)), said.append, node, lambda r: Recipient(BOB))
    assert node.sent == []
    (line,) = said
    assert line.startswith(f"Cannot send {path}: ") and expected in line
    assert "\n" not in line


def test_no_recipient_asks_for_no_path(said: list[str]) -> None:
    script = Script()
    file_menu.send_file(script, said.append, FakeNode(), lambda r: Recipient(error="No peer."))
    assert said == ["No peer."]
    assert script.prompts == []


def test_answer_offers_lists_them_and_accepts_one(said: list[str]) -> None:
    node = FakeNode()
    script = Script("1", "a")
    file_menu.answer_offers(script, said.append, node)
    assert said[0].splitlines() == [
        "Incoming file offers:",
        "  1. Alice offers report.pdf (2.4 MB)",
        "  2. Eve\\x1b[31m offers evil\\x07.txt (12 bytes)",
    ]
    assert script.prompts == [
        "Offer to answer (number, empty to go back): ",
        "Accept or decline report.pdf from Alice? (a/d): ",
    ]
    assert node.answers == [("k1", True)]
    assert said[1] == (
        "Accepted report.pdf from Alice: it is saved in /home/bob/downloads once it has "
        "arrived whole."
    )


@pytest.mark.parametrize(
    ("lines", "answers", "last"),
    [
        (("2", "d"), [("k2", False)], "Declined report.pdf from Alice."),
        (("",), [], "Incoming file offers:"),
        (("9",), [], "No offer number 9."),
        (("1", "maybe"), [], "Not answered: type a to accept or d to decline."),
    ],
)
def test_answer_offers_other_answers(
    said: list[str], lines: tuple[str, ...], answers: list[tuple[str, bool]], last: str
) -> None:
    node = FakeNode()
    file_menu.answer_offers(Script(*lines), said.append, node)
    assert node.answers == answers
    assert said[-1].splitlines()[0] == last


def test_no_offers_waiting(said: list[str]) -> None:
    node = FakeNode()
    node.waiting = []
    file_menu.answer_offers(Script(), said.append, node)
    assert said == ["No file offers waiting."]


@pytest.fixture
def menu(tmp_path: Path) -> Iterator[Menu]:
    store = HistoryStore.open(tmp_path / "h.db", Sealer.generate())
    yield Menu(store=store, identity=None, data_dir=tmp_path)  # type: ignore[arg-type]
    store.close()


def test_option_11_takes_the_recipient_as_option_1_does(
    menu: Menu, tmp_path: Path, said: list[str]
) -> None:
    menu.say = said.append  # type: ignore[method-assign,assignment]
    path = tmp_path / "a.txt"
    path.write_text("hi")
    node = FakeNode()
    menu._dispatch("11", Script("Bob", str(path)), node)  # type: ignore[arg-type]
    assert node.sent[0][0] == BOB
    menu._dispatch("11", Script("1", str(path)), node)  # type: ignore[arg-type]
    assert node.sent[1][0] == BOB  # by number from option 2
    script = Script("127.0.0.1", "5009")
    menu._dispatch("11", script, node)  # type: ignore[arg-type]
    assert node.connected == [("127.0.0.1", 5009)]
    assert len(node.sent) == 2
    assert said[-1] == (
        "Failed to connect to 127.0.0.1:5009 - connection refused; never reached before, "
        "so the offer cannot wait for it."
    )
    assert script.prompts == ["Enter recipient's IP: ", "Enter recipient's port number: "]


def test_options_11_and_12_are_invalid_without_file_transfer(menu: Menu, said: list[str]) -> None:
    menu.say = said.append  # type: ignore[method-assign,assignment]

    class OldNode:
        def active_peers(self) -> list[ActivePeer]:
            return []

    menu._dispatch("12", Script(), OldNode())  # type: ignore[arg-type]
    menu._dispatch("11", Script(), OldNode())  # type: ignore[arg-type]
    assert said == ["Invalid choice. Please enter a number from the menu."] * 2


# -- lines ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "shown"),
    [
        (0, "0 bytes"),
        (1, "1 byte"),
        (999, "999 bytes"),
        (1000, "1.0 kB"),
        (2_400_000, "2.4 MB"),
        (24_000_000, "24 MB"),
        (999_400_000, "999 MB"),
        (999_600_000, "1.0 GB"),
        (4 * 1024**3, "4.3 GB"),
        (10**18, "1000 PB"),
    ],
)
def test_sizes_for_people(size: int, shown: str) -> None:
    assert format_size(size) == shown


def test_durations_for_people() -> None:
    assert [format_duration(s) for s in (0, 3.4, 59.6, 125, 3725)] == [
        "0 s",
        "3 s",
        "1 min 0 s",
        "2 min 5 s",
        "1 h 2 min",
    ]


def test_the_offer_line_says_how_to_answer() -> None:
    line = describe_event(FileOffered("Alice", "A" * 52, "report.pdf", 2_400_000))
    assert line == "Alice offers report.pdf (2.4 MB): option 12 to accept or decline."


def test_progress_lines() -> None:
    line = describe_file_event(
        FileProgress("Alice", "big.iso", False, 450_000_000, 1_000_000_000, 12_300_000, 44.7)
    )
    assert line == "Receiving big.iso from Alice: 45% (450 MB of 1.0 GB), 12 MB/s, 45 s left"
    early = describe_file_event(FileProgress("Bob", "x", True, 0, 10, None, None))
    assert early == "Sending x to Bob: 0% (0 bytes of 10 bytes)"


@pytest.mark.parametrize(
    ("event", "line"),
    [
        (
            FileTransferEnded("Bob", "r.pdf", True, TransferOutcome.COMPLETE, 2_400_000),
            "Sent r.pdf to Bob (2.4 MB).",
        ),
        (
            FileTransferEnded(
                "Alice", "r.pdf", False, TransferOutcome.COMPLETE, 5, saved_as="/d/r (1).pdf"
            ),
            "Received r.pdf from Alice (5 bytes): saved as /d/r (1).pdf",
        ),
        (
            FileTransferEnded("Bob", "r.pdf", True, TransferOutcome.DECLINED, 5, "declined"),
            "Bob declined r.pdf.",
        ),
        (
            FileTransferEnded(
                "Bob", "r.pdf", True, TransferOutcome.DECLINED, 5, "too many offers waiting"
            ),
            "Bob declined r.pdf: too many offers waiting.",
        ),
        (
            FileTransferEnded(
                "Alice", "huge.iso", False, TransferOutcome.DECLINED, 5_000_000_000, "too big"
            ),
            "Declined huge.iso from Alice (5.0 GB): too big.",
        ),
        (
            FileTransferEnded(
                "Alice", "r.pdf", False, TransferOutcome.FAILED, 5, "a chunk did not fit"
            ),
            "Receiving r.pdf from Alice failed: a chunk did not fit; nothing was kept.",
        ),
        (
            FileTransferEnded("Bob", "r.pdf", True, TransferOutcome.FAILED, 5, "gone"),
            "Sending r.pdf to Bob failed: gone.",
        ),
        (
            FileTransferEnded(
                "Alice", "r.pdf", False, TransferOutcome.STALLED, 5, "quiet", kept=1_200_000
            ),
            "Receiving r.pdf from Alice stalled (quiet): 1.2 MB kept; it resumes when Alice "
            "is back.",
        ),
    ],
)
def test_end_lines(event: FileTransferEnded, line: str) -> None:
    assert describe_event(event) == line


def test_names_from_the_network_are_made_displayable() -> None:
    line = describe_event(FileOffered("Eve\x1b[2J", "E" * 52, "x\rY.txt", 1))
    assert "\x1b" not in line and "\r" not in line


def test_results() -> None:
    assert describe_file_result(FileResult(FileOutcome.QUEUED, "r.pdf", "Bob")) == (
        "Bob is not connected: the offer of r.pdf waits and goes out when Bob is back."
    )
    assert describe_file_result(
        FileResult(FileOutcome.NOT_SENT, "r.pdf", "Bob", "cannot record it: disk full")
    ) == ("r.pdf not offered: cannot record it: disk full.")
    assert describe_answer(
        FileResult(FileOutcome.NOT_SENT, "r.pdf", "Alice", "not enough free space")
    ) == ("Cannot accept r.pdf from Alice: not enough free space.")
    assert describe_answer(FileResult(FileOutcome.UNKNOWN, "", "")) == (
        "That offer is no longer waiting."
    )
