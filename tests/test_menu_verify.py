"""Options 5 and 6 with code comparison and safety numbers, and the verified marks.

The menu runs against a stand-in node and verifier (the node wiring is tested
end to end elsewhere); its input is scripted lines, as in piped mode.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from crypto_utils import Identity, Sealer, fingerprint_of, short_id
from peerchat.events import (
    ActivePeer,
    CodeRefused,
    CodeRequested,
    CodeShown,
    ConnectResult,
    Ending,
    KeyChanged,
    KeyConflict,
    MessageArrived,
    Outcome,
    PeerRenamed,
    SendResult,
    VerificationEnded,
)
from peerchat.net.node import Node
from peerchat.net.verification import CodeResult, Verifier
from peerchat.protocol.sas import format_safety_number, safety_number
from peerchat.ui.menu import (
    Menu,
    describe_connect,
    describe_ending,
    describe_event,
    describe_send,
    format_history_row,
)
from storage import DeliveryState, Direction, HistoryStore, StoredMessage

ATTEMPT = b"\x05" * 16
OLD_PROMPTS = [
    "Peer to verify (number, name, or c<number> to re-trust): ",
    "Do they match? Type yes to mark verified: ",
]


def make_identity() -> Identity:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return Identity(key, der, fingerprint_of(der))


@pytest.fixture(scope="module")
def me() -> Identity:
    return make_identity()


@pytest.fixture(scope="module")
def bob() -> Identity:
    return make_identity()


class Script:
    """Answers given as lines, and the prompts that asked for them."""

    def __init__(self, *lines: str) -> None:
        self.lines = list(lines)
        self.prompts: list[str] = []

    def read(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if not self.lines:
            raise EOFError
        return self.lines.pop(0)


class FakeNode:
    def __init__(self, peers: list[ActivePeer], store: HistoryStore | None = None) -> None:
        self.peers = peers
        self.store = store

    def verify(self, fingerprint: str) -> None:
        # What the node's facade does for option 6: the store, then its own list.
        assert self.store is not None
        self.store.set_verified(fingerprint, True)
        for peer in self.peers:
            if peer.fingerprint == fingerprint:
                peer.verified = True

    def active_peers(self) -> list[ActivePeer]:
        return list(self.peers)

    def key_conflicts(self) -> list[KeyConflict]:
        return []


class FakeVerifier:
    def __init__(
        self,
        start: CodeResult | None = None,
        waiting: list[CodeShown] | None = None,
        ending: Ending | None = None,
    ) -> None:
        self.started: list[str] = []
        self.answers: list[tuple[CodeShown, bool | None]] = []
        self._start = start
        self._waiting = waiting or []
        self._ending = ending

    def start(self, fingerprint: str) -> CodeResult:
        self.started.append(fingerprint)
        assert self._start is not None
        return self._start

    def waiting(self) -> list[CodeShown]:
        return list(self._waiting)

    def answer(self, offer: CodeShown, same: bool | None) -> Ending | None:
        self.answers.append((offer, same))
        return self._ending


@pytest.fixture
def store(tmp_path: Path, bob: Identity) -> Iterator[HistoryStore]:
    with HistoryStore.open(tmp_path / "chat_history.db", Sealer.generate()) as opened:
        opened.upsert_peer(bob.fingerprint, "Bob", bob.public_der, "127.0.0.1", 5001, time.time())
        yield opened


def connected(peer: Identity, name: str = "Bob") -> ActivePeer:
    return ActivePeer(peer.fingerprint, name, "127.0.0.1", 5001, False, time.time())


def menu_with(store: HistoryStore, me: Identity, tmp_path: Path, verifier: Verifier | None) -> Menu:
    menu = Menu(store=store, identity=me, data_dir=tmp_path)
    menu.verifier = verifier
    return menu


def as_node(fake: FakeNode) -> Node:
    return cast(Node, fake)  # the menu needs only active_peers(), key_conflicts() and verify()


def test_option_6_asks_what_it_asked_before_and_shows_the_safety_number(
    store: HistoryStore,
    me: Identity,
    bob: Identity,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    menu = menu_with(store, me, tmp_path, None)
    script = Script("1", "yes")
    menu.verify_peer(script, as_node(FakeNode([connected(bob)], store)))
    out = capsys.readouterr().out
    assert script.prompts == OLD_PROMPTS
    for line in format_safety_number(safety_number(me.fingerprint, bob.fingerprint)):
        assert f"  {line}\n" in out
    assert "type code" not in out  # no code comparison without a verifier
    assert "Bob is now verified." in out
    record = store.get_peer(bob.fingerprint)
    assert record is not None and record.verified


def test_option_6_compares_a_code_with_a_connected_peer(
    store: HistoryStore,
    me: Identity,
    bob: Identity,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shown = CodeShown(bob.fingerprint, "Bob", "493201", ATTEMPT)
    verifier = FakeVerifier(start=shown)
    menu = menu_with(store, me, tmp_path, verifier)
    script = Script("Bob", "code", "yes")
    menu.verify_peer(script, as_node(FakeNode([connected(bob)], store)))
    out = capsys.readouterr().out
    assert "Or type code to compare a six-digit code with Bob." in out
    assert script.prompts == [*OLD_PROMPTS, "Does Bob's screen show 493 201? Type yes or no: "]
    assert "Code for you and Bob: 493 201" in out
    assert verifier.started == [bob.fingerprint]
    assert verifier.answers == [(shown, True)]
    assert "Waiting for Bob's answer: the result will be shown here." in out
    record = store.get_peer(bob.fingerprint)
    assert record is not None and not record.verified  # the role marks it, not the menu


@pytest.mark.parametrize(("reply", "same"), [("no", False), ("NO", False), ("", None), ("y", None)])
def test_a_waiting_request_is_answered_by_picking_that_peer(
    store: HistoryStore,
    me: Identity,
    bob: Identity,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    reply: str,
    same: bool | None,
) -> None:
    offer = CodeShown(bob.fingerprint, "Bob", "012345", ATTEMPT)
    ending = Ending.SAID_NO if same is False else Ending.CANCELLED
    verifier = FakeVerifier(waiting=[offer], ending=ending)
    menu = menu_with(store, me, tmp_path, verifier)
    script = Script("1", reply)
    menu.verify_peer(script, as_node(FakeNode([connected(bob)], store)))
    out = capsys.readouterr().out
    assert f"Bob ({short_id(bob.fingerprint)}) asks to compare a code: pick Bob." in out
    assert script.prompts == [OLD_PROMPTS[0], "Does Bob's screen show 012 345? Type yes or no: "]
    assert verifier.answers == [(offer, same)]
    assert describe_ending("Bob", ending) in out


def test_a_refused_comparison_says_why(
    store: HistoryStore,
    me: Identity,
    bob: Identity,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    verifier = FakeVerifier(start=CodeRefused(Ending.RATE_LIMITED, 29.2))
    menu = menu_with(store, me, tmp_path, verifier)
    script = Script("1", "code")
    menu.verify_peer(script, as_node(FakeNode([connected(bob)], store)))
    out = capsys.readouterr().out
    assert "Too many failed code comparisons with Bob: try again in 30 s." in out
    assert script.prompts == OLD_PROMPTS


def test_code_is_not_offered_for_a_peer_that_is_not_connected(
    store: HistoryStore,
    me: Identity,
    bob: Identity,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    other = ActivePeer(fingerprint_of(b"carol"), "Carol", "127.0.0.1", 5009, False, time.time())
    verifier = FakeVerifier()
    menu = menu_with(store, me, tmp_path, verifier)
    script = Script("Bob", "code")  # Bob is known (pinned), but not connected now
    store.pin("Bob", bob.fingerprint)
    menu.verify_peer(script, as_node(FakeNode([other], store)))
    out = capsys.readouterr().out
    assert "type code" not in out
    assert verifier.started == []
    assert "Not marked as verified." in out


def test_option_5_lists_safety_numbers_without_asking(
    store: HistoryStore,
    me: Identity,
    bob: Identity,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    menu = menu_with(store, me, tmp_path, None)
    script = Script()
    menu.show_fingerprint(script, as_node(FakeNode([connected(bob)], store)))
    out = capsys.readouterr().out
    assert script.prompts == []
    assert out.index("Full fingerprint") < out.index("Safety numbers with connected peers")
    assert f"  Bob ({short_id(bob.fingerprint)}):" in out
    for line in format_safety_number(safety_number(bob.fingerprint, me.fingerprint)):
        assert f"    {line}\n" in out

    menu.show_fingerprint(script, as_node(FakeNode([])))
    alone = capsys.readouterr().out
    assert "Safety numbers" not in alone and "Data folder" in alone
    assert script.prompts == []


def test_history_marks_verified_peers(
    store: HistoryStore,
    me: Identity,
    bob: Identity,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = time.time()
    row = StoredMessage(
        "1" * 32, bob.fingerprint, "Bob", "127.0.0.1", 5001, Direction.IN, "hi", now, now,
        DeliveryState.RECEIVED,
    )  # fmt: skip
    store.add_incoming([row])
    menu = menu_with(store, me, tmp_path, None)
    menu.view_history(Script(""), as_node(FakeNode([])))
    assert "Bob (127.0.0.1:5001) -> You" in capsys.readouterr().out
    store.set_verified(bob.fingerprint, True)
    menu.view_history(Script(""), as_node(FakeNode([])))
    assert "Bob (127.0.0.1:5001, verified) -> You" in capsys.readouterr().out


# -- formatting -----------------------------------------------------------------

FP_OLD = "A" * 52
FP_NEW = "B" * 52


def test_incoming_lines_mark_verified_senders_only() -> None:
    plain = MessageArrived("Alice", "10.0.0.5", 5000, FP_OLD, "hello")
    assert describe_event(plain) == "Received from 10.0.0.5:5000 (Alice): hello"
    marked = MessageArrived("Alice", "10.0.0.5", 5000, FP_OLD, "hello", verified=True)
    assert describe_event(marked) == "Received from 10.0.0.5:5000 (Alice, verified): hello"


def test_a_verified_key_that_changes_is_the_loudest_warning() -> None:
    ordinary = describe_event(KeyChanged("Bob", "10.0.0.7", 5001, FP_OLD, FP_NEW))
    loud = describe_event(KeyChanged("Bob", "10.0.0.7", 5001, FP_OLD, FP_NEW, was_verified=True))
    assert "WARNING: the key of VERIFIED peer Bob at 10.0.0.7:5001 has changed!" in loud
    assert "AAAA-AAAA" in loud and "BBBB-BBBB" in loud
    assert loud.startswith("!" * 72) and loud.endswith("!" * 72)
    assert len(loud) > len(ordinary) and "VERIFIED" not in ordinary


def test_the_other_side_is_told_above_its_prompt_how_to_answer() -> None:
    line = describe_event(CodeRequested("Alice", FP_OLD))
    assert line == "Alice (AAAAAAAA) asks to compare a code with you: choose 6 and pick Alice."


@pytest.mark.parametrize("ending", list(Ending))
def test_every_ending_has_a_line_and_mismatches_warn(ending: Ending) -> None:
    line = describe_event(VerificationEnded("Bob\x1b[2J", FP_OLD, ending))
    assert line and "\x1b" not in line
    if ending.warns_of_middle:
        assert line.startswith("WARNING") and "someone may be in the middle" in line
        assert "nothing was marked verified" in line
    else:
        assert "WARNING" not in line


def test_history_row_mark() -> None:
    row = StoredMessage(
        "0" * 32, FP_OLD, "Bob", "10.0.0.7", 5001, Direction.OUT, "hello",
        1_700_000_000.0, 1_700_000_000.0, DeliveryState.PENDING,
    )  # fmt: skip
    assert format_history_row(row).endswith("You -> Bob (10.0.0.7:5001) [pending]: hello")
    assert format_history_row(row, verified=True).endswith(
        "You -> Bob (10.0.0.7:5001, verified) [pending]: hello"
    )


class ConflictNode(FakeNode):
    def __init__(self, peers: list[ActivePeer], conflicts: list[KeyConflict], hidden: int) -> None:
        super().__init__(peers)
        self.conflicts = conflicts
        self.hidden = hidden
        self.retrusted: list[str] = []

    def key_conflicts(self) -> list[KeyConflict]:
        return list(self.conflicts)

    def key_conflicts_not_listed(self) -> int:
        return self.hidden

    def retrust(self, presented: str) -> None:
        self.retrusted.append(presented)


def test_option_6_says_when_the_pinned_key_is_online_before_offering_to_replace_it(
    store: HistoryStore,
    me: Identity,
    bob: Identity,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    other = make_identity()
    claim = KeyConflict("Bob", "127.0.0.1", 6000, bob.fingerprint, other.fingerprint, b"")
    node = ConflictNode([connected(bob)], [claim], hidden=41)
    script = Script("c1", "no")
    menu_with(store, me, tmp_path, None).verify_peer(script, as_node(node))
    out = capsys.readouterr().out
    assert "and 41 more new keys not listed" in out
    online = out.index(f"The pinned key of Bob ({short_id(bob.fingerprint)}) is online right now")
    assert online < out.index("Accept the new key only if")
    assert script.prompts[-1] == "Type yes to trust the new key: "  # no new question
    assert node.retrusted == []


def test_sent_names_the_address_typed_and_who_acknowledged(bob: Identity) -> None:
    line = describe_send(
        SendResult(Outcome.DELIVERED, "10.0.0.7", 44911, "Bob", fingerprint=bob.fingerprint)
    )
    assert line == f"Message sent to 10.0.0.7:44911 (Bob, {short_id(bob.fingerprint)})"


def test_another_key_at_a_known_address_is_named_with_both_ids(bob: Identity) -> None:
    other = make_identity()
    result = SendResult(
        Outcome.OTHER_KEY,
        "10.0.0.7",
        5001,
        "Mallory",
        fingerprint=other.fingerprint,
        expected_name="Bob",
        expected_fingerprint=bob.fingerprint,
    )
    line = describe_send(result)
    assert line.startswith("Message not sent")
    assert f"Mallory ({short_id(other.fingerprint)})" in line
    assert f"Bob ({short_id(bob.fingerprint)})" in line
    connected_line = describe_connect(
        ConnectResult(
            True,
            "10.0.0.7",
            5001,
            "Mallory",
            fingerprint=other.fingerprint,
            expected_name="Bob",
            expected_fingerprint=bob.fingerprint,
        )
    )
    assert f"not Bob ({short_id(bob.fingerprint)})" in connected_line


def test_a_rename_and_a_flood_of_keys_are_said_in_one_line(bob: Identity) -> None:
    renamed = describe_event(PeerRenamed("Alice", "Carol", "10.0.0.7", 5001, bob.fingerprint, True))
    assert "Alice" in renamed and "Carol" in renamed and short_id(bob.fingerprint) in renamed
    assert "verified as Alice only" in renamed
    flood = describe_event(
        KeyChanged("Bob", "10.0.0.7", 5001, bob.fingerprint, make_identity().fingerprint, more=12)
    )
    assert "\n" not in flood and "and 12 more new keys" in flood
