"""Two verification roles wired back to back in memory, as two nodes would run them."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from crypto_utils import fingerprint_of
from peerchat import limits
from peerchat.events import (
    CodeRefused,
    CodeRequested,
    CodeShown,
    Ending,
    UiEvent,
    VerificationEnded,
)
from peerchat.net.verification import CodeResult, LoopVerifier, VerificationRole
from peerchat.policy.verification import FailureLimiter
from peerchat.protocol.messages import (
    VERIFY_MESSAGE_TYPES,
    AbortReason,
    Message,
    VerifyAbort,
    VerifyRequest,
    VerifyReveal,
    decode_message,
    encode_message,
)

# Alice's fingerprint sorts before Bob's: her request wins when both ask at once.
ALICE, BOB = sorted((fingerprint_of(b"alice's key"), fingerprint_of(b"bob's key")))
SESSION = hashlib.sha256(b"the session").digest()


@dataclass
class Peer:
    name: str
    fp: str
    role: VerificationRole
    events: list[UiEvent] = field(default_factory=list)
    verified: list[str] = field(default_factory=list)
    codes: list[CodeResult] = field(default_factory=list)

    def start(self, peer: str, now: float = 0.0) -> None:
        self.role.start(peer, now, self.codes.append)

    def offer(self) -> CodeShown:
        [offer] = self.role.waiting()
        return offer


class Wire:
    """Messages between the two roles, through their real encoding, delivered on pump()."""

    def __init__(self) -> None:
        self.queue: list[tuple[str, str, Message]] = []
        self.peers: dict[str, Peer] = {}
        self.cut = False  # drop everything (a peer that does not answer)

    def sender(self, own_fp: str) -> Callable[[str, Message], None]:
        def send(to_fp: str, message: Message) -> None:
            if not self.cut:
                self.queue.append((own_fp, to_fp, message))

        return send

    def pump(self, now: float = 0.1) -> list[Message]:
        seen: list[Message] = []
        while self.queue:
            sender, receiver, message = self.queue.pop(0)
            decoded = decode_message(encode_message(message))
            assert isinstance(decoded, VERIFY_MESSAGE_TYPES)
            seen.append(decoded)
            self.peers[receiver].role.receive(sender, decoded, now)
        return seen


def make_peer(
    wire: Wire,
    name: str,
    fp: str,
    limiter: FailureLimiter | None = None,
    send: Callable[[str, Message], None] | None = None,
) -> Peer:
    events: list[UiEvent] = []
    verified: list[str] = []
    role = VerificationRole(
        fp,
        send=send or wire.sender(fp),
        mark_verified=verified.append,
        emit=events.append,
        limiter=limiter,
    )
    peer = Peer(name, fp, role, events, verified)
    wire.peers[fp] = peer
    return peer


@pytest.fixture
def wire() -> Wire:
    return Wire()


@pytest.fixture
def pair(wire: Wire) -> tuple[Peer, Peer]:
    alice = make_peer(wire, "Alice", ALICE)
    bob = make_peer(wire, "Bob", BOB)
    alice.role.session_opened(BOB, "Bob", SESSION, 0.0)
    bob.role.session_opened(ALICE, "Alice", SESSION, 0.0)
    return alice, bob


def compare(wire: Wire, asker: Peer, other: Peer, now: float = 0.0) -> tuple[CodeShown, CodeShown]:
    asker.start(other.fp, now)
    wire.pump(now)
    shown = asker.codes[-1]
    assert isinstance(shown, CodeShown)
    return shown, other.offer()


def test_yes_on_both_screens_marks_both_verified(wire: Wire, pair: tuple[Peer, Peer]) -> None:
    alice, bob = pair
    alice.start(BOB)
    sent = wire.pump()
    assert [type(m).__name__ for m in sent] == [
        "VerifyRequest",
        "VerifyCommit",
        "VerifyReveal",
        "VerifyReveal",
    ]
    [alice_code] = alice.codes
    assert isinstance(alice_code, CodeShown)
    assert bob.events == [CodeRequested("Alice", ALICE)]  # one line above Bob's prompt
    bob_code = bob.offer()
    assert bob_code.code == alice_code.code and len(alice_code.code) == 6
    assert (alice_code.name, bob_code.name) == ("Bob", "Alice")

    assert alice.role.answer(BOB, alice_code.attempt, True, 1.0) is None  # waits for Bob
    wire.pump(1.0)
    assert bob.role.answer(ALICE, bob_code.attempt, True, 2.0) is Ending.VERIFIED
    wire.pump(2.0)
    assert alice.events == [VerificationEnded("Bob", BOB, Ending.VERIFIED)]
    assert alice.verified == [BOB] and bob.verified == [ALICE]
    assert alice.role.waiting() == [] and bob.role.waiting() == []


def test_no_on_either_screen_marks_nothing_and_warns_both(
    wire: Wire, pair: tuple[Peer, Peer], caplog: pytest.LogCaptureFixture
) -> None:
    alice, bob = pair
    alice_code, bob_code = compare(wire, alice, bob)
    assert alice.role.answer(BOB, alice_code.attempt, True, 1.0) is None
    caplog.set_level(logging.WARNING)
    assert bob.role.answer(ALICE, bob_code.attempt, False, 2.0) is Ending.SAID_NO
    wire.pump(2.0)
    assert alice.events == [VerificationEnded("Bob", BOB, Ending.PEER_SAID_NO)]
    assert alice.verified == [] and bob.verified == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all("someone may be in the middle" in w for w in warnings)


def test_an_answer_after_the_other_side_said_no_is_told_so(
    wire: Wire, pair: tuple[Peer, Peer]
) -> None:
    alice, bob = pair
    alice_code, bob_code = compare(wire, alice, bob)
    bob.role.answer(ALICE, bob_code.attempt, False, 1.0)
    wire.pump(1.0)
    assert alice.role.answer(BOB, alice_code.attempt, True, 2.0) is Ending.ENDED_EARLIER
    assert alice.verified == []


def test_an_unanswered_comparison_expires_on_both_sides(
    wire: Wire, pair: tuple[Peer, Peer]
) -> None:
    alice, bob = pair
    alice_code, _ = compare(wire, alice, bob, now=10.0)
    alice.role.answer(BOB, alice_code.attempt, True, 11.0)
    wire.pump(11.0)
    alice.role.tick(10.0 + limits.VERIFY_EXPIRY - 0.5)
    bob.role.tick(10.0 + limits.VERIFY_EXPIRY - 0.5)
    assert alice.events == [] and bob.role.waiting() != []
    alice.role.tick(10.0 + limits.VERIFY_EXPIRY)
    wire.pump(10.0 + limits.VERIFY_EXPIRY)
    assert alice.events == [VerificationEnded("Bob", BOB, Ending.EXPIRED)]
    assert bob.events[-1] == VerificationEnded("Alice", ALICE, Ending.EXPIRED)
    assert bob.role.waiting() == []
    assert alice.verified == [] and bob.verified == []


def test_a_peer_that_does_not_take_part_is_given_up_on(wire: Wire, pair: tuple[Peer, Peer]) -> None:
    alice, _ = pair
    wire.cut = True
    alice.start(BOB, 5.0)
    alice.role.tick(5.0 + limits.VERIFY_CODE_WAIT - 0.1)
    assert alice.codes == []
    alice.role.tick(5.0 + limits.VERIFY_CODE_WAIT)
    assert alice.codes == [CodeRefused(Ending.NO_RESPONSE)]
    assert alice.events == []  # the menu that asked says it, not a second line


def test_a_peer_that_is_not_connected_cannot_be_asked(wire: Wire) -> None:
    alice = make_peer(wire, "Alice", ALICE)
    alice.start(BOB)
    assert alice.codes == [CodeRefused(Ending.NOT_CONNECTED)]
    assert wire.queue == []


def test_repeated_failures_are_rate_limited_on_both_sides(
    wire: Wire, pair: tuple[Peer, Peer]
) -> None:
    alice, bob = pair
    now = 0.0
    for _ in range(limits.VERIFY_FREE_FAILURES):
        _, bob_code = compare(wire, alice, bob, now)
        bob.role.answer(ALICE, bob_code.attempt, False, now)
        wire.pump(now)
        now += 1.0
    alice.start(BOB, now)
    refused = alice.codes[-1]
    assert isinstance(refused, CodeRefused) and refused.ending is Ending.RATE_LIMITED
    assert 0 < refused.retry_after <= limits.VERIFY_BACKOFF
    assert wire.queue == []  # nothing was sent
    # Bob refuses too, even to a requester that forgot its own count.
    forgetful = make_peer(wire, "Alice", ALICE)
    forgetful.role.session_opened(BOB, "Bob", SESSION, now)
    forgetful.start(BOB, now)
    sent = wire.pump(now)
    assert isinstance(sent[-1], VerifyAbort) and sent[-1].reason is AbortReason.RATE_LIMITED
    assert forgetful.codes == [CodeRefused(Ending.PEER_RATE_LIMITED)]
    wire.peers[ALICE] = alice
    # After the wait, comparing works again.
    later = now + limits.VERIFY_BACKOFF
    alice_code, bob_code = compare(wire, alice, bob, later)
    assert alice_code.code == bob_code.code


def test_both_asking_at_once_gives_one_comparison(wire: Wire, pair: tuple[Peer, Peer]) -> None:
    alice, bob = pair
    alice.start(BOB)
    bob.start(ALICE)
    sent = wire.pump()
    assert sum(isinstance(m, VerifyRequest) for m in sent) == 2
    [a], [b] = alice.codes, bob.codes
    assert isinstance(a, CodeShown) and isinstance(b, CodeShown)
    assert a.code == b.code and a.attempt == b.attempt
    assert alice.events == [] and bob.events == []  # each menu shows its own code
    assert alice.role.answer(BOB, a.attempt, True, 1.0) is None
    wire.pump(1.0)
    assert bob.role.answer(ALICE, b.attempt, True, 1.0) is Ending.VERIFIED
    wire.pump(1.0)
    assert alice.verified == [BOB] and bob.verified == [ALICE]


def test_asking_a_peer_who_already_asked_shows_its_code(
    wire: Wire, pair: tuple[Peer, Peer]
) -> None:
    alice, bob = pair
    alice_code, _ = compare(wire, alice, bob)
    bob.start(ALICE)
    [bob_code] = bob.codes
    assert isinstance(bob_code, CodeShown) and bob_code.code == alice_code.code
    assert wire.queue == []


def test_a_lost_session_ends_the_comparison_and_a_new_session_cannot_continue_it(
    wire: Wire, pair: tuple[Peer, Peer]
) -> None:
    alice, bob = pair
    compare(wire, alice, bob)
    bob.role.session_closed(ALICE, 1.0)
    assert bob.events[-1] == VerificationEnded("Alice", ALICE, Ending.SESSION_LOST)
    assert bob.role.waiting() == []
    # Alice's node sees a new session with Bob (another handshake hash).
    alice.role.session_opened(BOB, "Bob", hashlib.sha256(b"new").digest(), 2.0)
    assert alice.events[-1] == VerificationEnded("Bob", BOB, Ending.SESSION_LOST)
    assert alice.role.waiting() == []


def test_late_messages_of_a_finished_attempt_are_ignored(
    wire: Wire, pair: tuple[Peer, Peer]
) -> None:
    alice, bob = pair
    alice_code, _ = compare(wire, alice, bob)
    alice.role.answer(BOB, alice_code.attempt, None, 1.0)  # cancels
    wire.pump(1.0)
    before = (list(alice.events), list(bob.events))
    bob.role.receive(ALICE, VerifyReveal(alice_code.attempt, b"\x00" * 32), 2.0)
    alice.role.receive(BOB, VerifyAbort(alice_code.attempt, AbortReason.EXPIRED), 2.0)
    assert (alice.events, bob.events) == before
    assert wire.queue == []


def test_a_forged_reveal_is_refused_and_warned_about(
    wire: Wire, pair: tuple[Peer, Peer], caplog: pytest.LogCaptureFixture
) -> None:
    alice, _ = pair
    alice.start(BOB)
    for _ in range(2):  # request, then Bob's commitment
        sender, receiver, message = wire.queue.pop(0)
        assert isinstance(message, VERIFY_MESSAGE_TYPES)
        wire.peers[receiver].role.receive(sender, message, 0.0)
    _, _, alice_reveal = wire.queue.pop(0)
    assert isinstance(alice_reveal, VerifyReveal)
    caplog.set_level(logging.WARNING)
    # A hostile Bob answers with a nonce of its choosing, not the one it committed to.
    alice.role.receive(BOB, VerifyReveal(alice_reveal.attempt, b"\x42" * 32), 0.1)
    assert alice.codes == [CodeRefused(Ending.BAD_REVEAL)]
    assert wire.queue == [(ALICE, BOB, VerifyAbort(alice_reveal.attempt, AbortReason.BAD_REVEAL))]
    assert "someone may be in the middle" in caplog.text


def test_a_peer_restarting_over_and_over_is_cut_off(wire: Wire) -> None:
    # A hostile Alice, with no limit of her own, starts a new comparison as soon as
    # Bob shows each code: every code Bob was shown and did not confirm is a failure.
    alice = make_peer(wire, "Alice", ALICE, FailureLimiter(free=10**6))
    bob = make_peer(wire, "Bob", BOB)
    alice.role.session_opened(BOB, "Bob", SESSION, 0.0)
    bob.role.session_opened(ALICE, "Alice", SESSION, 0.0)
    for _ in range(10):
        alice.role.session_closed(BOB, 0.0)
        alice.role.session_opened(BOB, "Bob", SESSION, 0.0)
        alice.start(BOB, 0.0)
        wire.pump(0.0)
    notices = [e for e in bob.events if isinstance(e, CodeRequested)]
    assert len(notices) == limits.VERIFY_FREE_FAILURES  # then Bob refuses
    assert bob.role.waiting() == []
    assert isinstance(alice.codes[-1], CodeRefused)
    assert alice.codes[-1].ending is Ending.PEER_RATE_LIMITED


# -- the menu thread's view: LoopVerifier on a real event loop ----------------------


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_the_menu_thread_compares_through_the_loop(loop: asyncio.AbstractEventLoop) -> None:
    wire = Wire()

    def send_later(own_fp: str) -> Callable[[str, Message], None]:
        def send(to_fp: str, message: Message) -> None:
            decoded = decode_message(encode_message(message))
            assert isinstance(decoded, VERIFY_MESSAGE_TYPES)
            receiver = wire.peers[to_fp].role
            loop.call_soon(receiver.receive, own_fp, decoded, loop.time())

        return send

    # As two nodes would: each message reaches the other role in a later loop step.
    alice = make_peer(wire, "Alice", ALICE, send=send_later(ALICE))
    bob = make_peer(wire, "Bob", BOB, send=send_later(BOB))
    loop.call_soon_threadsafe(alice.role.session_opened, BOB, "Bob", SESSION, 0.0)
    loop.call_soon_threadsafe(bob.role.session_opened, ALICE, "Alice", SESSION, 0.0)
    alice_menu = LoopVerifier(alice.role, loop)
    bob_menu = LoopVerifier(bob.role, loop)

    shown = alice_menu.start(BOB)
    assert isinstance(shown, CodeShown)
    [offer] = bob_menu.waiting()
    assert offer.code == shown.code
    assert alice_menu.answer(shown, True) is None
    assert bob_menu.answer(offer, True) is Ending.VERIFIED
    done = threading.Event()
    loop.call_soon_threadsafe(done.set)  # after Bob's confirmation reached Alice
    assert done.wait(5)
    assert alice.verified == [BOB] and bob.verified == [ALICE]


def test_the_menu_gets_an_answer_when_the_loop_is_stuck(loop: asyncio.AbstractEventLoop) -> None:
    wire = Wire()
    alice = make_peer(wire, "Alice", ALICE)
    loop.call_soon_threadsafe(alice.role.session_opened, BOB, "Bob", SESSION, 0.0)
    menu = LoopVerifier(alice.role, loop, code_wait=0.2)
    assert menu.start(BOB) == CodeRefused(Ending.NO_RESPONSE)  # nobody ticks the role here
