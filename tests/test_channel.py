"""Two SecureChannels wired together in memory, and every attack we know of."""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from crypto_utils import Identity, fingerprint_of, verify_signature
from peerchat.errors import ProtocolError
from peerchat.limits import (
    MAX_FRAME_SIZE,
    MAX_HANDSHAKE_PAYLOAD,
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
)
from peerchat.protocol.channel import (
    PROLOGUE,
    PROTOCOL_NAME,
    STATIC_KEY_CONTEXT,
    ChannelState,
    Credentials,
    Event,
    HandshakeComplete,
    MessageReceived,
    Role,
    SecureChannel,
    encode_hello_payload,
)
from peerchat.protocol.framing import encode_frame
from peerchat.protocol.messages import Ack, Bye, Chat, Message, Ping, Pong, new_msg_id
from peerchat.protocol.noise import MAX_NONCE, HandshakeState, public_bytes

ESTABLISHED = ChannelState.ESTABLISHED
CLOSED = ChannelState.CLOSED


def make_identity() -> Identity:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return Identity(key, der, fingerprint_of(der))


@pytest.fixture(scope="module")
def alice_id() -> Identity:
    return make_identity()


@pytest.fixture(scope="module")
def bob_id() -> Identity:
    return make_identity()


@pytest.fixture(scope="module")
def mallory_id() -> Identity:
    return make_identity()


@pytest.fixture(scope="module")
def alice(alice_id: Identity) -> Credentials:
    return Credentials.create(alice_id, "Alice", 5000)


@pytest.fixture(scope="module")
def bob(bob_id: Identity) -> Credentials:
    return Credentials.create(bob_id, "Bob", 5001)


@pytest.fixture(scope="module")
def mallory(mallory_id: Identity) -> Credentials:
    return Credentials.create(mallory_id, "Mallory", 6666)


def chat(text: str) -> Chat:
    return Chat(new_msg_id(1_700_000_000.0), 1_700_000_000.0, text)


def pump(a: SecureChannel, b: SecureChannel) -> tuple[list[Event], list[Event]]:
    """Move bytes both ways until neither side has anything to send."""
    seen_a: list[Event] = []
    seen_b: list[Event] = []
    while True:
        to_b, to_a = a.data_to_send(), b.data_to_send()
        if not to_a and not to_b:
            return seen_a, seen_b
        if to_b:
            seen_b += b.receive_data(to_b)
        if to_a:
            seen_a += a.receive_data(to_a)


def connect(
    initiator: Credentials, responder: Credentials
) -> tuple[SecureChannel, SecureChannel, list[Event], list[Event]]:
    a = SecureChannel(Role.INITIATOR, initiator)
    b = SecureChannel(Role.RESPONDER, responder)
    seen_a, seen_b = pump(a, b)
    return a, b, seen_a, seen_b


def established(
    initiator: Credentials, responder: Credentials
) -> tuple[SecureChannel, SecureChannel]:
    a, b, _, _ = connect(initiator, responder)
    assert a.state is ESTABLISHED and b.state is ESTABLISHED
    return a, b


def messages_of(events: list[Event]) -> list[Message]:
    return [e.message for e in events if isinstance(e, MessageReceived)]


def flip(data: bytes, position: int) -> bytes:
    out = bytearray(data)
    out[position] ^= 0x01
    return bytes(out)


def feed_until_failure(channel: SecureChannel, data: bytes) -> list[Event]:
    """Deliver `data` then end the stream; return events if neither step raised."""
    events = channel.receive_data(data)
    channel.receive_eof()
    return events


# -- the honest case ------------------------------------------------------------


def test_handshake_authenticates_both_sides(
    alice: Credentials, bob: Credentials, alice_id: Identity, bob_id: Identity
) -> None:
    a, b, seen_a, seen_b = connect(alice, bob)
    assert a.state is ESTABLISHED and b.state is ESTABLISHED
    assert a.peer is not None and b.peer is not None
    assert seen_a == [HandshakeComplete(a.peer)] and seen_b == [HandshakeComplete(b.peer)]
    assert (a.peer.name, a.peer.listen_port, a.peer.fingerprint) == (
        "Bob",
        5001,
        bob_id.fingerprint,
    )
    assert (b.peer.name, b.peer.listen_port, b.peer.fingerprint) == (
        "Alice",
        5000,
        alice_id.fingerprint,
    )
    assert a.peer.identity_der == bob_id.public_der
    assert a.peer.version == b.peer.version == PROTOCOL_VERSION


