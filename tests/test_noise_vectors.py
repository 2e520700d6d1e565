"""noise.py against the published cacophony vectors, plus its failure modes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from peerchat.errors import ProtocolError
from peerchat.protocol.noise import (
    DHLEN,
    MAX_MESSAGE_LEN,
    MAX_NONCE,
    CipherState,
    HandshakeState,
    public_bytes,
)

PROTOCOL = "Noise_XX_25519_AESGCM_SHA256"
# The Noise_XX_25519 subset of the cacophony vectors (centromere/cacophony,
# vectors/cacophony.txt), kept in tests/data and pinned by its SHA-256 here, so
# the suite needs nothing outside the repository and a changed vector cannot
# pass unnoticed.
VECTORS_FILE = Path(__file__).resolve().parent / "data" / "noise_xx_25519.json"
VECTORS_SHA256 = "03a813d4b3f04789dcbdcc3e1439e1a712f224a94a3d33785bf7abbca4071782"
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))["vectors"]


def key(hex_key: str) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(bytes.fromhex(hex_key))


def handshakes(vector: dict[str, Any]) -> tuple[HandshakeState, HandshakeState]:
    initiator = HandshakeState(
        vector["protocol_name"],
        initiator=True,
        prologue=bytes.fromhex(vector["init_prologue"]),
        s=key(vector["init_static"]),
        e=key(vector["init_ephemeral"]),
    )
    responder = HandshakeState(
        vector["protocol_name"],
        initiator=False,
        prologue=bytes.fromhex(vector["resp_prologue"]),
        s=key(vector["resp_static"]),
        e=key(vector["resp_ephemeral"]),
    )
    return initiator, responder


def test_the_vectors_are_the_published_ones() -> None:
    assert hashlib.sha256(VECTORS_FILE.read_bytes()).hexdigest() == VECTORS_SHA256


def test_all_four_cipher_and_hash_combinations_are_covered() -> None:
    assert sorted(v["protocol_name"] for v in VECTORS) == [
        "Noise_XX_25519_AESGCM_BLAKE2b",
        "Noise_XX_25519_AESGCM_SHA256",
        "Noise_XX_25519_ChaChaPoly_BLAKE2b",
        "Noise_XX_25519_ChaChaPoly_SHA256",
    ]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["protocol_name"] for v in VECTORS])
def test_vector(vector: dict[str, Any]) -> None:
    initiator, responder = handshakes(vector)
    messages = vector["messages"]
    assert len(messages) > 3  # the vectors include transport messages
    # Cacophony keeps alternating after the handshake: even-numbered messages go
    # initiator -> responder, odd-numbered ones responder -> initiator.
    for index, message in enumerate(messages[:3]):
        writer, reader = (initiator, responder) if index % 2 == 0 else (responder, initiator)
        payload = bytes.fromhex(message["payload"])
        ciphertext = writer.write_message(payload)
        assert ciphertext.hex() == message["ciphertext"], f"handshake message {index}"
        assert reader.read_message(ciphertext) == payload

    assert initiator.complete and responder.complete
    assert initiator.handshake_hash.hex() == vector["handshake_hash"]
    assert responder.handshake_hash.hex() == vector["handshake_hash"]
    assert initiator.rs == public_bytes(key(vector["resp_static"]))
    assert responder.rs == public_bytes(key(vector["init_static"]))

    i_send, i_recv = initiator.split()
    r_send, r_recv = responder.split()
    for index, message in enumerate(messages[3:], start=3):
        send, recv = (i_send, r_recv) if index % 2 == 0 else (r_send, i_recv)
        payload = bytes.fromhex(message["payload"])
        ciphertext = send.encrypt_with_ad(b"", payload)
        assert ciphertext.hex() == message["ciphertext"], f"transport message {index}"
        assert recv.decrypt_with_ad(b"", ciphertext) == payload


def fresh_pair(
    protocol: str = PROTOCOL,
) -> tuple[HandshakeState, HandshakeState]:
    return (
        HandshakeState(protocol, initiator=True, prologue=b"p", s=X25519PrivateKey.generate()),
        HandshakeState(protocol, initiator=False, prologue=b"p", s=X25519PrivateKey.generate()),
    )


def test_random_keys_agree_and_transport_works_both_ways() -> None:
    i, r = fresh_pair()
    r.read_message(i.write_message(b""))
    assert i.read_message(r.write_message(b"from r")) == b"from r"
    assert r.read_message(i.write_message(b"from i")) == b"from i"
    assert i.handshake_hash == r.handshake_hash
    i_send, i_recv = i.split()
    r_send, r_recv = r.split()
    assert r_recv.decrypt_with_ad(b"", i_send.encrypt_with_ad(b"", b"ping")) == b"ping"
    assert i_recv.decrypt_with_ad(b"", r_send.encrypt_with_ad(b"", b"pong")) == b"pong"


def test_different_prologues_fail() -> None:
    i = HandshakeState(PROTOCOL, initiator=True, prologue=b"a", s=X25519PrivateKey.generate())
    r = HandshakeState(PROTOCOL, initiator=False, prologue=b"b", s=X25519PrivateKey.generate())
    r.read_message(i.write_message(b""))
    with pytest.raises(ProtocolError, match=r"^message authentication failed$"):
        i.read_message(r.write_message(b""))


@pytest.mark.parametrize("position", [0, 31, 32, 60, 79, 80, -1])
def test_tampered_message_2_fails(position: int) -> None:
    i, r = fresh_pair()
    r.read_message(i.write_message(b""))
    message = bytearray(r.write_message(b"payload"))
    message[position] ^= 0x01
    with pytest.raises(ProtocolError):
        i.read_message(bytes(message))


@pytest.mark.parametrize("length", [0, 31, 32 + 47, 32 + 48 + 15])
def test_short_message_2_fails(length: int) -> None:
    i, r = fresh_pair()
    r.read_message(i.write_message(b""))
    with pytest.raises(ProtocolError, match=r"^handshake message too short$"):
        i.read_message(r.write_message(b"")[:length])


def test_short_message_1_fails() -> None:
    _, r = fresh_pair()
    with pytest.raises(ProtocolError, match=r"^handshake message too short$"):
        r.read_message(bytes(31))


def test_low_order_ephemeral_key_is_refused() -> None:
    _, r = fresh_pair()
    r.read_message(bytes(32))  # message 1 is only hashed; the point is used in message 2
    with pytest.raises(ProtocolError, match=r"^invalid Diffie-Hellman public key$"):
        r.write_message(b"")


def test_reading_out_of_turn_is_a_protocol_error() -> None:
    i, _ = fresh_pair()
    with pytest.raises(ProtocolError, match=r"^unexpected handshake message$"):
        i.read_message(bytes(32))


def test_writing_out_of_turn_is_a_local_error() -> None:
    _, r = fresh_pair()
    with pytest.raises(RuntimeError, match=r"^not this side's turn to write a handshake message$"):
        r.write_message(b"")


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        (
            "Noise_NN_25519_AESGCM_SHA256",
            "^unsupported Noise protocol 'Noise_NN_25519_AESGCM_SHA256'$",
        ),
        ("Noise_XX_448_AESGCM_SHA256", "^unsupported Noise protocol 'Noise_XX_448_AESGCM_SHA256'$"),
        ("Noise_XX_25519_AESGCM_SHA512", "^unsupported Noise hash 'SHA512'$"),
        ("Noise_XX_25519_AES_SHA256", "^unsupported Noise cipher 'AES'$"),
    ],
)
def test_unsupported_protocols_are_refused(name: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        HandshakeState(name, initiator=True, prologue=b"", s=X25519PrivateKey.generate())


EXHAUSTED = r"^nonce space exhausted; the session must end$"
NO_KEY_OR_EXHAUSTED = r"^no key, or nonce space exhausted; the session must end$"


@pytest.mark.parametrize("cipher", ["AESGCM", "ChaChaPoly"])
def test_nonce_exhaustion_is_refused(cipher: str) -> None:
    send = CipherState(cipher, bytes(32))
    recv = CipherState(cipher, bytes(32))
    send.n = recv.n = MAX_NONCE - 1
    ciphertext = send.encrypt_with_ad(b"", b"last")
    assert recv.decrypt_with_ad(b"", ciphertext) == b"last"
    with pytest.raises(ProtocolError, match=EXHAUSTED):
        send.encrypt_with_ad(b"", b"one too many")
    with pytest.raises(ProtocolError, match=EXHAUSTED):
        recv.decrypt_with_ad(b"", ciphertext)
    # The transport shortcuts (empty associated data) refuse it too.
    with pytest.raises(ProtocolError, match=NO_KEY_OR_EXHAUSTED):
        send.encrypt(b"one too many")
    with pytest.raises(ProtocolError, match=NO_KEY_OR_EXHAUSTED):
        recv.decrypt(ciphertext)


def test_transport_shortcuts_equal_empty_associated_data() -> None:
    a, b = CipherState("AESGCM", bytes(32)), CipherState("AESGCM", bytes(32))
    sealed = a.encrypt(b"frame")
    assert sealed == b.encrypt_with_ad(b"", b"frame")
    c = CipherState("AESGCM", bytes(32))
    assert c.decrypt(sealed) == b"frame" and c.n == 1
    with pytest.raises(ProtocolError, match=r"^message authentication failed$"):
        c.decrypt(sealed)  # the same frame again: a replay


def test_failed_decryption_does_not_advance_the_counter() -> None:
    send = CipherState("AESGCM", bytes(32))
    recv = CipherState("AESGCM", bytes(32))
    good = send.encrypt_with_ad(b"", b"hello")
    with pytest.raises(ProtocolError, match=r"^message authentication failed$"):
        recv.decrypt_with_ad(b"", good[:-1] + bytes([good[-1] ^ 1]))
    assert recv.n == 0
    assert recv.decrypt_with_ad(b"", good) == b"hello"


@pytest.mark.parametrize(
    ("cipher", "nonce_bytes"),
    [("AESGCM", bytes(11) + b"\x01"), ("ChaChaPoly", bytes(4) + b"\x01" + bytes(7))],
)
def test_nonce_layout(cipher: str, nonce_bytes: bytes) -> None:
    # Counter 1: big-endian for AESGCM, little-endian for ChaChaPoly, after 4 zero bytes.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

    k = bytes(range(32))
    state = CipherState(cipher, k)
    state.n = 1
    raw = (AESGCM if cipher == "AESGCM" else ChaCha20Poly1305)(k)
    assert state.encrypt_with_ad(b"ad", b"text") == raw.encrypt(nonce_bytes, b"text", b"ad")


def test_rekey_changes_the_key_and_keeps_the_counter() -> None:
    a = CipherState("AESGCM", bytes(32))
    b = CipherState("AESGCM", bytes(32))
    a.n = b.n = 5
    a.rekey()
    b.rekey()
    assert a.n == 5
    assert b.decrypt_with_ad(b"", a.encrypt_with_ad(b"", b"x")) == b"x"
    plain = CipherState("AESGCM", bytes(32))
    plain.n = 6
    assert plain.encrypt_with_ad(b"", b"x") != a.encrypt_with_ad(b"", b"x")


def test_rekey_derives_the_key_the_specification_gives() -> None:
    """REKEY(k) = ENCRYPT(k, maxnonce, zerolen, zeros)[:32], the counter kept (Noise 11.3)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    k = bytes(range(32))
    state = CipherState("AESGCM", k)
    state.n = 6
    state.rekey()
    rekeyed = AESGCM(k).encrypt(b"\x00" * 4 + b"\xff" * 8, bytes(32), b"")[:32]
    nonce_6 = bytes(11) + b"\x06"
    assert state.encrypt_with_ad(b"", b"x") == AESGCM(rekeyed).encrypt(nonce_6, b"x", b"")


