"""Identity keys are RSA of 2048 to 4096 bits with e = 65537, wherever one is loaded.

A 3071-bit public exponent makes each signature check about 85 times slower,
and junk signatures are enough to pay that: such a key (or an 8192-bit one)
is refused before any signature is checked, in a hello, in a beacon, and in
private.pem.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from crypto_utils import Identity, KeyManager, load_public_key, verify_signature, verify_with_key
from peerchat.errors import KeyFileError, ProtocolError
from peerchat.protocol import beacon as beacon_module
from peerchat.protocol import channel as channel_module
from peerchat.protocol.beacon import BeaconFilter, BeaconRejected
from peerchat.protocol.channel import Credentials, Role, SecureChannel

NOW = 1_700_000_000.0


def odd(bits: int) -> int:
    """A random odd number of exactly `bits` bits (a modulus need not be prime to be parsed)."""
    return secrets.randbits(bits) | 1 | (1 << (bits - 1))


def public_der(e: int, bits: int) -> bytes:
    key = rsa.RSAPublicNumbers(e, odd(bits)).public_key()
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


HOSTILE_KEYS = {
    "3071-bit exponent": (odd(3071), 3072),
    "exponent 3": (3, 3072),
    "exponent 65539": (65539, 3072),
    "1024 bits": (65537, 1024),
    "8192 bits": (65537, 8192),
    "4104 bits": (65537, 4104),
}


@cache
def identity(bits: int) -> Identity:
    return Identity.generate(bits)


@pytest.mark.parametrize("bits", [2048, 3072, 4096])
def test_keys_of_2048_to_4096_bits_with_exponent_65537_load(bits: int) -> None:
    assert load_public_key(identity(bits).public_der).key_size == bits


@pytest.mark.parametrize(("e", "bits"), HOSTILE_KEYS.values(), ids=HOSTILE_KEYS.keys())
def test_other_public_keys_are_refused(e: int, bits: int) -> None:
    der = public_der(e, bits)
    with pytest.raises(ProtocolError, match="RSA"):
        load_public_key(der)
    assert verify_signature(der, b"\x01" * ((bits + 7) // 8), b"data") is False


def hostile_credentials(der: bytes, bits: int) -> Credentials:
    static = X25519PrivateKey.generate()
    return Credentials(
        name="Mallory",
        listen_port=6666,
        identity_der=der,
        static_private=static,
        static_signature=b"\x01" * ((bits + 7) // 8),  # junk: the attack needs no valid one
    )


HOSTILE_DERS: set[bytes] = set()


def hostile_der(e: int, bits: int) -> bytes:
    der = public_der(e, bits)
    HOSTILE_DERS.add(der)
    return der


@pytest.fixture
def no_rsa_verify(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Fails the test if a hostile key reaches a signature check; records the keys checked."""
    checked: list[bytes] = []

    def guarded(der: bytes, signature: bytes, data: bytes) -> bool:
        checked.append(der)
        if der in HOSTILE_DERS:
            raise AssertionError("a key that must be refused reached the signature check")
        return verify_signature(der, signature, data)

    def guarded_key(key: rsa.RSAPublicKey, signature: bytes, data: bytes) -> bool:
        der = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        checked.append(der)
        if der in HOSTILE_DERS:
            raise AssertionError("a key that must be refused reached the signature check")
        return verify_with_key(key, signature, data)

    for module in (channel_module, beacon_module):
        monkeypatch.setattr(module, "verify_signature", guarded, raising=False)
        monkeypatch.setattr(module, "verify_with_key", guarded_key, raising=False)
    return checked


def exchange(ours: SecureChannel, theirs: SecureChannel) -> None:
    for _ in range(4):
        if data := theirs.data_to_send():
            ours.receive_data(data)
        if data := ours.data_to_send():
            theirs.receive_data(data)