def test_messages_flow_both_ways_in_order(alice: Credentials, bob: Credentials) -> None:
    a, b = established(alice, bob)
    first, second = chat("hello bob"), chat("second")
    a.send_message(first)
    a.send_message(second)
    b.send_messages([Ack((first.msg_id, second.msg_id)), Ping(7), chat("hi alice")])
    seen_a, seen_b = pump(a, b)
    assert messages_of(seen_b) == [first, second]
    assert messages_of(seen_a)[:2] == [Ack((first.msg_id, second.msg_id)), Ping(7)]
    a.send_messages([Pong(7), Bye("quit")])
    _, seen_b = pump(a, b)
    assert messages_of(seen_b) == [Pong(7), Bye("quit")]


def test_unicode_and_largest_message_arrive_intact(alice: Credentials, bob: Credentials) -> None:
    a, b = established(alice, bob)
    big = chat("ü" * (MAX_MESSAGE_BYTES // 2))
    small = chat("日本語 \x1b[31m emoji 🙂")
    a.send_messages([big, small])
    data = a.data_to_send()
    # Any chunking of the stream gives the same messages.
    events = [ev for i in range(0, len(data), 1000) for ev in b.receive_data(data[i : i + 1000])]
    assert messages_of(events) == [big, small]


def test_first_messages_can_ride_with_the_last_handshake_message(
    alice: Credentials, bob: Credentials
) -> None:
    a = SecureChannel(Role.INITIATOR, alice)
    b = SecureChannel(Role.RESPONDER, bob)
    b.receive_data(a.data_to_send())
    assert [type(e) for e in a.receive_data(b.data_to_send())] == [HandshakeComplete]
    big = chat("x" * MAX_MESSAGE_BYTES)  # far over the handshake frame limit
    a.send_messages([chat("early"), big])
    events = b.receive_data(a.data_to_send())  # message 3 and two transport frames at once
    assert [type(e) for e in events] == [HandshakeComplete, MessageReceived, MessageReceived]
    assert messages_of(events)[1] == big


def test_clean_eof_after_the_handshake_closes_quietly(alice: Credentials, bob: Credentials) -> None:
    a, b = established(alice, bob)
    a.send_message(Bye("bye"))
    assert messages_of(b.receive_data(a.data_to_send())) == [Bye("bye")]
    b.receive_eof()
    assert b.state is CLOSED


def test_credentials_sign_the_static_key_once(alice_id: Identity) -> None:
    creds = Credentials.create(alice_id, "Alice", 5000)
    assert creds.identity_der == alice_id.public_der
    static = public_bytes(creds.static_private)
    assert verify_signature(
        alice_id.public_der, creds.static_signature, STATIC_KEY_CONTEXT + static
    )
    other = Credentials.create(alice_id, "Alice", 5000)
    assert public_bytes(other.static_private) != static  # fresh Noise key per start


@pytest.mark.parametrize(("name", "port"), [("", 5000), ("a\x1bb", 5000), ("ok", 0), ("ok", 65536)])
def test_credentials_refuse_bad_names_and_ports(alice_id: Identity, name: str, port: int) -> None:
    with pytest.raises(ValueError):
        Credentials.create(alice_id, name, port)


# -- tampering, replay, reordering, reflection -----------------------------------


def test_every_byte_of_a_transport_frame_is_protected(alice: Credentials, bob: Credentials) -> None:
    a, b = established(alice, bob)
    a.send_message(chat("x" * 100))
    frame = a.data_to_send()
    assert len(frame) > 100
    for position in range(len(frame)):
        a, b = established(alice, bob)
        a.send_message(chat("x" * 100))
        good = a.data_to_send()
        assert len(good) == len(frame)
        with pytest.raises(ProtocolError):
            feed_until_failure(b, flip(good, position))
        assert b.state is CLOSED, position


def run_tampered_handshake(
    initiator: Credentials, responder: Credentials, message_index: int, position: int
) -> tuple[SecureChannel, SecureChannel, dict[int, list[Event]], set[int]]:
    """Run a handshake with one bit flipped in one message; collect events and failures."""
    a = SecureChannel(Role.INITIATOR, initiator)
    b = SecureChannel(Role.RESPONDER, responder)
    sides = (a, b)
    events: dict[int, list[Event]] = {0: [], 1: []}
    failed: set[int] = set()
    for index in range(3):
        sender, receiver = (0, 1) if index % 2 == 0 else (1, 0)
        data = sides[sender].data_to_send()
        if not data or sides[receiver].state is CLOSED:
            break
        if index == message_index:
            data = flip(data, position)
        try:
            events[receiver] += sides[receiver].receive_data(data)
        except ProtocolError:
            failed.add(receiver)
    for side, channel in enumerate(sides):
        try:
            channel.receive_eof()
        except ProtocolError:
            failed.add(side)
    return a, b, events, failed


def test_untampered_handshake_run_succeeds(alice: Credentials, bob: Credentials) -> None:
    # The control for the next test: with no bit flipped the same runner succeeds.
    _, _, events, failed = run_tampered_handshake(alice, bob, message_index=-1, position=0)
    assert failed == set()
    assert [type(e) for e in events[0] + events[1]] == [HandshakeComplete, HandshakeComplete]


@pytest.mark.parametrize("message_index", [0, 1, 2])
def test_every_byte_of_every_handshake_message_is_protected(
    alice: Credentials, bob: Credentials, message_index: int
) -> None:
    a = SecureChannel(Role.INITIATOR, alice)
    b = SecureChannel(Role.RESPONDER, bob)
    sizes = []
    for index in range(3):
        sender, receiver = (a, b) if index % 2 == 0 else (b, a)
        data = sender.data_to_send()
        sizes.append(len(data))
        receiver.receive_data(data)
    receiver_side = message_index % 2 ^ 1  # who reads the tampered message
    for position in range(sizes[message_index]):
        x, y, events, failed = run_tampered_handshake(alice, bob, message_index, position)
        assert failed, position
        assert x.state is CLOSED and y.state is CLOSED
        # The reader of the tampered message never accepts the handshake...
        assert not any(isinstance(e, HandshakeComplete) for e in events[receiver_side]), position
        # ...and the two sides never both believe in it.
        assert not all(any(isinstance(e, HandshakeComplete) for e in events[s]) for s in (0, 1))


def test_replayed_frame_is_rejected(alice: Credentials, bob: Credentials) -> None:
    a, b = established(alice, bob)
    msg = chat("pay 10")
    a.send_message(msg)
    frame = a.data_to_send()
    assert messages_of(b.receive_data(frame)) == [msg]
    with pytest.raises(ProtocolError, match="authentication"):
        b.receive_data(frame)
    assert b.state is CLOSED


def test_reordered_frames_are_rejected(alice: Credentials, bob: Credentials) -> None:
    a, b = established(alice, bob)
    a.send_message(chat("one"))
    first = a.data_to_send()
    a.send_message(chat("two"))
    second = a.data_to_send()
    with pytest.raises(ProtocolError):
        b.receive_data(second)
    assert b.state is CLOSED
    with pytest.raises(ProtocolError):
        b.receive_data(first)


def test_dropped_frame_is_detected(alice: Credentials, bob: Credentials) -> None:
    a, b = established(alice, bob)
    a.send_message(chat("lost"))
    a.data_to_send()
    a.send_message(chat("next"))
    with pytest.raises(ProtocolError):
        b.receive_data(a.data_to_send())


def test_reflected_transport_frame_is_rejected(alice: Credentials, bob: Credentials) -> None:
    a, _ = established(alice, bob)
    a.send_message(chat("to bob"))
    with pytest.raises(ProtocolError):
        a.receive_data(a.data_to_send())
    assert a.state is CLOSED


def test_handshake_looped_back_to_ourselves_is_rejected_by_the_initiator(
    alice: Credentials,
) -> None:
    a = SecureChannel(Role.INITIATOR, alice)
    b = SecureChannel(Role.RESPONDER, alice)
    b.receive_data(a.data_to_send())
    with pytest.raises(
        ProtocolError, match=r"^peer presented our own static key \(reflected handshake\)$"
    ):
        a.receive_data(b.data_to_send())
    assert a.state is CLOSED and a.peer is None


def test_handshake_looped_back_to_ourselves_is_rejected_by_the_responder(
    alice: Credentials,
) -> None:
    b = SecureChannel(Role.RESPONDER, alice)
    loop = HandshakeState(PROTOCOL_NAME, initiator=True, prologue=PROLOGUE, s=alice.static_private)
    b.receive_data(encode_frame(loop.write_message(b"")))
    loop.read_message(b.data_to_send()[4:])
    payload = encode_hello_payload(
        name=alice.name,
        listen_port=alice.listen_port,
        identity_der=alice.identity_der,
        signature=alice.static_signature,
    )
    with pytest.raises(
        ProtocolError, match=r"^peer presented our own static key \(reflected handshake\)$"
    ):
        b.receive_data(encode_frame(loop.write_message(payload)))
    assert b.state is CLOSED and b.peer is None


def test_reflected_message_1_is_rejected(alice: Credentials) -> None:
    a = SecureChannel(Role.INITIATOR, alice)
    with pytest.raises(ProtocolError):
        a.receive_data(a.data_to_send())


def test_same_identity_on_both_ends_is_rejected(alice_id: Identity) -> None:
    one = Credentials.create(alice_id, "Alice", 5000)
    two = Credentials.create(alice_id, "Alice", 5002)
    a = SecureChannel(Role.INITIATOR, one)
    b = SecureChannel(Role.RESPONDER, two)
    with pytest.raises(ProtocolError, match=r"^peer presented our own identity$"):
        pump(a, b)
    assert a.state is CLOSED


def test_a_failed_call_returns_no_events(alice: Credentials, bob: Credentials) -> None:
    a, b = established(alice, bob)
    a.send_messages([chat("good"), chat("tampered")])
    data = a.data_to_send()
    with pytest.raises(ProtocolError):
        b.receive_data(flip(data, len(data) - 1))  # the first frame alone was fine
    assert b.state is CLOSED


def test_a_responder_works_from_a_well_formed_first_message_on(
    alice: Credentials, bob: Credentials
) -> None:
    """What the source of a failed handshake is charged for: key-exchange work done for it."""
    idle = SecureChannel(Role.RESPONDER, bob)
    assert not idle.worked
    junk = SecureChannel(Role.RESPONDER, bob)
    with pytest.raises(ProtocolError, match="wrong size"):
        junk.receive_data(encode_frame(b"x" * 31))
    assert not junk.worked  # refused on its length: no key exchange
    a = SecureChannel(Role.INITIATOR, alice)
    b = SecureChannel(Role.RESPONDER, bob)
    b.receive_data(a.data_to_send())
    assert b.worked and b.state is ChannelState.HANDSHAKING  # message 2 is written
    with pytest.raises(ProtocolError):
        b.receive_data(encode_frame(b"y" * 200))  # a junk message 3
    assert b.worked and b.state is CLOSED


# -- impersonation and men in the middle -----------------------------------------


def test_signature_by_another_key_than_the_one_presented_is_rejected(
    alice: Credentials, bob: Credentials, bob_id: Identity, mallory_id: Identity
) -> None:
    static = X25519PrivateKey.generate()
    forged = Credentials(
        name="Bob",
        listen_port=5001,
        identity_der=bob_id.public_der,  # claims Bob...
        static_private=static,
        # ...but the signature is Mallory's.
        static_signature=mallory_id.sign(STATIC_KEY_CONTEXT + public_bytes(static)),
    )
    a = SecureChannel(Role.INITIATOR, alice)
    b = SecureChannel(Role.RESPONDER, forged)
    with pytest.raises(ProtocolError, match="signature"):
        pump(a, b)
    assert a.state is CLOSED and a.peer is None
    # And the same forgery from the initiator's side.
    a = SecureChannel(Role.INITIATOR, replace(forged, name="Bob"))
    b = SecureChannel(Role.RESPONDER, alice)
    with pytest.raises(ProtocolError, match="signature"):
        pump(a, b)
    assert b.state is CLOSED and b.peer is None


def test_signature_over_another_static_key_is_rejected(
    alice: Credentials, bob: Credentials
) -> None:
    # Bob's real identity and signature, replayed by someone with another Noise key.
    stolen = replace(bob, static_private=X25519PrivateKey.generate())
    a = SecureChannel(Role.INITIATOR, alice)
    b = SecureChannel(Role.RESPONDER, stolen)
    with pytest.raises(ProtocolError, match="signature"):
        pump(a, b)


def relay(
    a: SecureChannel, m_to_a: SecureChannel, m_to_b: SecureChannel, b: SecureChannel
) -> dict[str, list[Event]]:
    """Mallory sits between a and b with one channel to each, forwarding messages."""
    seen: dict[str, list[Event]] = {"a": [], "b": [], "m_a": [], "m_b": []}
    for _ in range(10):
        moved = False
        for src, dst, key in (
            (a, m_to_a, "m_a"),
            (m_to_a, a, "a"),
            (b, m_to_b, "m_b"),
            (m_to_b, b, "b"),
        ):
            data = src.data_to_send()
            if data:
                moved = True
                seen[key] += dst.receive_data(data)
        for src_key, dst in (("m_a", m_to_b), ("m_b", m_to_a)):
            msgs = messages_of(seen[src_key])
            seen[src_key] = [e for e in seen[src_key] if not isinstance(e, MessageReceived)]
            if msgs and dst.state is ESTABLISHED:
                dst.send_messages(msgs)
                moved = True
        if not moved:
            break
    return seen


def test_no_mitm_each_side_sees_the_real_peer(
    alice: Credentials, bob: Credentials, alice_id: Identity, bob_id: Identity
) -> None:
    a, b = established(alice, bob)
    assert a.peer is not None and b.peer is not None
    assert a.peer.fingerprint == bob_id.fingerprint
    assert b.peer.fingerprint == alice_id.fingerprint


def test_mitm_with_its_own_keys_shows_its_own_fingerprint_to_both(
    alice: Credentials,
    bob: Credentials,
    mallory: Credentials,
    alice_id: Identity,
    bob_id: Identity,
    mallory_id: Identity,
) -> None:
    a = SecureChannel(Role.INITIATOR, alice)
    m_to_a = SecureChannel(Role.RESPONDER, replace(mallory, name="Bob", listen_port=5001))
    m_to_b = SecureChannel(Role.INITIATOR, replace(mallory, name="Alice", listen_port=5000))
    b = SecureChannel(Role.RESPONDER, bob)
    relay(a, m_to_a, m_to_b, b)
    assert a.state is ESTABLISHED and b.state is ESTABLISHED
    assert a.peer is not None and b.peer is not None
    # The names can be faked; the fingerprints cannot.
    assert a.peer.name == "Bob" and b.peer.name == "Alice"
    assert a.peer.fingerprint == mallory_id.fingerprint != bob_id.fingerprint
    assert b.peer.fingerprint == mallory_id.fingerprint != alice_id.fingerprint


@pytest.mark.parametrize("victim_role", [Role.INITIATOR, Role.RESPONDER])
def test_mitm_without_the_victims_keys_cannot_impersonate(
    alice: Credentials, bob: Credentials, mallory: Credentials, victim_role: Role
) -> None:
    # Mallory substitutes her own Noise keys but presents the impersonated peer's
    # identity and signature (all she could have seen or replayed).
    fake_bob = replace(bob, static_private=mallory.static_private)
    fake_alice = replace(alice, static_private=mallory.static_private)
    a = SecureChannel(Role.INITIATOR, alice)
    m_to_a = SecureChannel(Role.RESPONDER, fake_bob)
    m_to_b = SecureChannel(Role.INITIATOR, fake_alice)
    b = SecureChannel(Role.RESPONDER, bob)
    with pytest.raises(ProtocolError, match="signature"):
        relay(a, m_to_a, m_to_b, b)
    # The relay stops at the first victim to refuse; run each direction on its own.
    if victim_role is Role.INITIATOR:
        target = SecureChannel(Role.INITIATOR, alice)
        pair = (target, SecureChannel(Role.RESPONDER, fake_bob))
    else:
        target = SecureChannel(Role.RESPONDER, bob)
        pair = (SecureChannel(Role.INITIATOR, fake_alice), target)
    with pytest.raises(ProtocolError, match="signature"):
        pump(*pair)
    assert target.state is CLOSED and target.peer is None


def test_mitm_swapping_the_ephemeral_key_breaks_the_handshake(
    alice: Credentials, bob: Credentials
) -> None:
    a = SecureChannel(Role.INITIATOR, alice)
    b = SecureChannel(Role.RESPONDER, bob)
    a.data_to_send()
    mallory_e = public_bytes(X25519PrivateKey.generate())
    b.receive_data(encode_frame(mallory_e))
    with pytest.raises(ProtocolError, match="authentication"):
        a.receive_data(b.data_to_send())
    assert a.state is CLOSED


def test_transparent_relay_learns_nothing_and_changes_nothing(
    alice: Credentials, bob: Credentials, bob_id: Identity
) -> None:
    a = SecureChannel(Role.INITIATOR, alice)
    b = SecureChannel(Role.RESPONDER, bob)
    wire: list[bytes] = []
    msg = chat("secret plan")
    for _ in range(3):
        for src, dst in ((a, b), (b, a)):
            data = src.data_to_send()
            wire.append(data)
            if data:
                dst.receive_data(data)
        if a.state is ESTABLISHED and not wire[-1]:
            break
    a.send_message(msg)
    data = a.data_to_send()
    assert b"secret plan" not in data
    assert not any(b"Alice" in chunk or b"Bob" in chunk for chunk in wire)  # names encrypted
    assert messages_of(b.receive_data(data)) == [msg]
    assert a.peer is not None and a.peer.fingerprint == bob_id.fingerprint


# -- a peer speaking raw Noise with payloads of its choice ------------------------


class Rogue:
    """A peer with a real identity that builds its own handshake payloads."""

    def __init__(self, identity: Identity, initiator: bool) -> None:
        self.static = X25519PrivateKey.generate()
        self.signature = identity.sign(STATIC_KEY_CONTEXT + public_bytes(self.static))
        self.der = identity.public_der
        self.hs = HandshakeState(
            PROTOCOL_NAME, initiator=initiator, prologue=PROLOGUE, s=self.static
        )

    def payload(self, **fields: object) -> bytes:
        values: dict[str, object] = {
            "name": "Rogue",
            "listen_port": 7000,
            "identity_der": self.der,
            "signature": self.signature,
        }
        values.update(fields)
        return encode_hello_payload(**values)  # type: ignore[arg-type]


def rogue_as_responder(
    victim_creds: Credentials, rogue_id: Identity, payload: Callable[[Rogue], bytes]
) -> SecureChannel:
    victim = SecureChannel(Role.INITIATOR, victim_creds)
    rogue = Rogue(rogue_id, initiator=False)
    message_1 = victim.data_to_send()
    rogue.hs.read_message(message_1[4:])
    victim.receive_data(encode_frame(rogue.hs.write_message(payload(rogue))))
    return victim


def rogue_as_initiator(
    victim_creds: Credentials, rogue_id: Identity, payload: Callable[[Rogue], bytes]
) -> SecureChannel:
    victim = SecureChannel(Role.RESPONDER, victim_creds)
    rogue = Rogue(rogue_id, initiator=True)
    victim.receive_data(encode_frame(rogue.hs.write_message(b"")))
    rogue.hs.read_message(victim.data_to_send()[4:])
    victim.receive_data(encode_frame(rogue.hs.write_message(payload(rogue))))
    return victim


def pad(payload: bytes, size: int) -> bytes:
    return payload + bytes(size - len(payload))


ROGUE_RUNNERS = [rogue_as_responder, rogue_as_initiator]


@pytest.mark.parametrize("run", ROGUE_RUNNERS)
def test_rogue_with_valid_fields_is_accepted(
    run: Callable[..., SecureChannel], alice: Credentials, mallory_id: Identity
) -> None:
    victim = run(alice, mallory_id, lambda r: r.payload())
    assert victim.state is ESTABLISHED
    assert victim.peer is not None
    assert (victim.peer.name, victim.peer.fingerprint) == ("Rogue", mallory_id.fingerprint)


@pytest.mark.parametrize("run", ROGUE_RUNNERS)
@pytest.mark.parametrize("version", [0, PROTOCOL_VERSION + 1, 255])
def test_wrong_protocol_version_is_rejected(
    run: Callable[..., SecureChannel], alice: Credentials, mallory_id: Identity, version: int
) -> None:
    with pytest.raises(ProtocolError, match="unsupported protocol version"):
        run(alice, mallory_id, lambda r: r.payload(version=version))


@pytest.mark.parametrize("run", ROGUE_RUNNERS)
@pytest.mark.parametrize(
    "name",
    ["", "x" * 33, "esc\x1b[2J", "new\nline", "tab\tname", " lead", "trail ", "rtl\u202eevil", "/"],
)
def test_bad_names_are_rejected(
    run: Callable[..., SecureChannel], alice: Credentials, mallory_id: Identity, name: str
) -> None:
    with pytest.raises(ProtocolError, match="bad peer name"):
        run(alice, mallory_id, lambda r: r.payload(name=name))


@pytest.mark.parametrize("run", ROGUE_RUNNERS)
def test_unicode_letters_in_names_are_fine(
    run: Callable[..., SecureChannel], alice: Credentials, mallory_id: Identity
) -> None:
    victim = run(alice, mallory_id, lambda r: r.payload(name="Zoë_李-2.0"))
    assert victim.peer is not None and victim.peer.name == "Zoë_李-2.0"


TRAILING = r"^trailing bytes after the handshake payload$"
KEY_REFUSED = r"^identity key refused: malformed public key$"
NOT_SIGNED = r"^identity signature does not cover the handshake's static key$"


def raw_payload(name: bytes, port: int, rogue: Rogue, tail: bytes = b"") -> bytes:
    return (
        bytes((PROTOCOL_VERSION, len(name)))
        + name
        + struct.pack(">HH", port, len(rogue.der))
        + rogue.der
        + struct.pack(">H", len(rogue.signature))
        + rogue.signature
        + tail
    )


@pytest.mark.parametrize("run", ROGUE_RUNNERS)
@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda r: raw_payload(b"\xff\xfe", 7000, r), r"^bad peer name: "),
        (lambda r: raw_payload(b"Rogue", 0, r), r"^bad listen port 0$"),
        (lambda r: raw_payload(b"Rogue", 7000, r, tail=b"\x00"), TRAILING),
        (lambda r: raw_payload(b"Rogue", 7000, r)[:-1], r"^handshake payload truncated$"),
        (lambda r: bytes((PROTOCOL_VERSION,)), r"^handshake payload truncated$"),
        (lambda r: b"", r"^handshake payload is empty or too large$"),
        (lambda r: r.payload(identity_der=b""), r"^handshake payload lacks a key or signature$"),
        (lambda r: r.payload(signature=b""), r"^handshake payload lacks a key or signature$"),
        (
            lambda r: r.payload(identity_der=b"not a key"),
            r"^identity key refused: malformed public key$",
        ),
        (lambda r: r.payload(signature=b"\x00" * 256), NOT_SIGNED),
        (lambda r: pad(r.payload(), MAX_HANDSHAKE_PAYLOAD), TRAILING),  # size is fine
        (lambda r: pad(r.payload(), MAX_HANDSHAKE_PAYLOAD + 1), "outside|too large"),
    ],
)
def test_malformed_payloads_are_rejected(
    run: Callable[..., SecureChannel],
    alice: Credentials,
    mallory_id: Identity,
    make: Callable[[Rogue], bytes],
    reason: str,
) -> None:
    with pytest.raises(ProtocolError, match=reason):
        run(alice, mallory_id, make)


