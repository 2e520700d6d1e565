"""A man in the middle, in memory: real Noise sessions, a relay with keys of its own.

Alice thinks she talks to Bob and Bob to Alice; both talk to Mallory, who runs
one session with each (the only way to read and forward their traffic). The
code comparison must then fail: each side's code is bound to its own session,
and the commit-then-reveal order leaves Mallory one guess in a million.
"""

from __future__ import annotations

import hashlib
import itertools

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from crypto_utils import Identity, fingerprint_of
from peerchat.events import Ending
from peerchat.policy.verification import Attempt, Binding, Stage
from peerchat.protocol import sas
from peerchat.protocol.channel import (
    ChannelState,
    Credentials,
    MessageReceived,
    Role,
    SecureChannel,
)
from peerchat.protocol.messages import (
    VERIFY_MESSAGE_TYPES,
    AbortReason,
    Message,
    VerifyAbort,
    VerifyMessage,
    VerifyRequest,
    VerifyReveal,
)


def make_identity() -> Identity:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return Identity(key, der, fingerprint_of(der))


@pytest.fixture(scope="module")
def people() -> dict[str, Credentials]:
    return {
        name: Credentials.create(make_identity(), name, port)
        for name, port in (("Alice", 5000), ("Bob", 5001), ("Mallory", 6666))
    }


def fp(creds: Credentials) -> str:
    return fingerprint_of(creds.identity_der)


def session(initiator: Credentials, responder: Credentials) -> tuple[SecureChannel, SecureChannel]:
    a = SecureChannel(Role.INITIATOR, initiator)
    b = SecureChannel(Role.RESPONDER, responder)
    b.receive_data(a.data_to_send())  # message 1
    a.receive_data(b.data_to_send())  # message 2
    b.receive_data(a.data_to_send())  # message 3
    assert a.state is ChannelState.ESTABLISHED and b.state is ChannelState.ESTABLISHED
    return a, b


def carry(sender: SecureChannel, receiver: SecureChannel, messages: list[Message]) -> list[Message]:
    """Seal `messages` on one end, open them on the other: what really crosses the wire."""
    sender.send_messages(messages)
    events = receiver.receive_data(sender.data_to_send())
    return [e.message for e in events if isinstance(e, MessageReceived)]


def one(messages: list[Message]) -> VerifyMessage:
    assert len(messages) == 1
    message = messages[0]
    assert isinstance(message, VERIFY_MESSAGE_TYPES)
    return message


def binding(channel: SecureChannel, me: Credentials) -> Binding:
    assert channel.handshake_hash is not None and channel.peer is not None
    return Binding(channel.handshake_hash, fp(me), channel.peer.fingerprint)


def run_comparison(
    req_ch: SecureChannel, req: Credentials, resp_ch: SecureChannel, resp: Credentials
) -> tuple[Attempt, Attempt]:
    """One honest comparison over a real session, every message sealed and opened."""
    asker, out = Attempt.request(
        binding(req_ch, req), 0.0, attempt_id=sas.new_attempt_id(), nonce=sas.new_nonce()
    )
    request = one(carry(req_ch, resp_ch, out))
    assert isinstance(request, VerifyRequest)
    answerer, out = Attempt.respond(binding(resp_ch, resp), request, 0.0, nonce=sas.new_nonce())
    out = asker.receive(one(carry(resp_ch, req_ch, out)), 0.1)
    out = answerer.receive(one(carry(req_ch, resp_ch, out)), 0.2)
    assert asker.receive(one(carry(resp_ch, req_ch, out)), 0.3) == []
    return asker, answerer


def test_both_ends_of_a_session_share_its_handshake_hash(people: dict[str, Credentials]) -> None:
    alice, bob = people["Alice"], people["Bob"]
    unfinished = SecureChannel(Role.INITIATOR, alice)
    assert unfinished.handshake_hash is None
    a1, b1 = session(alice, bob)
    a2, b2 = session(alice, bob)
    assert a1.handshake_hash is not None and len(a1.handshake_hash) == 32
    assert a1.handshake_hash == b1.handshake_hash
    assert a2.handshake_hash == b2.handshake_hash
    assert a1.handshake_hash != a2.handshake_hash  # fresh ephemeral keys, a new session


def test_honest_peers_see_the_same_code_and_both_verify(people: dict[str, Credentials]) -> None:
    alice, bob = people["Alice"], people["Bob"]
    a, b = session(alice, bob)
    asker, answerer = run_comparison(a, alice, b, bob)
    assert asker.code is not None and asker.code == answerer.code
    out = answerer.receive(one(carry(a, b, asker.answer(True, 1.0))), 1.0)
    assert out == []
    asker.receive(one(carry(b, a, answerer.answer(True, 2.0))), 2.0)
    assert asker.ending is Ending.VERIFIED and answerer.ending is Ending.VERIFIED


def test_a_relay_with_its_own_keys_leaves_alice_and_bob_different_codes(
    people: dict[str, Credentials],
) -> None:
    alice, bob, mallory = people["Alice"], people["Bob"], people["Mallory"]
    alice_ch, mallory_to_alice = session(alice, mallory)
    mallory_to_bob, bob_ch = session(mallory, bob)
    assert alice_ch.handshake_hash != bob_ch.handshake_hash
    # Alice asks "Bob" (Mallory); Mallory asks Bob in turn, playing the protocol honestly.
    alice_side, _ = run_comparison(alice_ch, alice, mallory_to_alice, mallory)
    _, bob_side = run_comparison(mallory_to_bob, mallory, bob_ch, bob)
    assert alice_side.stage is Stage.COMPARING and bob_side.stage is Stage.COMPARING
    # Independent six-digit values: equal with probability 10^-6, which is the point.
    assert alice_side.code != bob_side.code