def test_rekey_without_a_key_is_a_local_error() -> None:
    with pytest.raises(RuntimeError, match=r"^rekey without a key$"):
        CipherState("AESGCM").rekey()


def test_the_transport_shortcuts_need_a_key() -> None:
    state = CipherState("AESGCM")
    with pytest.raises(ProtocolError, match=NO_KEY_OR_EXHAUSTED):
        state.encrypt(b"x")
    with pytest.raises(ProtocolError, match=NO_KEY_OR_EXHAUSTED):
        state.decrypt(bytes(17))


def test_splitting_before_the_handshake_is_complete_is_a_local_error() -> None:
    i, _ = fresh_pair()
    with pytest.raises(RuntimeError, match=r"^handshake not complete$"):
        i.split()


def test_a_handshake_message_may_be_exactly_the_noise_maximum() -> None:
    """65535 bytes: message 1 is the ephemeral key (32 bytes) and a clear payload."""
    i, r = fresh_pair()
    with pytest.raises(ValueError, match=r"^handshake payload too large for one Noise message$"):
        i.write_message(bytes(MAX_MESSAGE_LEN - DHLEN + 1))
    i, r = fresh_pair()
    longest = i.write_message(bytes(MAX_MESSAGE_LEN - DHLEN))
    assert len(longest) == MAX_MESSAGE_LEN
    assert r.read_message(longest) == bytes(MAX_MESSAGE_LEN - DHLEN)
    _, r = fresh_pair()
    with pytest.raises(ProtocolError, match=r"^handshake message too long$"):
        r.read_message(longest + b"\x00")