def test_message_1_must_carry_no_payload(bob: Credentials) -> None:
    b = SecureChannel(Role.RESPONDER, bob)
    hs = HandshakeState(
        PROTOCOL_NAME, initiator=True, prologue=PROLOGUE, s=X25519PrivateKey.generate()
    )
    with pytest.raises(ProtocolError, match=r"^handshake message 1 has the wrong size$"):
        b.receive_data(encode_frame(hs.write_message(b"hello")))


def test_wrong_prologue_is_rejected(alice: Credentials, bob: Credentials) -> None:
    a = SecureChannel(Role.INITIATOR, alice)
    other = HandshakeState(
        PROTOCOL_NAME, initiator=False, prologue=b"peer_chat/2", s=bob.static_private
    )
    other.read_message(a.data_to_send()[4:])
    with pytest.raises(ProtocolError, match="authentication"):
        a.receive_data(encode_frame(other.write_message(b"")))


# -- the stream itself -------------------------------------------------------------


def test_eof_mid_frame_is_a_truncated_stream(alice: Credentials, bob: Credentials) -> None:
    a, b = established(alice, bob)
    a.send_message(chat("cut"))
    data = a.data_to_send()
    assert b.receive_data(data[:-3]) == []
    with pytest.raises(ProtocolError, match="inside a frame"):
        b.receive_eof()
    assert b.state is CLOSED


