"""noise.py against the published cacophony vectors, plus its failure modes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from peerchat.errors import ProtocolError
from peerchat.protocol.noise import MAX_NONCE, CipherState, HandshakeState, public_bytes

PROTOCOL = "Noise_XX_25519_AESGCM_SHA256"
# The shared copy the project was given (../shared/vectors from the repository).
SHARED_VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors" / "noise_xx_25519.json"

# The Noise_XX_25519 subset of the cacophony vectors (centromere/cacophony,
# vectors/cacophony.txt), embedded so the suite needs nothing outside the
# repository; test_embedded_vectors_match_the_shared_file guards the copy.
VECTORS: list[dict[str, Any]] = [
    {
        "protocol_name": "Noise_XX_25519_AESGCM_BLAKE2b",
        "init_prologue": "4a6f686e2047616c74",
        "init_static": "e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1",
        "init_ephemeral": "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a",
        "resp_prologue": "4a6f686e2047616c74",
        "resp_static": "4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893",
        "resp_ephemeral": "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b",
        "handshake_hash": (
            "93bc73059d78d6409b76bc43e76ec5b3a6a3612d5a94c1c8f81308d06a8a0495"
            "11f717a87d4d8b4abe0f12ac73d7a9047d0d4fcac80456fbff1349655c454046"
        ),
        "messages": [
            {
                "payload": "4c756477696720766f6e204d69736573",
                "ciphertext": (
                    "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944"
                    "4c756477696720766f6e204d69736573"
                ),
            },
            {
                "payload": "4d757272617920526f746862617264",
                "ciphertext": (
                    "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843"
                    "cf031a86733a890297fda30d4b471d0ceeff97124c67a7b656356862398ad52e"
                    "08b423271d80894ace0fc531c39492823f2cc8f5ebe97a7feffaae500aef491e"
                    "f9815e8e024ac906b3678983549ec8"
                ),
            },
            {
                "payload": "462e20412e20486179656b",
                "ciphertext": (
                    "ee1c5e4fe3060d7014884f9328573c4f2e3c5593c3ef574b418e8bb397792a77"
                    "db4cc497ce5db0c79d29afbbb78a3059d289413105384ef2738071c015c39467"
                    "f6e9b61eb3e2f1db47d5f6"
                ),
            },
            {
                "payload": "4361726c204d656e676572",
                "ciphertext": "7ab9b6ee246550448f838ec94ab1c3cb93e7d475dc8aa7434e6462",
            },
            {
                "payload": "4a65616e2d426170746973746520536179",
                "ciphertext": (
                    "3d741aa91dff33adf4758746ddbf2b6afef8b64768b1d589e6bd999f7e7c7e4287"
                ),
            },
            {
                "payload": "457567656e2042f6686d20766f6e2042617765726b",
                "ciphertext": (
                    "6645a432705ba19de0dedaf6c9f2c4ecfa2447d48eac868bffd3ae8d899d6656a0a00c5699"
                ),
            },
        ],
    },
    {
        "protocol_name": "Noise_XX_25519_AESGCM_SHA256",
        "init_prologue": "4a6f686e2047616c74",
        "init_static": "e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1",
        "init_ephemeral": "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a",
        "resp_prologue": "4a6f686e2047616c74",
        "resp_static": "4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893",
        "resp_ephemeral": "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b",
        "handshake_hash": "1b7aefb1125762aa21a252890d00af54519638b76437444538f9a52f21e2e0dc",
        "messages": [
            {
                "payload": "4c756477696720766f6e204d69736573",
                "ciphertext": (
                    "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944"
                    "4c756477696720766f6e204d69736573"
                ),
            },
            {
                "payload": "4d757272617920526f746862617264",
                "ciphertext": (
                    "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843"
                    "757117acceb05bd7a45733bc22015c97a9d0cbaf41b80446d5988ff5127235d7"
                    "6b79eade70f473d6a4ef521fdcbeda5340d01e028ba793fc059f2724a83af05f"
                    "12dda0448a7621a926b379a92477fd"
                ),
            },
            {
                "payload": "462e20412e20486179656b",
                "ciphertext": (
                    "c90f1cf77eba4e50edb038991565e36c9758943a989229b6051244dc4fbecb69"
                    "46744b401af2ee1a5881b65fbb87fd07cb6a328ececc9ce6ce84c399dc332d4f"
                    "d521fa4bb7f467ce909395"
                ),
            },
            {
                "payload": "4361726c204d656e676572",
                "ciphertext": "bc3fa77f6aca3e8466d7dc6bea10013e88a6a29add5132b461806c",
            },
            {
                "payload": "4a65616e2d426170746973746520536179",
                "ciphertext": (
                    "250b01074cdfe0df2ecf8ccbf1737b15a2ddb5b52fd9a396604e9c793cee3b3bb9"
                ),
            },
            {
                "payload": "457567656e2042f6686d20766f6e2042617765726b",
                "ciphertext": (
                    "449d4d433b3cdc3d02bf6fc881774b9df54366ebcffb9689bb13f14709822cd7ef42bcdb4d"
                ),
            },
        ],
    },
    {
        "protocol_name": "Noise_XX_25519_ChaChaPoly_BLAKE2b",
        "init_prologue": "4a6f686e2047616c74",
        "init_static": "e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1",
        "init_ephemeral": "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a",
        "resp_prologue": "4a6f686e2047616c74",
        "resp_static": "4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893",
        "resp_ephemeral": "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b",
        "handshake_hash": (
            "8cf47d7b3cb5804c0109d48e8bcdbee2cbb65687d8ea2c92994ca361fb86151a"
            "d93627b98936cbb32de56e8abb21def3925011ac3e35db9cbeea73ab9a4392c2"
        ),
        "messages": [
            {
                "payload": "4c756477696720766f6e204d69736573",
                "ciphertext": (
                    "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944"
                    "4c756477696720766f6e204d69736573"
                ),
            },
            {
                "payload": "4d757272617920526f746862617264",
                "ciphertext": (
                    "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843"
                    "0505b6745ce64a5f33f0e8e3b83f11ce8802bca507f4f2d8b564dbe277e19661"
                    "16e132faa2dfd70b8b077b9f94b913df5056ae1319469b824a98d54bbaa82c32"
                    "5595587064f978c4b6d104f7596e6f"
                ),
            },
            {
                "payload": "462e20412e20486179656b",
                "ciphertext": (
                    "99579e1c1ee15e422a57ddd6b16d37087b17558e8369c18991b4b2ca3a824abf"
                    "904cdcf5458b5431a75af034ca9e9b982de039eaaf156775e2d580cd4e5ebae8"
                    "9c3f8cb2594b556d8a8169"
                ),
            },
            {
                "payload": "4361726c204d656e676572",
                "ciphertext": "fc56eea290b3f3a21aac0c70cd5787b5ee99be37d2f4d751329b55",
            },
            {
                "payload": "4a65616e2d426170746973746520536179",
                "ciphertext": (
                    "bb31c9da10d5639a4cdb88a12f5c61de41bbc7df09bf75d94f8184fe4157f5c68f"
                ),
            },
            {
                "payload": "457567656e2042f6686d20766f6e2042617765726b",
                "ciphertext": (
                    "f6199cadb152fb27f82be0a0891ec76a33598ae92a46cab2fb5a8ed5bf48b7f267f8370af7"
                ),
            },
        ],
    },
    {
        "protocol_name": "Noise_XX_25519_ChaChaPoly_SHA256",
        "init_prologue": "4a6f686e2047616c74",
        "init_static": "e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1",
        "init_ephemeral": "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a",
        "resp_prologue": "4a6f686e2047616c74",
        "resp_static": "4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893",
        "resp_ephemeral": "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b",
        "handshake_hash": "c8e5f64e846193be2a834104c2a009868d6c9f3bd3c186299888b488b2f1f58e",
        "messages": [
            {
                "payload": "4c756477696720766f6e204d69736573",
                "ciphertext": (
                    "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944"
                    "4c756477696720766f6e204d69736573"
                ),
            },
            {
                "payload": "4d757272617920526f746862617264",
                "ciphertext": (
                    "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843"
                    "81cbad1f276e038c48378ffce2b65285e08d6b68aaa3629a5a8639392490e5b9"
                    "bd5269c2f1e4f488ed8831161f19b7815528f8982ffe09be9b5c412f8a0db50f"
                    "8814c7194e83f23dbd8d162c9326ad"
                ),
            },
            {
                "payload": "462e20412e20486179656b",
                "ciphertext": (
                    "c7195ffacac1307ff99046f219750fc47693e23c3cb08b89c2af808b444850a8"
                    "0ae475b9df0f169ae80a89be0865b57f58c9fea0d4ec82a286427402f113e4b6"
                    "ae769a1d95941d49b25030"
                ),
            },
            {
                "payload": "4361726c204d656e676572",
                "ciphertext": "96763ed773f8e47bb3712f0e29b3060ffc956ffc146cee53d5e1df",
            },
            {
                "payload": "4a65616e2d426170746973746520536179",
                "ciphertext": (
                    "3e40f15f6f3a46ae446b253bf8b1d9ffb6ed9b174d272328ff91a7e2e5c79c07f5"
                ),
            },
            {
                "payload": "457567656e2042f6686d20766f6e2042617765726b",
                "ciphertext": (
                    "eb3f3515110702e047a6c9da4478b6ead94873c11c0f2d710ddb3f09fce024b3a58502ae3f"
                ),
            },
        ],
    },
]


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


def test_embedded_vectors_match_the_shared_file() -> None:
    if not SHARED_VECTORS.exists():
        pytest.skip(f"{SHARED_VECTORS} is not present")
    shared = json.loads(SHARED_VECTORS.read_text())["vectors"]
    assert [{k: v[k] for k in VECTORS[0]} for v in shared] == VECTORS


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
    with pytest.raises(ProtocolError, match="authentication failed"):
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
    with pytest.raises(ProtocolError, match="too short"):
        i.read_message(r.write_message(b"")[:length])


def test_short_message_1_fails() -> None:
    _, r = fresh_pair()
    with pytest.raises(ProtocolError, match="too short"):
        r.read_message(bytes(31))


def test_low_order_ephemeral_key_is_refused() -> None:
    _, r = fresh_pair()
    r.read_message(bytes(32))  # message 1 is only hashed; the point is used in message 2
    with pytest.raises(ProtocolError, match="Diffie-Hellman"):
        r.write_message(b"")


def test_reading_out_of_turn_is_a_protocol_error() -> None:
    i, _ = fresh_pair()
    with pytest.raises(ProtocolError, match="unexpected"):
        i.read_message(bytes(32))


def test_writing_out_of_turn_is_a_local_error() -> None:
    _, r = fresh_pair()
    with pytest.raises(RuntimeError):
        r.write_message(b"")


@pytest.mark.parametrize(
    "name",
    ["Noise_NN_25519_AESGCM_SHA256", "Noise_XX_448_AESGCM_SHA256", "Noise_XX_25519_AESGCM_SHA512"],
)
def test_unsupported_protocols_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        HandshakeState(name, initiator=True, prologue=b"", s=X25519PrivateKey.generate())


@pytest.mark.parametrize("cipher", ["AESGCM", "ChaChaPoly"])
def test_nonce_exhaustion_is_refused(cipher: str) -> None:
    send = CipherState(cipher, bytes(32))
    recv = CipherState(cipher, bytes(32))
    send.n = recv.n = MAX_NONCE - 1
    ciphertext = send.encrypt_with_ad(b"", b"last")
    assert recv.decrypt_with_ad(b"", ciphertext) == b"last"
    with pytest.raises(ProtocolError, match="exhausted"):
        send.encrypt_with_ad(b"", b"one too many")
    with pytest.raises(ProtocolError, match="exhausted"):
        recv.decrypt_with_ad(b"", ciphertext)
    # The transport shortcuts (empty associated data) refuse it too.
    with pytest.raises(ProtocolError, match="exhausted"):
        send.encrypt(b"one too many")
    with pytest.raises(ProtocolError, match="exhausted"):
        recv.decrypt(ciphertext)


def test_transport_shortcuts_equal_empty_associated_data() -> None:
    a, b = CipherState("AESGCM", bytes(32)), CipherState("AESGCM", bytes(32))
    sealed = a.encrypt(b"frame")
    assert sealed == b.encrypt_with_ad(b"", b"frame")
    c = CipherState("AESGCM", bytes(32))
    assert c.decrypt(sealed) == b"frame" and c.n == 1
    with pytest.raises(ProtocolError, match="authentication"):
        c.decrypt(sealed)  # the same frame again: a replay


def test_failed_decryption_does_not_advance_the_counter() -> None:
    send = CipherState("AESGCM", bytes(32))
    recv = CipherState("AESGCM", bytes(32))
    good = send.encrypt_with_ad(b"", b"hello")
    with pytest.raises(ProtocolError):
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