def test_a_relay_forwarding_the_exchange_unchanged_is_caught(
    people: dict[str, Credentials],
) -> None:
    alice, bob, mallory = people["Alice"], people["Bob"], people["Mallory"]
    alice_ch, mallory_to_alice = session(alice, mallory)
    mallory_to_bob, bob_ch = session(mallory, bob)

    def relay_to_bob(out: list[Message]) -> VerifyMessage:
        return one(carry(mallory_to_bob, bob_ch, carry(alice_ch, mallory_to_alice, out)))

    def relay_to_alice(out: list[Message]) -> VerifyMessage:
        return one(carry(mallory_to_alice, alice_ch, carry(bob_ch, mallory_to_bob, out)))

    alice_side, out = Attempt.request(
        binding(alice_ch, alice), 0.0, attempt_id=sas.new_attempt_id(), nonce=sas.new_nonce()
    )
    request = relay_to_bob(out)
    assert isinstance(request, VerifyRequest)
    bob_side, out = Attempt.respond(binding(bob_ch, bob), request, 0.0, nonce=sas.new_nonce())
    out = alice_side.receive(relay_to_alice(out), 0.1)
    alice_nonce = relay_to_bob(out)
    bob_nonce = relay_to_alice(bob_side.receive(alice_nonce, 0.2))
    out = alice_side.receive(bob_nonce, 0.3)
    # Bob's commitment names his session with Mallory, not Alice's: it does not open.
    assert out == [VerifyAbort(alice_side.attempt_id, AbortReason.BAD_REVEAL)]
    assert alice_side.ending is Ending.BAD_REVEAL and alice_side.code is None
    # And had it opened, the same two nonces give a different code in Alice's session.
    assert isinstance(alice_nonce, VerifyReveal) and isinstance(bob_nonce, VerifyReveal)
    would_be = sas.short_code(alice_side.ctx, alice_nonce.nonce, bob_nonce.nonce)
    assert bob_side.code is not None and would_be != bob_side.code


# Fixed sessions, so that the search below is short: from GRIND_START the first nonce
# that gives Alice Bob's code is a few hundred tries away (about 10^6 from zero).
H_ALICE_MALLORY = hashlib.sha256(b"alice-mallory session").digest()
H_MALLORY_BOB = hashlib.sha256(b"mallory-bob session").digest()
ALICE_FP = fingerprint_of(b"alice's key")
BOB_FP = fingerprint_of(b"bob's key")
MALLORY_FP = fingerprint_of(b"mallory's key")
GRIND_START = 561_000


def test_a_relay_choosing_its_nonce_after_seeing_alices_cannot_make_the_codes_match() -> None:
    # Session 1: Alice asks "Bob" (Mallory). Mallory must commit before it sees her nonce.
    alice_side, out = Attempt.request(
        Binding(H_ALICE_MALLORY, ALICE_FP, MALLORY_FP),
        0.0,
        attempt_id=b"\x01" * 16,
        nonce=b"\x11" * 32,
    )
    request = one(out)
    assert isinstance(request, VerifyRequest)
    committed = b"\x4d" * 32
    mallory_1, commit = Attempt.respond(
        Binding(H_ALICE_MALLORY, MALLORY_FP, ALICE_FP), request, 0.0, nonce=committed
    )
    alice_nonce = one(alice_side.receive(one(commit), 0.1))
    assert isinstance(alice_nonce, VerifyReveal)  # now Mallory knows Alice's nonce

    # Session 2: Mallory asks Bob and learns the code Bob will show.
    mallory_2, out = Attempt.request(
        Binding(H_MALLORY_BOB, MALLORY_FP, BOB_FP),
        0.0,
        attempt_id=b"\x02" * 16,
        nonce=b"\x4e" * 32,
    )
    bob_request = one(out)
    assert isinstance(bob_request, VerifyRequest)
    bob_side, out = Attempt.respond(
        Binding(H_MALLORY_BOB, BOB_FP, MALLORY_FP), bob_request, 0.0, nonce=b"\x22" * 32
    )
    out = bob_side.receive(one(mallory_2.receive(one(out), 0.1)), 0.2)
    mallory_2.receive(one(out), 0.3)
    bob_code = bob_side.code
    assert bob_code is not None and mallory_2.code == bob_code

    # Free to pick its nonce now, Mallory would find one that gives Alice Bob's code...
    chosen = next(
        candidate
        for candidate in (i.to_bytes(32, "big") for i in itertools.count(GRIND_START))
        if sas.short_code(alice_side.ctx, alice_nonce.nonce, candidate) == bob_code
    )
    # ...but Alice takes only the nonce committed to before she revealed hers.
    back = alice_side.receive(VerifyReveal(alice_side.attempt_id, chosen), 0.4)
    assert back == [VerifyAbort(alice_side.attempt_id, AbortReason.BAD_REVEAL)]
    assert alice_side.code is None and alice_side.ending is Ending.BAD_REVEAL

    # Its only other move is to open its commitment: a guess made before seeing anything.
    honest_alice, out = Attempt.request(
        Binding(H_ALICE_MALLORY, ALICE_FP, MALLORY_FP),
        0.0,
        attempt_id=b"\x01" * 16,
        nonce=b"\x11" * 32,
    )
    honest_alice.receive(one(commit), 0.1)
    mallory_1.receive(alice_nonce, 0.2)
    honest_alice.receive(VerifyReveal(honest_alice.attempt_id, committed), 0.3)
    assert honest_alice.code is not None and honest_alice.code != bob_code