@pytest.mark.parametrize("received", [0, 1, 2])
def test_eof_mid_handshake_is_rejected(alice: Credentials, bob: Credentials, received: int) -> None:
    a = SecureChannel(Role.INITIATOR, alice)
    b = SecureChannel(Role.RESPONDER, bob)
    if received >= 1:
        b.receive_data(a.data_to_send())
    if received >= 2:
        a.receive_data(b.data_to_send()[:-10])  # message 2, cut short
    victim = b if received == 1 else a
    with pytest.raises(ProtocolError, match=r"^connection closed during the handshake$"):
        victim.receive_eof()
    assert victim.state is CLOSED


@pytest.mark.parametrize("role", [Role.INITIATOR, Role.RESPONDER])
def test_oversized_length_prefix_during_handshake(alice: Credentials, role: Role) -> None:
    channel = SecureChannel(role, alice)
    with pytest.raises(ProtocolError, match="outside"):
        channel.receive_data(struct.pack(">I", MAX_HANDSHAKE_PAYLOAD + 200))  # header only
    assert channel.state is CLOSED


@pytest.mark.parametrize("size", [0, MAX_FRAME_SIZE + 1, 0xFFFFFFFF])
def test_bad_length_prefix_after_handshake(alice: Credentials, bob: Credentials, size: int) -> None:
    _, b = established(alice, bob)
    with pytest.raises(ProtocolError, match="outside"):
        b.receive_data(struct.pack(">I", size))
    assert b.state is CLOSED