@pytest.mark.parametrize("role", [Role.INITIATOR, Role.RESPONDER])
@pytest.mark.parametrize(("e", "bits"), HOSTILE_KEYS.values(), ids=HOSTILE_KEYS.keys())
def test_a_hello_with_such_a_key_is_refused_before_its_signature_is_checked(
    e: int, bits: int, role: Role, no_rsa_verify: list[bytes]
) -> None:
    honest = Credentials.create(identity(2048), "Alice", 5000)
    hostile = hostile_credentials(hostile_der(e, bits), bits)
    other = Role.RESPONDER if role is Role.INITIATOR else Role.INITIATOR
    ours, theirs = SecureChannel(role, honest), SecureChannel(other, hostile)
    with pytest.raises(ProtocolError, match=r"identity key|signature of"):
        exchange(ours, theirs)
    assert ours.peer is None


def signed_beacon_with(der: bytes, bits: int) -> bytes:
    """A well-formed beacon carrying `der`, with a junk signature of the key's length."""
    real = beacon_module.encode_beacon(identity(2048), "Mallory", 6666, bytes(16), 0, now=NOW)
    name = b"Mallory"
    header = bytearray(real[: beacon_module.HEADER_SIZE])
    sig_len = (bits + 7) // 8
    header[6:8] = len(der).to_bytes(2, "big")
    header[8:10] = sig_len.to_bytes(2, "big")
    return bytes(header) + name + der + b"\x01" * sig_len


@pytest.mark.parametrize(("e", "bits"), HOSTILE_KEYS.values(), ids=HOSTILE_KEYS.keys())
def test_a_beacon_with_such_a_key_is_refused_before_its_signature_is_checked(
    e: int, bits: int, no_rsa_verify: list[bytes]
) -> None:
    data = signed_beacon_with(hostile_der(e, bits), bits)
    verdict = BeaconFilter("me").check(data, "10.0.0.9", NOW)
    assert isinstance(verdict, BeaconRejected)
    assert verdict.reason.startswith(("bad key", "malformed", "too large")), verdict.reason
    assert no_rsa_verify == []


def test_a_beacon_with_such_a_key_costs_no_budget() -> None:
    f = BeaconFilter("me", burst=1, rate=0.001)
    for _ in range(20):
        data = signed_beacon_with(public_der(3, 3072), 3072)
        assert f.check(data, "10.0.0.9", NOW).reason.startswith("bad key")  # type: ignore[union-attr]
    honest = beacon_module.encode_beacon(identity(2048), "Alice", 5000, bytes(16), 0, now=NOW)
    assert not isinstance(f.check(honest, "10.0.0.9", NOW), BeaconRejected)


# -- on disk ---------------------------------------------------------------------------------


def write_pem(path: Path, key: rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def oversized_private_key(bits: int) -> rsa.RSAPrivateKey:
    """An RSA private key of `bits` bits whose numbers are consistent but not prime.

    Generating a real 8192-bit key takes seconds; loading skips the primality
    checks (peer_chat's self-test catches a broken key instead), so the size
    check alone must refuse it.
    """
    p, q = odd(bits // 2), odd(bits // 2)
    n = p * q
    d = odd(bits - 8)
    public = rsa.RSAPublicNumbers(65537, n)
    numbers = rsa.RSAPrivateNumbers(p, q, d, odd(bits // 2 - 8), odd(bits // 2 - 8), 1, public)
    return numbers.private_key(unsafe_skip_rsa_key_validation=True)


@pytest.mark.parametrize(
    "make",
    [
        lambda: rsa.generate_private_key(3, 2048),
        lambda: oversized_private_key(8192),
        lambda: oversized_private_key(4608),
    ],
    ids=["exponent 3", "8192 bits", "4608 bits"],
)
def test_private_pem_with_such_a_key_is_refused(
    tmp_path: Path, make: Callable[[], rsa.RSAPrivateKey]
) -> None:
    key = make()
    write_pem(tmp_path / "private.pem", key)
    with pytest.raises(KeyFileError, match="2048 to 4096 bits with public exponent 65537"):
        KeyManager(tmp_path).load_or_create_identity()
