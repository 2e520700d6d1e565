from __future__ import annotations

import base64
import hashlib
import logging
import multiprocessing
import os
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from crypto_utils import (
    FINGERPRINT_CHARS,
    Identity,
    KeyManager,
    Sealer,
    fingerprint_of,
    format_fingerprint,
    is_fingerprint,
    load_public_key,
    read_passphrase,
    short_id,
    verify_signature,
)
from peerchat.errors import KeyFileError, ProtocolError, StorageError

PASS = b"correct horse battery staple"


@pytest.fixture(scope="module")
def ident() -> Identity:
    return Identity.generate(2048)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def der_of(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write_private(
    path: Path,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
    )
    path.chmod(0o600)


def flip_modulus_char(pem: bytes) -> bytes:
    """Change one base64 character inside the modulus (line 3 of a PKCS#8 RSA PEM)."""
    lines = pem.split(b"\n")
    line = lines[3]
    lines[3] = line[:10] + (b"B" if line[10:11] == b"A" else b"A") + line[11:]
    return b"\n".join(lines)


# --------------------------------------------------------------------------- fingerprints


def test_fingerprint_is_base32_of_sha256_of_spki(ident: Identity) -> None:
    expected = base64.b32encode(hashlib.sha256(ident.public_der).digest()).decode().rstrip("=")
    fp = fingerprint_of(ident.public_der)
    assert fp == expected == ident.fingerprint
    assert len(fp) == FINGERPRINT_CHARS == 52
    assert set(fp) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    # A known vector: SHA-256 of nothing.
    assert fingerprint_of(b"") == "4OYMIQUY7QOBJGX36TEJS35ZEQT24QPEMSNZGTFESWMRW6CSXBKQ"


def test_short_and_grouped_forms() -> None:
    fp = fingerprint_of(b"peer")
    assert short_id(fp) == fp[:8]
    grouped = format_fingerprint(fp)
    groups = grouped.split("-")
    assert len(groups) == 13
    assert all(len(g) == 4 for g in groups)
    assert "".join(groups) == fp


def test_is_fingerprint() -> None:
    fp = fingerprint_of(b"x")
    assert is_fingerprint(fp)
    assert not is_fingerprint(fp[:-1])
    assert not is_fingerprint(fp.lower())
    assert not is_fingerprint("1" * 52)  # 0, 1, 8, 9 are not base32


# --------------------------------------------------------------------------- signatures


def test_sign_verify_roundtrip_and_tamper(ident: Identity) -> None:
    sig = ident.sign(b"hello")
    assert verify_signature(ident.public_der, sig, b"hello")
    assert not verify_signature(ident.public_der, sig, b"hellO")
    bad = bytes([sig[0] ^ 1]) + sig[1:]
    assert not verify_signature(ident.public_der, bad, b"hello")
    assert not verify_signature(ident.public_der, b"", b"hello")
    assert not verify_signature(ident.public_der, sig + b"\x00", b"hello")
    other = Identity.generate(2048)
    assert not verify_signature(other.public_der, sig, b"hello")


def test_signature_is_pss_sha256_salt_32(ident: Identity) -> None:
    sig = ident.sign(b"data")
    assert sig != ident.sign(b"data")  # PSS is randomized
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    ident.private_key.public_key().verify(sig, b"data", pss, hashes.SHA256())
    # A PKCS#1 v1.5 signature is not accepted.
    v15 = ident.private_key.sign(b"data", padding.PKCS1v15(), hashes.SHA256())
    assert not verify_signature(ident.public_der, v15, b"data")
    with pytest.raises(InvalidSignature):
        ident.private_key.public_key().verify(
            sig, b"data", padding.PSS(padding.MGF1(hashes.SHA256()), 20), hashes.SHA256()
        )


@pytest.mark.parametrize(
    "der",
    [
        b"",
        b"\x30\x00",
        b"not a key at all",
        der_of(ec.generate_private_key(ec.SECP256R1())),
        der_of(rsa.generate_private_key(65537, 1024)),
    ],
    ids=["empty", "empty-seq", "junk", "ec", "rsa1024"],
)
def test_bad_public_keys_rejected(der: bytes, ident: Identity) -> None:
    with pytest.raises(ProtocolError):
        load_public_key(der)
    assert verify_signature(der, ident.sign(b"x"), b"x") is False


def test_non_canonical_der_rejected(ident: Identity) -> None:
    with pytest.raises(ProtocolError):
        load_public_key(ident.public_der + b"\x00")
    assert load_public_key(ident.public_der).key_size == 2048


# --------------------------------------------------------------------------- sealer


def test_sealer_roundtrip_and_bad_tokens() -> None:
    sealer = Sealer.generate()
    token = sealer.seal(b"secret text")
    assert b"secret text" not in token
    assert sealer.open(token) == b"secret text"
    assert sealer.seal(b"secret text") != token
    with pytest.raises(StorageError):
        sealer.open(token[:-1] + bytes([token[-1] ^ 1]))
    with pytest.raises(StorageError):
        sealer.open(b"garbage")
    with pytest.raises(StorageError):
        Sealer.generate().open(token)


# --------------------------------------------------------------------------- passphrase


def test_read_passphrase_sources(tmp_path: Path) -> None:
    pfile = tmp_path / "pass"
    pfile.write_bytes(b"from file\r\nsecond line\n")
    assert read_passphrase(pfile, {"PEER_CHAT_PASSPHRASE": "from env"}) == b"from file"  # wins
    assert read_passphrase(None, {"PEER_CHAT_PASSPHRASE": "from env"}) == b"from env"
    assert read_passphrase(None, {}) is None
    pfile.write_bytes(b"  spaces kept  \n")
    assert read_passphrase(pfile, {}) == b"  spaces kept  "


def test_read_passphrase_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read passphrase file"):
        read_passphrase(tmp_path / "missing", {})
    empty = tmp_path / "empty"
    empty.write_bytes(b"\n")
    with pytest.raises(KeyFileError, match="is empty"):
        read_passphrase(empty, {})
    with pytest.raises(KeyFileError, match="set but empty"):
        read_passphrase(None, {"PEER_CHAT_PASSPHRASE": ""})


@pytest.mark.parametrize("from_file", [False, True])
def test_the_passphrase_leaves_the_environment_once_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, from_file: bool
) -> None:
    monkeypatch.setenv("PEER_CHAT_PASSPHRASE", "from env")
    pfile = tmp_path / "pass"
    pfile.write_bytes(b"from file\n")
    read = read_passphrase(pfile if from_file else None, os.environ)
    assert read == (b"from file" if from_file else b"from env")
    assert "PEER_CHAT_PASSPHRASE" not in os.environ
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.environ.get('PEER_CHAT_PASSPHRASE'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.strip() == "None"  # nor in what a child process inherits


# --------------------------------------------------------------------------- key files


def test_identity_created_0600_and_reloaded_identically(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = KeyManager(data).load_or_create_identity()
    private, public = data / "private.pem", data / "public.pem"
    assert mode_of(private) == 0o600
    assert mode_of(data) == 0o700
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert first.private_key.key_size == 3072
    loaded = serialization.load_pem_public_key(public.read_bytes())
    assert der_of_public(loaded) == first.public_der
    second = KeyManager(data).load_or_create_identity()
    assert second.fingerprint == first.fingerprint
    assert second.public_der == first.public_der
    assert verify_signature(first.public_der, second.sign(b"m"), b"m")


def der_of_public(key: object) -> bytes:
    assert isinstance(key, rsa.RSAPublicKey)
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_key_file_never_exists_with_wider_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key is complete, fsynced and 0600 before it gets its final name, even with umask 0."""
    seen: list[tuple[str, int, int]] = []
    real_link = os.link

    def spy_link(src: str, dst: str | Path) -> None:
        seen.append((Path(dst).name, stat.S_IMODE(os.stat(src).st_mode), os.stat(src).st_size))
        real_link(src, dst)

    monkeypatch.setattr(os, "link", spy_link)
    old = os.umask(0)
    try:
        km = KeyManager(tmp_path)
        km.load_or_create_identity()
        km.load_or_create_sealer()
    finally:
        os.umask(old)
    names = {name for name, _, _ in seen}
    assert names == {"private.pem", "secret.key"}
    assert all(mode == 0o600 and size > 0 for _, mode, size in seen)
    assert mode_of(tmp_path / "private.pem") == 0o600
    assert mode_of(tmp_path / "secret.key") == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "fmt",
    [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL],
    ids=["pkcs8", "pkcs1-pem"],
)
def test_existing_2048_bit_key_loads(tmp_path: Path, fmt: serialization.PrivateFormat) -> None:
    key = rsa.generate_private_key(65537, 2048)
    write_private(tmp_path / "private.pem", key, fmt)
    ident = KeyManager(tmp_path).load_or_create_identity()
    assert ident.private_key.key_size == 2048
    assert ident.public_der == der_of(key)
    assert (tmp_path / "public.pem").exists()


def test_weak_or_non_rsa_private_key_refused(tmp_path: Path) -> None:
    write_private(tmp_path / "private.pem", rsa.generate_private_key(65537, 1024))
    with pytest.raises(KeyFileError, match="1024 bits"):
        KeyManager(tmp_path).load_or_create_identity()
    write_private(tmp_path / "private.pem", ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(KeyFileError, match="non-RSA"):
        KeyManager(tmp_path).load_or_create_identity()


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b"garbage\n",
        lambda b: b[: len(b) // 2],
        lambda b: flip_modulus_char(b),
        lambda b: b"",
    ],
    ids=["garbage", "truncated", "bitflips", "empty"],
)
def test_corrupt_private_pem_gives_clear_error_and_is_kept(tmp_path: Path, damage: object) -> None:
    KeyManager(tmp_path).load_or_create_identity()
    private = tmp_path / "private.pem"
    assert callable(damage)
    corrupt = damage(private.read_bytes())
    private.write_bytes(corrupt)
    public_before = (tmp_path / "public.pem").read_bytes()
    with pytest.raises(KeyFileError) as info:
        KeyManager(tmp_path).load_or_create_identity()
    message = str(info.value)
    assert str(private) in message
    assert "corrupt" in message
    assert "\n" not in message
    assert private.read_bytes() == corrupt  # never overwritten
    assert (tmp_path / "public.pem").read_bytes() == public_before


def test_passphrase_protected_identity(tmp_path: Path) -> None:
    first = KeyManager(tmp_path, PASS).load_or_create_identity()
    pem = (tmp_path / "private.pem").read_bytes()
    kdf_line, block = pem.split(b"\n", 1)
    assert kdf_line.startswith(b"peer_chat-kdf: scrypt ") and b"salt=" in kdf_line
    assert block.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    # The PKCS#8 block is locked with the scrypt-stretched passphrase, not the raw one.
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(block, password=PASS)
    assert KeyManager(tmp_path, PASS).load_or_create_identity().fingerprint == first.fingerprint

    with pytest.raises(KeyFileError, match="wrong passphrase") as info:
        KeyManager(tmp_path, b"not it").load_or_create_identity()
    assert str(tmp_path / "private.pem") in str(info.value)
    with pytest.raises(KeyFileError, match="protected by a passphrase"):
        KeyManager(tmp_path).load_or_create_identity()
    assert (tmp_path / "private.pem").read_bytes() == pem


def test_passphrase_for_unencrypted_key_loads_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = KeyManager(tmp_path).load_or_create_identity()
    pem = (tmp_path / "private.pem").read_bytes()
    with caplog.at_level(logging.WARNING, logger="crypto_utils"):
        again = KeyManager(tmp_path, PASS).load_or_create_identity()
    assert again.fingerprint == first.fingerprint
    assert "not encrypted" in caplog.text
    assert PASS.decode() not in caplog.text
    assert (tmp_path / "private.pem").read_bytes() == pem  # not rewritten behind the user's back


def test_mismatched_or_corrupt_public_pem_is_regenerated(tmp_path: Path) -> None:
    ident = KeyManager(tmp_path).load_or_create_identity()
    public = tmp_path / "public.pem"
    good = public.read_bytes()
    stranger = serialization.load_der_public_key(Identity.generate(2048).public_der)
    wrong = stranger.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for bad in (wrong, b"corrupt"):
        public.write_bytes(bad)
        assert KeyManager(tmp_path).load_or_create_identity().fingerprint == ident.fingerprint
        assert public.read_bytes() == good
        assert (tmp_path / "public.pem.bak").read_bytes() == bad  # kept, not lost
    public.unlink()
    KeyManager(tmp_path).load_or_create_identity()
    assert public.read_bytes() == good


def test_loose_private_key_mode_is_tightened(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    KeyManager(tmp_path).load_or_create_identity()
    (tmp_path / "private.pem").chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="crypto_utils"):
        KeyManager(tmp_path).load_or_create_identity()
    assert mode_of(tmp_path / "private.pem") == 0o600
    assert "0644" in caplog.text


def _create_identity(data_dir: str) -> str:
    return KeyManager(Path(data_dir)).load_or_create_identity().fingerprint


def test_concurrent_first_start_yields_one_identity(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        fingerprints = pool.map(_create_identity, [str(tmp_path)] * 4)
    assert len(set(fingerprints)) == 1
    assert KeyManager(tmp_path).load_or_create_identity().fingerprint == fingerprints[0]


# --------------------------------------------------------------------------- secret.key


def test_plain_secret_key_created_0600_and_reloaded(tmp_path: Path) -> None:
    sealer = KeyManager(tmp_path).load_or_create_sealer()
    secret = tmp_path / "secret.key"
    assert mode_of(secret) == 0o600
    Fernet(secret.read_bytes())  # the plain Fernet key
    token = sealer.seal(b"kept")
    assert KeyManager(tmp_path).load_or_create_sealer().open(token) == b"kept"


def test_secret_key_with_passphrase_roundtrips(tmp_path: Path) -> None:
    sealer = KeyManager(tmp_path, PASS).load_or_create_sealer()
    secret = tmp_path / "secret.key"
    raw = secret.read_bytes()
    assert mode_of(secret) == 0o600
    assert raw.startswith(b"PCSK\x01")
    token = sealer.seal(b"kept")
    assert KeyManager(tmp_path, PASS).load_or_create_sealer().open(token) == b"kept"
    # The Fernet key itself is nowhere in the file.
    with pytest.raises(ValueError):
        Fernet(raw)

    with pytest.raises(KeyFileError, match="wrong passphrase"):
        KeyManager(tmp_path, b"nope").load_or_create_sealer()
    with pytest.raises(KeyFileError, match="protected by a passphrase"):
        KeyManager(tmp_path).load_or_create_sealer()
    assert secret.read_bytes() == raw


@pytest.mark.parametrize(
    ("passphrase", "damage", "expected"),
    [
        (None, lambda b: b"not a fernet key", "corrupt"),
        (None, lambda b: b[:20], "corrupt"),
        (PASS, lambda b: b[:30], "truncated"),
        (PASS, lambda b: b[:-1] + bytes([b[-1] ^ 1]), "wrong passphrase"),
        (PASS, lambda b: b[:4] + b"\x09" + b[5:], "format version 9"),
        (PASS, lambda b: b[:5] + b"\x40" + b[6:], "corrupt"),
    ],
    ids=["plain-garbage", "plain-truncated", "sealed-truncated", "sealed-flip", "version", "kdf"],
)
def test_corrupt_secret_key_gives_clear_error_and_is_kept(
    tmp_path: Path, passphrase: bytes | None, damage: object, expected: str
) -> None:
    KeyManager(tmp_path, passphrase).load_or_create_sealer()
    secret = tmp_path / "secret.key"
    assert callable(damage)
    corrupt = damage(secret.read_bytes())
    secret.write_bytes(corrupt)
    with pytest.raises(KeyFileError, match=expected) as info:
        KeyManager(tmp_path, passphrase).load_or_create_sealer()
    assert str(secret) in str(info.value)
    assert secret.read_bytes() == corrupt


def test_unreadable_key_path_gives_key_file_error(tmp_path: Path) -> None:
    (tmp_path / "private.pem").mkdir()
    with pytest.raises(KeyFileError, match=r"private\.pem is not a regular file"):
        KeyManager(tmp_path).load_or_create_identity()


def test_key_encrypted_elsewhere_with_the_raw_passphrase_loads(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASS),
    )
    (tmp_path / "private.pem").write_bytes(pem)
    (tmp_path / "private.pem").chmod(0o600)
    identity = KeyManager(tmp_path, PASS).load_or_create_identity()
    assert identity.public_der == key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_history_bodies_sealed_as_fernet_tokens_still_open() -> None:
    key = Fernet.generate_key()
    old_body = Fernet(key).encrypt(b"written by an earlier version")
    assert Sealer(key).open(old_body) == b"written by an earlier version"


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_damaged_sealed_body_is_a_storage_error(damage: str) -> None:
    sealer = Sealer.generate()
    body = bytearray(sealer.seal(b"private words"))
    assert b"private words" not in body
    if damage == "flip":
        body[-1] ^= 1
    elif damage == "truncate":
        del body[20:]
    else:
        body.clear()
    with pytest.raises(StorageError):
        sealer.open(bytes(body))


# --------------------------------------------------------------------------- scrypt cost


def scrypt_key(passphrase: bytes, salt: bytes, log2_n: int) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=salt, length=32, n=1 << log2_n, r=8, p=1).derive(passphrase)


def test_new_files_use_scrypt_n_2_17(tmp_path: Path) -> None:
    manager = KeyManager(tmp_path, PASS)
    manager.load_or_create_identity()
    manager.load_or_create_sealer()
    assert (tmp_path / "secret.key").read_bytes()[5] == 17  # log2(n) in the sealed header
    first_line = (tmp_path / "private.pem").read_bytes().split(b"\n", 1)[0]
    assert b" log2n=17 " in first_line


def test_files_written_with_scrypt_n_2_15_still_open(tmp_path: Path) -> None:
    """secret.key and private.pem as earlier versions wrote them, with log2(n) = 15."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    fernet_key = Fernet.generate_key()
    salt, nonce = os.urandom(16), os.urandom(12)
    header = struct.pack(">4sBBBB16s12s", b"PCSK", 1, 15, 8, 1, salt, nonce)
    sealed = AESGCM(scrypt_key(PASS, salt, 15)).encrypt(nonce, fernet_key, header)
    (tmp_path / "secret.key").write_bytes(header + sealed)
    (tmp_path / "secret.key").chmod(0o600)

    key = rsa.generate_private_key(65537, 2048)
    pem_salt = os.urandom(16)
    password = base64.urlsafe_b64encode(scrypt_key(PASS, pem_salt, 15))
    line = f"peer_chat-kdf: scrypt log2n=15 r=8 p=1 salt={pem_salt.hex()}\n".encode()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    (tmp_path / "private.pem").write_bytes(line + pem)
    (tmp_path / "private.pem").chmod(0o600)

    manager = KeyManager(tmp_path, PASS)
    assert manager.load_or_create_identity().public_der == der_of(key)
    sealer = manager.load_or_create_sealer()
    assert sealer.open(Fernet(fernet_key).encrypt(b"old body")) == b"old body"