def test_transport_frames_before_the_handshake_are_rejected(
    alice: Credentials, bob: Credentials
) -> None:
    a, _ = established(alice, bob)
    a.send_message(chat("too early"))
    fresh = SecureChannel(Role.RESPONDER, bob)
    with pytest.raises(ProtocolError):
        fresh.receive_data(a.data_to_send())


def test_data_after_close_is_rejected(alice: Credentials, bob: Credentials) -> None:
    a, b = established(alice, bob)
    a.send_message(chat("late"))
    late = a.data_to_send()
    b.close()
    assert b.state is CLOSED
    with pytest.raises(ProtocolError, match=r"^data received on a closed channel$"):
        b.receive_data(late)
    with pytest.raises(ProtocolError):
        b.send_message(chat("no"))


def test_data_after_failure_is_rejected(alice: Credentials, bob: Credentials) -> None:
    a, b = established(alice, bob)
    with pytest.raises(ProtocolError):
        b.receive_data(encode_frame(b"garbage that is not sealed"))
    a.send_message(chat("valid but too late"))
    with pytest.raises(ProtocolError, match="closed"):
        b.receive_data(a.data_to_send())
    b.receive_eof()  # ending a dead stream is not a second error
    b.close()


def test_failure_drops_queued_bytes_but_close_keeps_them(
    alice: Credentials, bob: Credentials
) -> None:
    a, b = established(alice, bob)
    a.send_message(Bye("leaving"))
    a.close()
    assert messages_of(b.receive_data(a.data_to_send())) == [Bye("leaving")]
    b.send_message(chat("queued"))
    with pytest.raises(ProtocolError):
        b.receive_data(encode_frame(b"x" * 40))
    assert b.data_to_send() == b""


def test_sending_before_the_handshake_is_refused(alice: Credentials) -> None:
    a = SecureChannel(Role.INITIATOR, alice)
    with pytest.raises(ProtocolError, match="handshaking"):
        a.send_message(chat("too soon"))


def test_an_invalid_message_in_a_batch_sends_nothing_and_keeps_the_channel(
    alice: Credentials, bob: Credentials
) -> None:
    a, b = established(alice, bob)
    with pytest.raises(ValueError):
        a.send_messages([chat("fine"), Bye("x" * 1000)])
    assert a.data_to_send() == b""
    after = chat("after")
    a.send_message(after)
    assert messages_of(b.receive_data(a.data_to_send())) == [after]  # no nonce was used up


def test_sending_many_before_the_handshake_is_refused(alice: Credentials) -> None:
    a = SecureChannel(Role.INITIATOR, alice)
    with pytest.raises(ProtocolError, match=r"^cannot send on a channel that is handshaking$"):
        a.send_messages([chat("too soon")])


@pytest.mark.parametrize("many", [False, True])
def test_a_send_past_the_last_nonce_ends_the_session(
    alice: Credentials, bob: Credentials, many: bool
) -> None:
    """2^64 - 1 messages cannot be sent in a test: the counter is set to its last value."""
    a, _ = established(alice, bob)
    assert a._send is not None
    a._send.n = MAX_NONCE
    with pytest.raises(
        ProtocolError, match=r"^no key, or nonce space exhausted; the session must end$"
    ):
        if many:
            a.send_messages([chat("one too many")])
        else:
            a.send_message(chat("one too many"))
    assert a.state is CLOSED
    assert a.data_to_send() == b""


def test_a_handshake_message_3_over_its_limit_is_refused_before_it_is_read(
    alice: Credentials, bob: Credentials
) -> None:
    """Message 3 may be 32 bytes shorter than message 2: the frame limit alone lets it in."""
    b = SecureChannel(Role.RESPONDER, bob)
    hs = HandshakeState(PROTOCOL_NAME, initiator=True, prologue=PROLOGUE, s=alice.static_private)
    b.receive_data(encode_frame(hs.write_message(b"")))
    hs.read_message(b.data_to_send()[4:])
    too_long = hs.write_message(bytes(MAX_HANDSHAKE_PAYLOAD + 1))  # 4161 bytes: under 4192
    with pytest.raises(ProtocolError, match=r"^handshake message too large$"):
        b.receive_data(encode_frame(too_long))


@pytest.mark.parametrize("port", [1, 65535])
def test_credentials_take_every_port_from_1_to_65535(alice_id: Identity, port: int) -> None:
    assert Credentials.create(alice_id, "Alice", port).listen_port == port


@pytest.mark.parametrize("port", [0, 65536])
def test_credentials_say_which_port_is_out_of_range(alice_id: Identity, port: int) -> None:
    with pytest.raises(ValueError, match=rf"^port {port} is outside 1..65535$"):
        Credentials.create(alice_id, "Alice", port)


@pytest.mark.parametrize(
    ("field", "size", "reason"),
    [
        ("name", 255, None),
        ("name", 256, r"^handshake payload field too long$"),
        ("identity_der", 0xFFFF, r"^handshake payload over 4096 bytes$"),
        ("identity_der", 0x10000, r"^handshake payload field too long$"),
        ("signature", 0xFFFF, r"^handshake payload over 4096 bytes$"),
        ("signature", 0x10000, r"^handshake payload field too long$"),
    ],
)
def test_a_hello_field_is_refused_past_its_length_prefix_or_the_payload_limit(
    field: str, size: int, reason: str | None
) -> None:
    fields: dict[str, object] = {
        "name": "A",
        "listen_port": 5000,
        "identity_der": b"k",
        "signature": b"s",
    }
    fields[field] = "n" * size if field == "name" else b"x" * size
    if reason is None:
        encode_hello_payload(**fields)  # type: ignore[arg-type]
    else:
        with pytest.raises(ValueError, match=reason):
            encode_hello_payload(**fields)  # type: ignore[arg-type]


def test_a_hello_payload_may_fill_its_limit_exactly() -> None:
    overhead = len(encode_hello_payload(name="A", listen_port=1, identity_der=b"k", signature=b""))
    der = b"k" * (MAX_HANDSHAKE_PAYLOAD - overhead + 1)
    full = encode_hello_payload(name="A", listen_port=1, identity_der=der, signature=b"")
    assert len(full) == MAX_HANDSHAKE_PAYLOAD
    with pytest.raises(ValueError, match=r"^handshake payload over 4096 bytes$"):
        encode_hello_payload(name="A", listen_port=1, identity_der=der + b"k", signature=b"")


def test_the_log_says_which_side_failed_and_why_and_with_whom_it_completed(
    alice: Credentials, bob: Credentials, bob_id: Identity, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="peerchat.protocol.channel")
    _, b = established(alice, bob)
    assert f"initiator handshake complete with {bob_id.fingerprint[:8]}" in caplog.messages
    with pytest.raises(ProtocolError):
        b.receive_data(encode_frame(b"not sealed"))
    assert "responder channel failed: message authentication failed" in caplog.messages
